"""The result in the clinic's records: a completed study's report queued for each receiver,
sent as HL7 v2 ORU^R01 over MLLP to hl7apy's own MLLP server and as a FHIR transaction to an
endpoint that reads it with the FHIR models; refusals held, outages retried, the hospital's
verdict sent again as a corrected (amended) report.

CT phantoms landed and analysed by the real worker with the bundled demo model (phantom-
trained, not for clinical use), completed by the real study completer.
"""

from __future__ import annotations

import base64
import dataclasses

import numpy as np
import pydicom
import pytest

from clinibox_common import i18n
from clinibox_common.contracts.statuses import RecordState, ReportKind
from firmware_app.dicom_out.study_documents import ModelIdentity
from firmware_app.records import hl7
from firmware_app.records.queue import queue_verdict
from firmware_app.records.sender import RecordsSender
from firmware_app.service.study_completion import StudyCompleter
from firmware_app.settings.box import Config, from_dict
from firmware_app.settings.records import RecordsReceiver
from firmware_app.storage import db, hospital_reviews, records_outbox
from firmware_app.words import wording
from phantoms.dicom import ct_dataset, write_dicom
from phantoms.images import generate
from tests.records_peers import FhirEndpoint, MllpListener
from tests.viewer_state import local_box

PATIENT = {"PatientName": "Wang^Fang=王^芳", "PatientID": "MRN|7^7", "PatientBirthDate": "19800102",
           "PatientSex": "F", "AccessionNumber": "ACC-2026-17"}


@pytest.fixture
def peers():
    listener, endpoint = MllpListener(), FhirEndpoint()
    yield listener, endpoint
    listener.close()
    endpoint.close()


def _config(listener: MllpListener, endpoint: FhirEndpoint, **records) -> Config:
    config = Config()
    config.records = dataclasses.replace(config.records, retry_min_seconds=0.05,
                                         retry_max_seconds=0.1, max_refusals=2,
                                         timeout_seconds=5, sending_facility="QSX-CLINIC",
                                         **records)
    config.records.receivers = [
        RecordsReceiver(name="his", host="127.0.0.1", port=listener.port,
                        receiving_application="HIS", receiving_facility="QSX"),
        RecordsReceiver(name="emr", protocol="fhir", url=endpoint.url)]
    return config


@pytest.fixture
def box(tmp_path, demo_runner, peers):
    config = _config(*peers, language="zh_CN")
    box = local_box(config, tmp_path / "state", demo_runner)
    completer = StudyCompleter(config, ModelIdentity.from_manifest(
        demo_runner.package.manifest), "box-1")
    yield box, completer
    if completer.maker is not None:
        completer.maker.close()
    box.conn.close()


def _land_and_complete(box, completer, folder, study_uid: str, seeds: range) -> None:
    for n in seeds:
        ds = ct_dataset(generate("ct", np.random.default_rng(n), size=256, lesion=True),
                        {"StudyInstanceUID": study_uid, **PATIENT})
        ds.IssuerOfPatientID = "QINGSHAN"
        path = write_dicom(ds, folder / f"slice{n}.dcm")
        box.lander.land(path.read_bytes(), sop_instance_uid=None, source="dicom", origin="T")
    while box.worker.run_once():
        pass
    last = box.conn.execute("SELECT MAX(received_at) FROM instances").fetchone()[0]
    assert completer.tick(now=last + completer.config.studies.stable_seconds + 1) == 1


def _send_all(config: Config) -> dict[str, int]:
    sent = {}
    for receiver in config.records.receivers:
        sender = RecordsSender(config, receiver)
        sent[receiver.name] = sender.send_due(now=10**10)
        sender.conn.close()
    return sent


def _states(box) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in box.conn.execute(
        "SELECT receiver, report_kind, state FROM records_outbox ORDER BY id")]


