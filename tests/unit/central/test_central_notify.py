"""The webhook: once per alert, signed, retried after a failure, given up after max_attempts."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator

import pytest

from central.config import NotifyConfig
from central.notify import Notifier, NotifyError, load_secret
from central.store import Store
from clinibox_common.contracts.envelope import Header
from tests.telemetry_payloads import alert_payload, status_payload
from tests.webhook_sink import WebhookSink

NOW = 1_800_000_000.0
SECRET = b"s3cret-shared-with-the-messenger"


@pytest.fixture
def hook() -> Iterator[WebhookSink]:
    """A running local webhook receiver."""
    server = WebhookSink()
    yield server
    server.close()


def _store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path}/db/central.db", webhook=True,
                 public_url="https://console.example/")


def _notifier(store: Store, hook: WebhookSink, **settings: float) -> Notifier:
    config = NotifyConfig(url=hook.url, secret_file="unused", retry_min_seconds=1.0,
                          retry_max_seconds=4.0, **settings)
    return Notifier(store.database, config, SECRET)


def test_fires_once_per_alert_signed_without_the_study_reference(tmp_path, hook):
    store = _store(tmp_path)
    store.set_clinic("clinic-a", "Town clinic", "North county")
    alert = alert_payload()
    assert store.store(Header("clinic-a", "box-1", "alert", 7), alert, NOW)
    assert not store.store(Header("clinic-a", "box-1", "alert", 7), alert, NOW)  # redelivered
    store.store(Header("clinic-a", "box-1", "status", 8), status_payload(), NOW)
    other = Store(f"sqlite:///{tmp_path}/db/central.db", webhook=True)  # a second receiver
    first, second = _notifier(store, hook), _notifier(other, hook)
    assert first.run_once(NOW + 1) + second.run_once(NOW + 1) == 1
    assert first.run_once(NOW + 100) + second.run_once(NOW + 100) == 0
    [request] = hook.requests
    headers, body = request.headers, request.body
    signed = headers["X-Clinibox-Timestamp"].encode() + b"." + body
    assert headers["X-Clinibox-Signature"] == "sha256=" + hmac.new(
        SECRET, signed, hashlib.sha256).hexdigest()
    sent = json.loads(body)
    [row] = store.alerts()
    assert sent == {"event": "alert", "alert_id": row["id"], "clinic": "clinic-a",
                    "device": "box-1", "county": "North county", "finding": "lesion",
                    "score": alert["score"], "threshold": alert["threshold"],
                    "modality": "CT", "model": alert["model"], "instances": 3,
                    "received_at": NOW,
                    "console_url": f"https://console.example/alerts/{row['id']}"}
    assert "study_ref" not in body.decode()
    assert headers["X-Clinibox-Delivery"].isdigit() and headers["X-Clinibox-Timestamp"]


def test_claims_do_not_overlap(tmp_path, hook):
    store = _store(tmp_path)
    store.store(Header("clinic-a", "box-1", "alert", 1), alert_payload(), NOW)
    first, second = _notifier(store, hook), _notifier(store, hook)
    assert len(first.claim(NOW)) == 1
    assert second.claim(NOW) == []  # claimed by the first until its timeout passes
    assert len(second.claim(NOW + 3600)) == 1  # the first died: the claim lapsed


def test_retries_after_a_500_then_sends(tmp_path, hook):
    store = _store(tmp_path)
    store.store(Header("clinic-a", "box-1", "alert", 1), alert_payload(), NOW)
    notifier = _notifier(store, hook)
    hook.answers = [500]
    assert notifier.run_once(NOW) == 1
    assert notifier.run_once(NOW + 0.1) == 0  # not due yet: backoff
    assert notifier.run_once(NOW + 10) == 1
    assert len(hook.requests) == 2
    with store.database.transaction(write=False) as tx:
        row = tx.execute("SELECT attempts, sent_at, given_up_at, last_error"
                         " FROM webhook_deliveries").fetchone()
    assert row[0] == 2 and row[1] is not None and row[2] is None and row[3] is None


def test_gives_up_after_max_attempts(tmp_path, hook, caplog):
    store = _store(tmp_path)
    store.store(Header("clinic-a", "box-1", "alert", 1), alert_payload(), NOW)
    notifier = _notifier(store, hook, max_attempts=3)
    hook.answers = [500, 502, 503, 200]
    for step in range(5):
        notifier.run_once(NOW + 100 * step)
    assert len(hook.requests) == 3
    with store.database.transaction(write=False) as tx:
        row = tx.execute("SELECT attempts, sent_at, given_up_at, last_error"
                         " FROM webhook_deliveries").fetchone()
    assert (row[0], row[1], row[3]) == (3, None, "HTTP 503") and row[2] is not None
    assert "given up after 3 attempts" in caplog.text


def test_backoff_grows_and_is_bounded(tmp_path, hook):
    notifier = _notifier(_store(tmp_path), hook)
    assert 0.5 <= notifier.backoff(1) <= 1.0
    assert 1.0 <= notifier.backoff(2) <= 2.0
    assert 2.0 <= notifier.backoff(30) <= 4.0


def test_no_webhook_no_rows_and_the_secret_is_required(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/db/central.db")
    store.store(Header("clinic-a", "box-1", "alert", 1), alert_payload(), NOW)
    with store.database.transaction(write=False) as tx:
        assert tx.execute("SELECT COUNT(*) FROM webhook_deliveries").fetchone()[0] == 0
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(NotifyError, match="empty"):
        load_secret(str(tmp_path / "empty"))
    (tmp_path / "secret").write_text("abc\n")
    assert load_secret(str(tmp_path / "secret")) == b"abc"


def test_a_flooding_box_waits_behind_a_quiet_boxs_alert(tmp_path, hook):
    """Found by the red team: the notifier posted in next_at order, so a quiet clinic's alert
    waited behind a thousand of a flooding box's. Now it claims in turns across the boxes:
    the quiet box's alert, due last, is second in the first pass, and a pass takes at most PER_BOX
    of one box."""
    from central.notify import PER_BOX

    store = _store(tmp_path)
    for seq in range(1, 41):
        store.store(Header("clinic-a", "flood", "alert", seq), alert_payload(), NOW + seq / 100)
    store.store(Header("clinic-b", "quiet", "alert", 1), alert_payload(), NOW + 1)
    notifier = _notifier(store, hook)
    claimed = notifier.claim(NOW + 2)
    bodies = [json.loads(d.payload) for d in claimed]
    # the first turn: each box's oldest (the flood's first came first); then the flood's next
    assert [b["device"] for b in bodies] == ["flood", "quiet"] + ["flood"] * (PER_BOX - 1)
    flood = [b["received_at"] for b in bodies if b["device"] == "flood"]
    assert flood == sorted(flood)
    for delivery in claimed:
        notifier.finish(delivery, notifier.post(delivery, NOW + 2), NOW + 2)
    assert len(hook.requests) == PER_BOX + 1
    assert json.loads(hook.requests[1].body)["device"] == "quiet"
    while notifier.run_once(NOW + 3):
        pass
    assert len(hook.requests) == 41  # the flood is held, not dropped: every alert is sent


def test_fhir_alerts_and_verdicts_name_the_study_by_its_keyed_reference_only(tmp_path, hook):
    """``format = "fhir"``: the alert a Communication at <url>/Communication, each verdict a
    DiagnosticReport at <url>/DiagnosticReport, read back by the FHIR models; the study by
    its keyed reference, no patient, no note."""
    from fhir.resources.R4B.communication import Communication
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    store = Store(f"sqlite:///{tmp_path}/db/central.db", webhook=True,
                  public_url="https://console.example/", webhook_format="fhir")
    alert = alert_payload()
    assert store.store(Header("clinic-a", "box-1", "alert", 7), alert, NOW)
    [row] = store.alerts()
    store.review_alert(row["id"], "follow_up", "CANARY-NOTE Zhang San 13800001111", "dr-li",
                       follow_up_months=6, now=NOW + 60)
    store.review_alert(row["id"], "no_action", "", "dr-li", now=NOW + 120)  # amended: another
    config = NotifyConfig(url=hook.base + "/fhir/", secret_file="unused", format="fhir")
    alerts = Notifier(store.database, config, SECRET)
    verdicts = Notifier(store.database, config, SECRET, table="webhook_verdicts")
    assert alerts.run_once(NOW + 200) == 1 and verdicts.run_once(NOW + 200) == 2
    assert alerts.run_once(NOW + 300) + verdicts.run_once(NOW + 300) == 0  # each sent once
    paths = [r.path for r in hook.requests]
    assert paths == ["/fhir/Communication", "/fhir/DiagnosticReport", "/fhir/DiagnosticReport"]
    assert {r.headers["Content-Type"] for r in hook.requests} == {"application/fhir+json"}
    for request in hook.requests:  # signed as the JSON webhook is
        signed = request.headers["X-Clinibox-Timestamp"].encode() + b"." + request.body
        assert request.headers["X-Clinibox-Signature"] == "sha256=" + hmac.new(
            SECRET, signed, hashlib.sha256).hexdigest()
    communication = Communication.model_validate_json(hook.requests[0].body)
    first, amended = (DiagnosticReport.model_validate_json(r.body) for r in hook.requests[1:])
    assert communication.about[0].identifier.value == row["study_ref"]
    assert communication.identifier[0].value == str(row["id"])
    assert first.imagingStudy[0].identifier.value == row["study_ref"]
    assert first.conclusionCode[0].coding[0].code == "follow_up"
    assert "6 month" in first.conclusion and first.status == "final"
    assert amended.conclusionCode[0].coding[0].code == "no_action"
    for request in hook.requests:
        text = request.body.decode()
        assert "CANARY-NOTE" not in text and "Zhang" not in text and '"subject"' not in text
        assert "Patient" not in text


def test_a_json_webhook_sends_no_verdict_and_a_console_review_queues_one_for_fhir(tmp_path):
    from central.config import CentralConfig
    from central_console.app import create_app

    store = Store(f"sqlite:///{tmp_path}/db/central.db", webhook=True)  # format json
    assert store.store(Header("clinic-a", "box-1", "alert", 7), alert_payload(), NOW)
    [row] = store.alerts()
    store.review_alert(row["id"], "no_action", "", "dr-li", now=NOW + 60)
    with store.database.transaction(write=False) as tx:
        assert tx.execute("SELECT COUNT(*) FROM webhook_verdicts").fetchone()[0] == 0
    config = CentralConfig()
    config.database.url = f"sqlite:///{tmp_path}/db/central.db"
    config.web.state_dir = str(tmp_path / "web")
    config.notify.url, config.notify.format = "https://fhir.example/base", "fhir"
    console_store = create_app(config).config["CONSOLE"].store
    console_store.review_alert(row["id"], "refer", "", "dr-wang", now=NOW + 90)
    with store.database.transaction(write=False) as tx:
        assert tx.execute("SELECT COUNT(*) FROM webhook_verdicts").fetchone()[0] == 1


def test_the_webhook_page_s_fhir_config_is_taken_as_written():
    """docs/hospital/webhook.md: its FHIR ``[notify]`` block, through the hospital's config."""
    import re
    from pathlib import Path

    import tomllib

    from central.config import from_dict
    from clinibox_common.settings_loader import ConfigError

    page = (Path(__file__).parents[3] / "docs" / "hospital" / "webhook.md").read_text()
    block = next(b for b in re.findall(r"```toml\n(.*?)```", page, re.S) if "fhir" in b)
    notify = from_dict(tomllib.loads(block)).notify
    assert (notify.format, notify.url) == ("fhir", "https://fhir.hospital.example/fhir")
    with pytest.raises(ConfigError, match="format"):
        from_dict(tomllib.loads(block.replace('format = "fhir"', 'format = "hl7"')))
