"""A real Orthanc PACS for tests (Debian's ``/usr/sbin/Orthanc``), in a folder of its own.

:class:`Orthanc` writes its own configuration (``orthanc.json``: ``DicomAet``,
``DicomPort`` and ``HttpPort`` on free ports of 127.0.0.1, storage and index in
the folder, ``RemoteAccessAllowed`` and ``AuthenticationEnabled`` false, no
plugins), starts Orthanc with ``TCP_NODELAY=1`` (Nagle's 40 ms per C-STORE
otherwise), and waits until its REST API answers and its DICOM port accepts
connections. :meth:`~Orthanc.stop` (SIGTERM), :meth:`~Orthanc.kill` (SIGKILL)
and :meth:`~Orthanc.restart` keep the ports and the storage, so what arrived
before survives a restart.

``dicomweb=True`` loads Orthanc's DICOMweb plugin (``libOrthancDicomWeb.so``) at
``/dicom-web/`` (:attr:`~Orthanc.dicomweb_url`), and ``users`` asks HTTP Basic
credentials of every caller (the harness signs in as the first user). Orthanc 1.10 of
Debian 12 ends with SIGSEGV on the first HTTPS request (``SslEnabled``): a PACS's
DICOMweb over TLS is this Orthanc behind nginx (``tests/tls_front.py``), as Orthanc's
own documentation sets it up.

``worklists=FOLDER`` loads Orthanc's Modality Worklists plugin (``libModalityWorklists.so``)
serving the ``.wl`` files of that folder as a Modality Worklist SCP (C-FIND on the
worklist information model); :func:`write_worklist_file` makes such a file with pydicom.

What arrived is read through the REST API (:meth:`~Orthanc.sop_instance_uids`,
:meth:`~Orthanc.instance_tags`). Every C-STORE that reaches Orthanc is also
counted, stored anew or not: a Lua ``ReceivedInstanceFilter`` prints its SOP
Instance UID to the log (:meth:`~Orthanc.receptions`), so a test can prove that a
document was sent once, not merely stored once (Orthanc keeps one copy of a SOP
Instance UID however often it is sent). ``store_delay`` makes that filter sleep
before each store: a slow PACS, for tests that must catch a sender mid-batch.

Fixture, for a test module to import (the function name ends in ``_fixture`` so
the test argument shadows no imported name)::

    from tests.orthanc_server import orthanc_fixture

    def test_x(orthanc: Orthanc) -> None: ...
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ports import HOST, free_ports

ORTHANC = Path("/usr/sbin/Orthanc")
#: Debian's Modality Worklists plugin of Orthanc
WORKLIST_PLUGIN = Path("/usr/share/orthanc/plugins/libModalityWorklists.so")
#: Debian's DICOMweb plugin of Orthanc (package orthanc-dicomweb)
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
_RECEIVED = re.compile(r"clinibox-received (\S+)")


class Orthanc:
    """One Orthanc process on 127.0.0.1 with its storage in ``folder``.

    Usable as a context manager (started on entry, stopped on exit).
    """

    host = HOST

    def __init__(self, folder: Path, *, ae_title: str = "PACS", check_called_aet: bool = False,
                 store_delay: float = 0.0, extra: dict[str, Any] | None = None,
                 worklists: Path | None = None, dicomweb: bool = False,
                 users: dict[str, str] | None = None,
                 refuse_classes: tuple[str, ...] = ()) -> None:
        """Prepare (not start) an Orthanc; ports are picked now and kept across restarts.
        ``worklists``: a folder of ``.wl`` files served by the Modality Worklists plugin;
        ``dicomweb``: its DICOMweb plugin; ``users``: HTTP Basic users and passwords;
        ``refuse_classes``: SOP Class UIDs its filter refuses to store (counted all the
        same)."""
        self.refuse_classes = tuple(refuse_classes)
        self.worklists = None if worklists is None else Path(worklists)
        self.dicomweb = dicomweb
        self.users = dict(users or {})
        self.folder = Path(folder)
        self.ae_title = ae_title
        self.check_called_aet = check_called_aet
        self.store_delay = store_delay
        self.extra = dict(extra or {})
        self.dicom_port, self.http_port = free_ports(2)
        self.conf_path = self.folder / "orthanc.json"
        self.lua_path = self.folder / "received.lua"
        self.log_path = self.folder / "orthanc.log"
        self.storage = self.folder / "storage"
        self.process: subprocess.Popen[bytes] | None = None

    # -- configuration -------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The REST API's address."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb service's address (with ``dicomweb``)."""
        return f"{self.base_url}/dicom-web"

    def _plugins(self) -> list[str]:
        return ([str(WORKLIST_PLUGIN)] if self.worklists is not None else []) + \
            ([str(DICOMWEB_PLUGIN)] if self.dicomweb else [])


    def config(self) -> dict[str, Any]:
        """The configuration Orthanc runs with."""
        return {
            "Name": "clinibox-test-pacs",
            "StorageDirectory": str(self.storage),
            "IndexDirectory": str(self.storage),
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": self.check_called_aet,
            "Plugins": self._plugins(),
            "LuaScripts": [str(self.lua_path)],
            "StableAge": 1,
            **({"Worklists": {"Enable": True, "Database": str(self.worklists)}}
               if self.worklists is not None else {}),
            **({"DicomWeb": {"Enable": True, "Root": "/dicom-web/"}} if self.dicomweb else {}),
            **({"AuthenticationEnabled": True, "RegisteredUsers": self.users}
               if self.users else {}),
            **self.extra,
        }

    def lua_text(self) -> str:
        """The Lua filter that logs every C-STORE (and sleeps ``store_delay`` first)."""
        sleep = f'  os.execute("sleep {self.store_delay:.3f}")\n' if self.store_delay else ""
        refuse = "".join(f'  if dicom.SOPClassUID == "{uid}" then return false end\n'
                         for uid in self.refuse_classes)
        return ("function ReceivedInstanceFilter(dicom, origin, info)\n"
                f"{sleep}"
                '  print("clinibox-received " .. dicom.SOPInstanceUID)\n'
                f"{refuse}"
                "  return true\n"
                "end\n")

    def write_config(self) -> None:
        """Write orthanc.json and the Lua filter into ``folder``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        self.lua_path.write_text(self.lua_text())
        self.conf_path.write_text(json.dumps(self.config(), indent=2))

    # -- the process ---------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether the Orthanc process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 60) -> Orthanc:
        """Start Orthanc and wait until its REST API answers and its DICOM port listens."""
        if not ORTHANC.exists():
            pytest.fail(f"{ORTHANC} not found: install orthanc (apt-get install orthanc), "
                        "as .ci/run does")
        if self.running:
            raise RuntimeError("Orthanc is already running")
        self.write_config()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(ORTHANC), str(self.conf_path)], stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
                env={**os.environ, "TCP_NODELAY": "1"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n"
                                   f"{self.log_tail()}")
            if self._answers():
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"Orthanc was not ready within {timeout} s:\n{self.log_tail()}")

    def _answers(self) -> bool:
        try:
            system = self.get("/system", timeout=2)
            with socket.create_connection((self.host, self.dicom_port), timeout=0.5):
                pass
        except (OSError, ValueError):
            return False
        return system.get("DicomPort") == self.dicom_port

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM and wait for Orthanc to end."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RuntimeError(f"Orthanc ignored SIGTERM for {timeout} s:\n"
                                   f"{self.log_tail()}") from None
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL, as a power cut."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self, timeout: float = 60) -> Orthanc:
        """Stop cleanly and start again on the same ports, with the same storage."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> Orthanc:
        """Start Orthanc."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop Orthanc (SIGKILL if it does not end)."""
        try:
            self.stop()
        finally:
            self.kill()

    # -- what arrived ------------------------------------------------------------
    def _open(self, request: urllib.request.Request, timeout: float) -> Any:
        """Send ``request`` to the REST API (signed in as the first user), its answer
        parsed as JSON."""
        if self.users:
            user, password = next(iter(self.users.items()))
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read())

    def get(self, path: str, timeout: float = 10) -> Any:
        """GET ``path`` from the REST API, parsed as JSON."""
        return self._open(urllib.request.Request(f"{self.base_url}{path}"), timeout)

    def post(self, path: str, body: Any, timeout: float = 10) -> Any:
        """POST ``body`` as JSON to ``path`` of the REST API, parsed as JSON."""
        return self._open(urllib.request.Request(
            f"{self.base_url}{path}", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}, method="POST"), timeout)

    def instances(self) -> list[str]:
        """Orthanc's ids of every instance it holds."""
        return list(self.get("/instances"))

    def sop_instance_uids(self) -> list[str]:
        """The SOP Instance UID of every instance Orthanc holds (``/tools/find``)."""
        found = self.post("/tools/find", {"Level": "Instance", "Query": {}, "Expand": True})
        return [item["MainDicomTags"]["SOPInstanceUID"] for item in found]

    def find(self, sop_instance_uid: str) -> list[str]:
        """Orthanc's ids of the instances with this SOP Instance UID."""
        return list(self.post("/tools/find", {"Level": "Instance",
                                              "Query": {"SOPInstanceUID": sop_instance_uid}}))

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        """An instance's tags by keyword (``/instances/<id>/simplified-tags``)."""
        return dict(self.get(f"/instances/{instance_id}/simplified-tags"))

    def receptions(self) -> Counter[str]:
        """How many C-STOREs of each SOP Instance UID reached Orthanc (across restarts)."""
        if not self.log_path.exists():
            return Counter()
        return Counter(_RECEIVED.findall(self.log_path.read_text(errors="replace")))

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of Orthanc's log."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def write_worklist_file(folder: Path, name: str, *, patient_name: str, patient_id: str,
                        accession: str, modality: str = "US", day: str = "",
                        time_of_day: str = "0930", station: str = "CLINIBOX",
                        birth_date: str = "19800101", sex: str = "F", step_id: str = "",
                        description: str = "Thyroid ultrasound") -> Path:
    """One ``.wl`` file (a DICOM Part 10 file, as Orthanc's worklist plugin reads them): a
    patient, an order (accession number) and its scheduled procedure step on ``day``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName, ds.PatientID = patient_name, patient_id
    ds.PatientBirthDate, ds.PatientSex = birth_date, sex
    ds.AccessionNumber = accession
    ds.RequestedProcedureID = f"RP{accession}"[:16]
    ds.RequestedProcedureDescription = description
    ds.StudyInstanceUID = generate_uid()
    step = Dataset()
    step.Modality = modality
    step.ScheduledStationAETitle = station
    step.ScheduledProcedureStepStartDate = day or time.strftime("%Y%m%d")
    step.ScheduledProcedureStepStartTime = time_of_day
    step.ScheduledProcedureStepID = step_id or f"SPS{accession}"[:16]
    step.ScheduledProcedureStepDescription = description
    ds.ScheduledProcedureStepSequence = [step]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.31"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.wl"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(name="orthanc")
def orthanc_fixture(tmp_path: Path) -> Iterator[Orthanc]:
    """A started Orthanc (AE title ``PACS``) in ``tmp_path / "orthanc"``, stopped after."""
    with Orthanc(tmp_path / "orthanc") as server:
        yield server


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate`` until true, or fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