@pytest.mark.slow
def test_a_completed_study_reaches_hl7_and_fhir_with_the_patient_and_the_page_s_words(
        box, peers, tmp_path):
    box, completer = box
    listener, endpoint = peers
    study = pydicom.uid.generate_uid()
    _land_and_complete(box, completer, tmp_path, study, range(0, 2))
    assert _states(box) == [("his", "result", "pending"), ("emr", "result", "pending")]
    assert _send_all(box.config) == {"his": 1, "emr": 1}
    assert _states(box) == [("his", "result", "sent"), ("emr", "result", "sent")]

    # HL7: hl7apy's listener took it; parsed again, the patient and study are the clinic's
    (message,) = listener.messages()
    msh, pid = message.msh, message.pid
    assert msh.msh_9.to_er7() == "ORU^R01^ORU_R01" and msh.msh_12.value == "2.5.1"
    assert msh.msh_4.value == "QSX-CLINIC" and msh.msh_5.value == "HIS"
    assert msh.msh_18.value == "UNICODE UTF-8"
    assert pid.pid_3.to_er7() == "MRN\\F\\7\\S\\7^^^QINGSHAN^MR"  # escaped: no field added
    names = pid.to_er7().split("|")[5].split("~")
    assert names == ["Wang^Fang^^^^^L^A", "王^芳^^^^^L^I"]
    assert pid.pid_7.value == "19800102" and pid.pid_8.value == "F"
    obr = next(s for s in message.children if s.name == "OBR")
    assert obr.obr_2.value == "ACC-2026-17" and obr.obr_3.to_er7().startswith(study)
    assert obr.obr_25.value == "F"
    observations = [s for s in message.children if s.name == "OBX"]
    by_code = {obx.obx_3.to_er7().split("^")[0]: obx.obx_5.to_er7() for obx in observations}
    page = box.conn.execute("SELECT id FROM studies").fetchone()[0]
    from firmware_app.storage import studies as queries
    found = queries.study(box.conn, page)
    with i18n.use_locale("zh_CN"):
        level, headline = wording.verdict(found["alert"], bool(found["findings"]))
        phantoms = wording.intended_use(wording.KNOWN_INTENDED_USES[0])
    assert by_code["level"] == level
    assert int(by_code["lesions"]) == found["summary"]["lesions"]
    texts = [obx.obx_5.to_er7() for obx in observations if obx.obx_2.value == "TX"]
    assert hl7.escape(headline) in texts  # the study page's headline, in Chinese
    assert any(phantoms in text for text in texts)  # a demonstration model, said so

    # FHIR: a transaction the FHIR models read; the patient is created only if unknown
    (bundle,) = endpoint.bundles
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds[0] == "Patient" and kinds[-1] == "DiagnosticReport"
    patient = bundle["entry"][0]
    assert patient["request"]["ifNoneExist"] == (  # "|" escaped in the value, all encoded
        "identifier=urn:clinibox:issuer:QINGSHAN|MRN%5C%7C7%5E7")
    assert patient["resource"]["name"][1] == {"use": "official", "family": "王", "given": ["芳"]}
    assert patient["resource"]["birthDate"] == "1980-01-02"
    (report,) = endpoint.resources("DiagnosticReport")
    assert report["status"] == "final" and report["language"] == "zh-CN"
    assert {"system": "urn:dicom:uid", "value": f"urn:oid:{study}"} in report["identifier"]
    assert any(i.get("value") == "ACC-2026-17" for i in report["identifier"])
    text = base64.b64decode(report["presentedForm"][0]["data"]).decode()
    assert headline in text and phantoms in text and headline in report["conclusion"]
    levels = [o for o in endpoint.resources("Observation")
              if o["code"]["coding"][0]["code"] == "level"]
    assert levels[0]["valueCodeableConcept"]["coding"][0]["code"] == level
    assert not endpoint.refused


@pytest.mark.slow
def test_the_hospital_s_verdict_goes_again_as_a_correction(box, peers, tmp_path):
    box, completer = box
    listener, endpoint = peers
    study = pydicom.uid.generate_uid()
    _land_and_complete(box, completer, tmp_path, study, range(0, 1))
    _send_all(box.config)
    with db.transaction(box.conn):
        hospital_reviews.add(box.conn, seq=1, study_key=study, study_ref="ref", alert_seq=1,
                             verdict="refer", follow_up_months=None, note="请尽快转诊",
                             reviewed_at=1.8e9, late=False)
        queue_verdict(box.conn, box.config, study, 1, lambda _model: True)
    assert _send_all(box.config) == {"his": 1, "emr": 1}
    assert [s for s in _states(box) if s[1] == ReportKind.VERDICT] == [
        ("his", "verdict", "sent"), ("emr", "verdict", "sent")]
    second = listener.messages()[1]
    obr = next(s for s in second.children if s.name == "OBR")
    assert obr.obr_25.value == "C"
    texts = [s.obx_5.to_er7() for s in second.children if s.name == "OBX"]
    assert "refer" in texts and any("请尽快转诊" in t for t in texts)
    reports = endpoint.resources("DiagnosticReport")
    assert [r["status"] for r in reports] == ["final", "amended"]
    assert "请尽快转诊" in reports[1]["conclusion"]
    # both put by the same identifier: the server replaces the report, never adds one
    assert len({e["request"]["url"] for b in endpoint.bundles for e in b["entry"]
                if e["resource"]["resourceType"] == "DiagnosticReport"}) == 1


