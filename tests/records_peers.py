"""The clinic's information systems for tests: an MLLP listener (hl7apy's own ``MLLPServer``,
which parses what it is sent) and a FHIR endpoint that reads each transaction Bundle with the
FHIR models (fhir.resources, R4B) and answers as a FHIR server does.

No FHIR server (HAPI and the like need a JVM and a download) runs here: the endpoint is
written for the tests, but what it accepts is what the FHIR models accept, and what it
answers is a ``transaction-response`` Bundle the models accept too.
"""

from __future__ import annotations

import http.server
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from hl7apy.core import Message
from hl7apy.mllp import AbstractHandler, MLLPServer
from hl7apy.parser import parse_message


def ack(message: str, code: str, text: str = "", control_id: str | None = None) -> str:
    """An MLLP-framed ACK of ``message`` with MSA-1 ``code`` (hl7apy)."""
    received = parse_message(message, find_groups=False)
    answer = Message("ACK", version="2.5.1")
    answer.msh.msh_3 = "HIS"
    answer.msh.msh_9 = "ACK^R01^ACK"
    answer.msh.msh_10 = "HIS-1"
    answer.msh.msh_11 = "P"
    answer.msa.msa_1 = code
    answer.msa.msa_2 = control_id if control_id is not None else received.msh.msh_10.value
    if text:
        answer.msa.msa_3 = text
    return "\x0b" + answer.to_er7() + "\x1c\r"


@dataclass
class MllpListener:
    """hl7apy's MLLP server on a free port, keeping each ORU^R01 it gets (the ER7 text),
    answering ``code`` (AA, AE, AR), ``"wrong_id"`` (an AA for another message) or
    ``"close"`` (no answer at all)."""

    code: str = "AA"
    received: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        listener = self

        class Handler(AbstractHandler):
            def reply(self) -> str:
                listener.received.append(self.incoming_message)
                if listener.code == "close":
                    raise ConnectionAbortedError("answer nothing")
                if listener.code == "wrong_id":
                    return ack(self.incoming_message, "AA", control_id="SOMEONE-ELSE")
                return ack(self.incoming_message, listener.code,
                           "" if listener.code == "AA" else "PID-3 unknown patient")

        self.server = MLLPServer("127.0.0.1", 0, {"ORU^R01^ORU_R01": (Handler,)}, timeout=10)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def messages(self) -> list[Message]:
        """What arrived, parsed again by hl7apy."""
        return [parse_message(text, find_groups=False) for text in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class FhirEndpoint:
    """A FHIR server's transaction endpoint at ``url``: each POSTed Bundle read by the FHIR
    models and kept (``bundles``), answered 200 with a ``transaction-response``; or
    ``status`` (401, 422 with an OperationOutcome, 500 …) or ``"unconfirmed"`` (200 with
    nothing said); ``authorizations`` keeps each request's Authorization header."""

    status: int | str = 200
    bundles: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                endpoint.authorizations.append(self.headers.get("Authorization") or "")
                if isinstance(endpoint.status, int) and endpoint.status != 200:
                    self._answer(endpoint.status, {
                        "resourceType": "OperationOutcome", "issue": [{
                            "severity": "error", "code": "processing",
                            "diagnostics": "Patient.identifier unknown here"}]})
                    return
                try:
                    bundle = Bundle.model_validate_json(body)
                except Exception as exc:  # pydantic's ValidationError
                    endpoint.refused.append(str(exc)[:500])
                    self._answer(400, {"resourceType": "OperationOutcome", "issue": [{
                        "severity": "error", "code": "structure", "diagnostics": "invalid"}]})
                    return
                endpoint.bundles.append(json.loads(body))
                if endpoint.status == "unconfirmed":
                    self._answer(200, {"resourceType": "Bundle", "type": "batch-response",
                                       "entry": []})
                    return
                self._answer(200, {"resourceType": "Bundle", "type": "transaction-response",
                                   "entry": [{"response": {"status": "201 Created"}}
                                             for _ in bundle.entry or []]})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/fhir"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def resources(self, kind: str) -> list[dict[str, Any]]:
        """Every resource of ``kind`` in the Bundles received, in order."""
        return [entry["resource"] for bundle in self.bundles for entry in bundle["entry"]
                if entry["resource"]["resourceType"] == kind]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