@pytest.mark.slow
def test_refusals_are_held_outages_wait_and_one_receiver_never_holds_back_another(
        box, peers, tmp_path):
    box, completer = box
    listener, endpoint = peers
    listener.code, endpoint.status = "AE", 500
    _land_and_complete(box, completer, tmp_path, pydicom.uid.generate_uid(), range(0, 1))
    assert _send_all(box.config) == {"his": 0, "emr": 0}
    assert _send_all(box.config) == {"his": 0, "emr": 0}  # max_refusals = 2
    assert _states(box) == [("his", "result", "held"), ("emr", "result", "pending")]
    held = records_outbox.held_reports(box.conn)
    assert held[0]["last_status"] == "AE" and "unknown patient" in held[0]["last_error"]
    figures = {f["name"]: f for f in records_outbox.receiver_figures(box.conn, ["his", "emr"])}
    assert figures["emr"]["last_error_code"] == "records_failed:server_error:500"
    assert figures["his"]["last_error_code"] == "records_held:2:AE"
    endpoint.status = 200
    assert _send_all(box.config) == {"his": 0, "emr": 1}  # the FHIR server is back
    listener.code = "AA"
    with db.transaction(box.conn):
        assert records_outbox.requeue_held(box.conn, "his") == {"his": 1}
    assert _send_all(box.config) == {"his": 1, "emr": 0}
    assert [s[2] for s in _states(box)] == [RecordState.SENT, RecordState.SENT]


@pytest.mark.parametrize("code,failure", [("close", "lost"), ("wrong_id", "not_ack")])
def test_an_answer_that_is_not_the_acknowledgement_leaves_the_report_waiting(
        tmp_path, code, failure):
    listener = MllpListener(code=code)
    try:
        config = Config()
        config.storage = dataclasses.replace(config.storage, state_dir=str(tmp_path))
        conn = db.connect(config.database_path)
        db.initialise(conn)
        receiver = RecordsReceiver(name="his", host="127.0.0.1", port=listener.port)
        config.records.receivers = [receiver]
        with db.transaction(conn):
            records_outbox.add_report(conn, ["his"], "1.2.3", "result", 1, _content())
        sender = RecordsSender(config, receiver)
        assert sender.send_due(now=10**10) == 0
        assert listener.received  # it was sent, and read by the listener
        (figure,) = records_outbox.receiver_figures(conn, ["his"])
        assert figure["waiting"] == 1 and figure["last_error_code"].startswith(
            f"records_failed:{failure}")
        sender.conn.close()
        conn.close()
    finally:
        listener.close()


def test_a_receiver_that_is_down_is_said_and_tried_again(tmp_path):
    config = Config()
    config.storage = dataclasses.replace(config.storage, state_dir=str(tmp_path))
    conn = db.connect(config.database_path)
    db.initialise(conn)
    closed = MllpListener()
    port = closed.port
    closed.close()
    receiver = RecordsReceiver(name="his", host="127.0.0.1", port=port)
    config.records.receivers = [receiver]
    with db.transaction(conn):
        records_outbox.add_report(conn, ["his"], "1.2.3", "result", 1, _content())
    sender = RecordsSender(config, receiver)
    assert sender.send_due(now=10**10) == 0
    (figure,) = records_outbox.receiver_figures(conn, ["his"])
    assert figure["last_error_code"] == "records_failed:unreachable"
    assert tuple(conn.execute("SELECT attempts, state FROM records_outbox").fetchone()) == (
        1, "pending")
    sender.conn.close()
    conn.close()


def _content(**patient) -> dict:
    return {"format": 1, "kind": "result", "language": "en", "made_at": 1.8e9,
            "study": {"key": "1.2.3", "uid": "1.2.3", "date": "20261128", "time": "101500",
                      "modality": "CT", "description": "", "accession": "", "images": 1},
            "patient": {"name": "Doe^Jane", "id": "P1", "issuer": "", "birth_date": "",
                        "sex": "", **patient},
            "result": {"level": "clear", "headline": "No suspicious area found by the model",
                       "summary": "", "next_step": "", "findings": ["None."], "warnings": [],
                       "lesions": 0, "largest_diameter": None, "units": "", "suspicion": 0.1},
            "models": ["demo@1"], "demo": True, "notice": "assists a doctor", "review": None}


def test_nothing_a_clinic_typed_can_add_a_segment_or_a_field():
    evil = "Doe\r|OBX|9|ST|x^y^LN||pwned~\\&"
    message = hl7.oru_r01(_content(name=evil, id=evil), control_id="CBX1",
                          sender=hl7.Sender("CLINIBOX", "C"), corrected=False).decode()
    segments = message.split("\r")
    assert [s[:3] for s in segments] == ["MSH", "PID", "OBR"] + ["OBX"] * (len(segments) - 3)
    pid = segments[1].split("|")
    assert len(pid) == 9 and "pwned" in pid[3] and "\\F\\" in pid[3] and "\\R\\" in pid[3]


def test_the_acknowledgement_is_read_for_its_code_and_message():
    answer = ("MSH|^~\\&|HIS||CLINIBOX||20261128||ACK^R01^ACK|9|P|2.5.1\r"
              "MSA|AR|CBX7|not accepted\rERR||||E||||bad PID")
    said = hl7.read_acknowledgement(answer.encode())
    assert (said.code, said.control_id, said.accepted) == ("AR", "CBX7", False)
    assert said.text == "not accepted bad PID"
    for bad in (b"", b"HTTP/1.1 200 OK\r\n", b"MSH|^~\\&|X\rPID|1", b"\xff\xfe"):
        with pytest.raises(hl7.NotAnAcknowledgement):
            hl7.read_acknowledgement(bad)


@pytest.mark.parametrize("receiver,problem", [
    ({"name": "his"}, "needs at least name and host"),
    ({"name": "his", "host": "h", "url": "http://x/fhir"}, 'only for protocol = "fhir"'),
    ({"name": "emr", "protocol": "fhir", "url": "http://x/fhir", "username": "u",
      "password_file": "/p"}, "needs an https:// url"),
    ({"name": "emr", "protocol": "fhir", "url": "https://u:pw@x/fhir"}, "without a user"),
    ({"name": "emr", "protocol": "fhir", "url": "https://x/fhir", "host": "h"},
     'only for protocol = "hl7-mllp"'),
    ({"name": "his", "host": "h", "receiving_facility": "A|B"}, "without | ^ ~"),
])
def test_a_wrong_receiver_is_refused_naming_the_key(receiver, problem):
    from clinibox_common.settings_loader import ConfigError

    with pytest.raises(ConfigError, match=problem.replace("|", r"\|").replace("^", r"\^")):
        from_dict({"records": {"receivers": [receiver]}})


def test_the_set_up_page_s_config_is_taken_as_written(tmp_path):
    """docs/integration/records.md: its TOML block, through ``clinibox config --check``."""
    import re
    from pathlib import Path

    from clinibox.table import main
    from clinibox_common.settings_loader import read_toml

    page = (Path(__file__).parents[3] / "docs" / "integration" / "records.md").read_text()
    (block,) = re.findall(r"```toml\n(.*?)```", page, re.S)
    config = tmp_path / "clinibox.toml"
    config.write_text(block)
    assert main(["config", "--check", str(config)]) == 0
    receivers = from_dict(read_toml(config)).records.receivers
    assert [(r.name, r.protocol, r.peer()) for r in receivers] == [
        ("his", "hl7-mllp", "192.0.2.20:2575"), ("emr", "fhir", "https://emr.clinic.lan/fhir")]


def _one_report(tmp_path, receiver: RecordsReceiver):
    config = Config()
    config.storage = dataclasses.replace(config.storage, state_dir=str(tmp_path))
    config.records.receivers = [receiver]
    conn = db.connect(config.database_path)
    db.initialise(conn)
    with db.transaction(conn):
        records_outbox.add_report(conn, [receiver.name], "1.2.3", "result", 1, _content())
    return config, conn


@pytest.mark.parametrize("status,code,state", [
    (401, "records_failed:auth:no_user", "pending"), (404, "records_failed:no_service", "pending"),
    (503, "records_failed:server_error:503", "pending"),
    ("unconfirmed", "records_failed:unconfirmed", "pending"),
    (422, "records_failed:refused:422", "pending")])
def test_a_fhir_server_s_answer_is_read_for_what_it_says(tmp_path, status, code, state):
    endpoint = FhirEndpoint(status=status)
    try:
        receiver = RecordsReceiver(name="emr", protocol="fhir", url=endpoint.url)
        config, conn = _one_report(tmp_path, receiver)
        sender = RecordsSender(config, receiver)
        assert sender.send_due(now=10**10) == 0
        (figure,) = records_outbox.receiver_figures(conn, ["emr"])
        assert figure["last_error_code"] == code
        assert conn.execute("SELECT state FROM records_outbox").fetchone()[0] == state
        if status == 422:  # the server's own words are kept with the refusal
            assert "Patient.identifier unknown here" in figure["last_error"]
        sender.conn.close()
        conn.close()
    finally:
        endpoint.close()


def test_the_password_is_read_at_each_connection_and_an_open_file_is_refused(tmp_path):
    endpoint = FhirEndpoint()
    try:
        secret = tmp_path / "password"
        secret.write_text("first-Pw\n")
        secret.chmod(0o600)
        # built directly: config --check would refuse a user over http:// (a test endpoint)
        receiver = RecordsReceiver(name="emr", protocol="fhir", url=endpoint.url,
                                   username="box-1", password_file=str(secret))
        config, conn = _one_report(tmp_path, receiver)
        sender = RecordsSender(config, receiver)
        assert sender.send_due(now=10**10) == 1
        assert endpoint.authorizations == ["Basic " + base64.b64encode(b"box-1:first-Pw")
                                           .decode()]
        secret.chmod(0o644)
        with db.transaction(conn):
            records_outbox.add_report(conn, ["emr"], "1.2.4", "result", 1, _content())
        assert sender.send_due(now=10**10) == 0
        (figure,) = records_outbox.receiver_figures(conn, ["emr"])
        assert figure["last_error_code"] == "records_failed:password_file:readable_by_others"
        assert "first-Pw" not in figure["last_error"] and len(endpoint.authorizations) == 1
        sender.conn.close()
        conn.close()
    finally:
        endpoint.close()


def test_the_technician_lists_held_reports_and_sends_them_again_in_chinese(tmp_path, capsys,
                                                                           monkeypatch):
    from clinibox.table import main

    config_file = tmp_path / "clinibox.toml"
    config_file.write_text(f'[storage]\nstate_dir = "{tmp_path / "state"}"\n'
                           '[[records.receivers]]\nname = "emr"\nprotocol = "fhir"\n'
                           'url = "https://emr.clinic.lan/fhir"\n')
    config = from_dict({"storage": {"state_dir": str(tmp_path / "state")}})
    conn = db.connect(config.database_path)
    db.initialise(conn)
    with db.transaction(conn):
        (row,) = records_outbox.add_report(conn, ["emr"], "1.2.3", "verdict", 4, _content())
        records_outbox.mark_refused(conn, row, "emr answered 422: Patient unknown", "422",
                                    1, 1, 1)
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    capsys.readouterr()
    assert main(["records", "held", "--config", str(config_file)]) == 0
    listed = capsys.readouterr().out
    assert "中心医院结论（更正）" in listed and "对方原话：emr answered 422: Patient unknown" \
        in listed and " 422 " in listed
    assert main(["records", "retry", "--receiver", "emx", "--config", str(config_file)]) == 1
    assert "没有名为 emx 的诊所信息系统（已有：emr）" in capsys.readouterr().out
    assert main(["records", "retry", "--receiver", "emr", "--config", str(config_file)]) == 0
    assert "已将 1 份暂停发送的报告重新排队" in capsys.readouterr().out
    (figure,) = records_outbox.receiver_figures(conn, ["emr"])
    assert (figure["held"], figure["waiting"]) == (0, 1)
    assert figure["last_error_code"] == "records_requeued:1:emr"  # on the receiver's line
    conn.close()


# -- what a red-team pass found (each was a reproduction first) ---------------------------------

def _raw_http_peer(answer: bytes, trickle: float = 0.0):
    """A server that reads one request and answers ``answer``, a byte every ``trickle`` s."""
    import socket
    import threading
    import time

    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += conn.recv(65536)
            try:
                if not trickle:
                    conn.sendall(answer)
                for byte in answer if trickle else b"":
                    conn.sendall(bytes([byte]))
                    time.sleep(trickle)
            except OSError:
                pass

    threading.Thread(target=serve, daemon=True).start()
    return server, f"http://127.0.0.1:{server.getsockname()[1]}/fhir"


def test_a_fhir_server_that_trickles_a_closing_answer_is_cut_off_at_the_deadline(tmp_path):
    import time

    from firmware_app.records.fhir_link import FhirLink
    from firmware_app.records.link import LinkFailed

    body = b'{"resourceType":"Bundle","type":"transaction-response","entry":[]}' * 4
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nConnection: close\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    server, url = _raw_http_peer(answer, trickle=0.2)
    started = time.monotonic()
    with pytest.raises(LinkFailed) as failed, server:
        FhirLink(RecordsReceiver(name="emr", protocol="fhir", url=url), 1.0).send(
            b'{"entry":[]}', "x")
    assert failed.value.failure == "no_answer" and time.monotonic() - started < 5


def test_an_answer_nested_to_crash_the_parser_is_a_failed_try_not_a_dead_pass(tmp_path):
    body = b"[" * 200_000
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: "
              + str(len(body)).encode() + b"\r\n\r\n" + body)
    server, url = _raw_http_peer(answer)
    with server:
        receiver = RecordsReceiver(name="emr", protocol="fhir", url=url)
        config, conn = _one_report(tmp_path, receiver)
        sender = RecordsSender(config, receiver)
        assert sender.send_due(now=10**10) == 0
    (figure,) = records_outbox.receiver_figures(conn, ["emr"])
    assert figure["last_error_code"] == "records_failed:unconfirmed"
    assert conn.execute("SELECT attempts FROM records_outbox").fetchone()[0] == 1
    sender.conn.close()
    conn.close()


def test_placeholders_and_odd_values_never_make_a_report_unsendable():
    from fhir.resources.R4B.bundle import Bundle

    from firmware_app.records import fhir

    content = _content(birth_date="00000000", id="12,34&identifier=x|9")
    content["study"]["time"] = "235960"  # a leap second: valid DICOM, no Python time
    made = fhir.bundle(content, corrected=False)
    Bundle.model_validate(made)
    patient = made["entry"][0]
    assert "birthDate" not in patient["resource"]
    assert patient["request"]["ifNoneExist"] == (
        "identifier=urn:clinibox:patient-id|12%5C%2C34%26identifier%3Dx%5C%7C9")
    urls = [e["request"]["url"] for e in made["entry"][1:]]
    assert all("#" not in url for url in urls) and len(set(urls)) == len(urls)
    unknown = fhir.bundle(_content(id=""), corrected=False)  # no ID: no new Patient record
    kinds = [e["resource"]["resourceType"] for e in unknown["entry"]]
    assert "Patient" not in kinds
    (report,) = [e["resource"] for e in unknown["entry"]
                 if e["resource"]["resourceType"] == "DiagnosticReport"]
    assert report["subject"] == {"reference": "#patient"}
    assert report["contained"][0]["name"][0]["family"] == "Doe"


def test_control_ids_are_never_reused_and_each_sentence_has_its_own_sub_id():
    from firmware_app.records.sender import control_id

    first = records_outbox.DueReport(1, "his", "1.2.3", "result", 1, {}, 0, 1.8e9)
    again = records_outbox.DueReport(1, "his", "1.2.4", "result", 1, {}, 0, 1.8e9 + 86400)
    assert control_id(first) != control_id(again) and len(control_id(again)) <= 20
    content = _content()
    content["result"]["findings"] = ["one", "two", "three"]
    message = hl7.oru_r01(content, control_id="C1", sender=hl7.Sender("CLINIBOX", "C"),
                          corrected=False).decode()
    sub_ids = [s.split("|")[4] for s in message.split("\r") if s.startswith("OBX|")
               and s.split("|")[2] == "TX"]
    assert len(sub_ids) == len(set(sub_ids)) and "findings.3" in sub_ids


def test_an_acknowledgement_is_read_fast_and_without_terminal_escapes():
    import time

    answer = ("MSH|^~\\&|HIS||CLINIBOX||20261128||ACK^R01^ACK|9|P|2.5.1\r"
              "MSA|AE|C1|bad\x1b[31m\x07 value\r" + "ERR|" + "x~" * 30_000)
    started = time.monotonic()
    said = hl7.read_acknowledgement(answer.encode())
    assert time.monotonic() - started < 2
    assert said.code == "AE" and "\x1b" not in said.text and "\x07" not in said.text
