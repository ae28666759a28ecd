"""What each schema migration promises about the rows the box already holds
(``tests/unit/firmware_app/test_migrations.py`` runs them): for migration N, rows written at
schema N-1 (``seed_vN-1``) and what must hold of them once the ladder ran (``check_vN``),
gathered in :data:`ROWS`. A new migration adds its case here.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

import pytest

from firmware_app.storage import db


def insert(conn: sqlite3.Connection, table: str, **values: object) -> None:
    """One row, naming its columns (so a row fits the old schema it is written to)."""
    names = ", ".join(values)
    marks = ", ".join("?" * len(values))
    conn.execute(f"INSERT INTO {table}({names}) VALUES ({marks})", tuple(values.values()))


def _instance(conn, n: int, study: str, *, modality: str = "CT", status: str = "processed",
              received: float | None = None, source: str = "dicom") -> None:
    """An instance row with the columns every schema has (v1)."""
    at = 100.0 * n if received is None else received
    insert(conn, "instances", id=n, local_id=f"l{n}", study_instance_uid=study,
           modality=modality, source=source, spool_path=f"p{n}", size_bytes=10, status=status,
           received_at=at, updated_at=at)


def _result(conn, n: int, probability: float, *, model: str = "ct-lesion@1.0.0",
            finding: int | None = None, alert: int | None = None, **later: object) -> None:
    """A result row with the columns of v1 (and ``later`` ones the schema has)."""
    insert(conn, "results", instance_id=n, model_id=model, backend="onnxruntime",
           probability=probability,
           finding=int(probability > 0.5) if finding is None else finding,
           alert=int(probability > 0.8) if alert is None else alert,
           findings_json='[{"box": [1, 2, 3, 4]}]', warnings_json="[]", key_frame=0,
           frames_inferred=1, timings_json='{"total": 5}', created_at=100.0 * n + 1, **later)


def _study(conn, key: str, **values: object) -> None:
    """A study row of v3 … (its worklist columns; ``values`` add or override)."""
    row = {"study_key": key, "modality": "CT", "instances": 1, "max_probability": 0.9,
           "findings": 1, "alert": 1, "top_instance_id": 1, "warnings": 0,
           "received_at": 100.0, "updated_at": 300.0} | values
    insert(conn, "studies", **row)


def _alerting_studies(conn) -> None:
    """Two studies: 1.2.1 (CT found, US no finding) and 1.2.2 (nothing found)."""
    _instance(conn, 1, "1.2.1")
    _instance(conn, 2, "1.2.1", modality="US")
    _instance(conn, 3, "1.2.2")
    _result(conn, 1, 0.9)
    _result(conn, 2, 0.3, model="us-lesion@2.0.0")
    _result(conn, 3, 0.2)


def seed_v1(conn) -> None:
    """v1: two analysed studies (their roll-up keyed by study), an import, an event."""
    _alerting_studies(conn)
    insert(conn, "studies", study_key="1.2.1", modality="CT", instances=2, max_probability=0.9,
           findings=1, alert=1, top_instance_id=1, warnings=0, updated_at=250.0)
    insert(conn, "imported_files", medium_path="/media/usb/a.dcm", size_bytes=10, mtime_ns=7,
           outcome="stored", instance_id=1, imported_at=90.0)
    insert(conn, "events", at=95.0, level="info", component="worker", message="started")


def check_v2(conn) -> None:
    """v2: results gain input_mean/input_std (NULL before); the outbox starts its sequence."""
    rows = conn.execute("SELECT instance_id, probability, input_mean, input_std FROM results"
                        " ORDER BY instance_id").fetchall()
    assert [tuple(r) for r in rows] == [(1, 0.9, None, None), (2, 0.3, None, None),
                                        (3, 0.2, None, None)]
    assert conn.execute("SELECT outcome, instance_id FROM imported_files").fetchone()[:] == (
        "stored", 1)
    assert conn.execute("SELECT message FROM events").fetchone()[0] == "started"
    (start,) = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    assert start > 10**15  # a clock in microseconds: above any earlier installation's numbers
    check_studies_rolled_up(conn)


def check_studies_rolled_up(conn) -> None:
    """The studies made anew by v3 and rolled up again from the results (after the ladder)."""
    studies = conn.execute("SELECT study_key, instances, alert, received_at, top_instance_id,"
                           " band, suspicion FROM studies ORDER BY study_key").fetchall()
    assert [tuple(r) for r in studies] == [("1.2.1", 2, 1, 100.0, 1, 0, 0.9),
                                           ("1.2.2", 1, 0, 300.0, 3, 3, 0.2)]


def seed_v2(conn) -> None:
    """v2: studies keyed by study, verdicts on whole images."""
    seed_v1(conn)
    for verdict in ("agree", "disagree"):
        insert(conn, "feedback", instance_id=1, verdict=verdict, at=5.0)
    insert(conn, "alerted_studies", study_key="1.2.1", seq=7, at=250.0)
    insert(conn, "telemetry_state", name="summary_end", value=260.0)


def check_v3(conn) -> None:
    """v3: studies rolled up again (stable ids from now on); feedback on the whole image,
    and 'unsure' and per-finding verdicts accepted."""
    check_studies_rolled_up(conn)
    feedback = conn.execute("SELECT instance_id, finding, verdict, account_id FROM feedback"
                            " ORDER BY id").fetchall()
    assert [tuple(r) for r in feedback] == [(1, -1, "agree", None), (1, -1, "disagree", None)]
    insert(conn, "feedback", instance_id=1, finding=0, verdict="unsure", at=6.0)
    assert conn.execute("SELECT COUNT(*) FROM accounts").fetchone()[0] == 0
    assert conn.execute("SELECT value FROM telemetry_state").fetchone()[0] == 260.0


def seed_v3(conn) -> None:
    """v3: studies the viewer has linked to (ids 41, 42), a queued image, a verdict."""
    _alerting_studies(conn)
    _study(conn, "1.2.1", id=41, instances=2, patient_name="P^1", patient_id="P1",
           study_date="20261101")
    _study(conn, "1.2.2", id=42, max_probability=0.2, findings=0, alert=0, top_instance_id=3,
           received_at=300.0, patient_name="P^2")
    _instance(conn, 5, None, status="queued", source="usb")
    insert(conn, "feedback", instance_id=1, finding=0, verdict="agree", at=5.0)


def check_v4(conn) -> None:
    """v4: every image is present (no deletion time, no size kept), the studies keep their
    ids; the retention indexes serve their queries."""
    rows = conn.execute("SELECT id, status, spool_path, image_deleted_at, image_rows,"
                        " image_columns FROM instances ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [
        (1, "processed", "p1", None, None, None), (2, "processed", "p2", None, None, None),
        (3, "processed", "p3", None, None, None), (5, "queued", "p5", None, None, None)]
    studies = conn.execute("SELECT id, study_key, patient_name FROM studies ORDER BY id")
    assert [tuple(r) for r in studies] == [(41, "1.2.1", "P^1"), (42, "1.2.2", "P^2")]
    assert conn.execute("SELECT COUNT(*) FROM retention_passes").fetchone()[0] == 0
    plan = " ".join(r[3] for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM instances WHERE image_deleted_at IS NULL"
        " ORDER BY received_at"))
    assert "instances_image_present" in plan
    plan = " ".join(r[3] for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM studies WHERE patient_id = ? AND id != ?"
        " ORDER BY study_date DESC, received_at DESC LIMIT 1", ("P1", 41)))
    assert "studies_patient" in plan  # the previous study is found without a scan
    assert conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 1


def seed_v4(conn) -> None:
    """v4: results with flags only, one image deleted by retention."""
    seed_v3(conn)
    conn.execute("UPDATE instances SET image_deleted_at = 500, image_rows = 512,"
                 " image_columns = 512 WHERE id = 3")


def check_v5(conn) -> None:
    """v5: a result says finding or no finding as its flags did, keeps no lesion records
    and no class probabilities; studies count no image not assessable."""
    rows = conn.execute("SELECT instance_id, assessment, assessment_reason, lesions_json,"
                        " classes_json, findings_json FROM results ORDER BY instance_id")
    assert [tuple(r) for r in rows] == [
        (1, "finding", "", "[]", "{}", '[{"box": [1, 2, 3, 4]}]'),
        (2, "no_finding", "", "[]", "{}", '[{"box": [1, 2, 3, 4]}]'),
        (3, "no_finding", "", "[]", "{}", '[{"box": [1, 2, 3, 4]}]')]
    assert conn.execute("SELECT SUM(not_assessable) FROM studies").fetchone()[0] == 0
    assert conn.execute("SELECT image_deleted_at, image_rows FROM instances WHERE id = 3"
                        ).fetchone()[:] == (500.0, 512)


def seed_v5(conn) -> None:
    """v5: one image the model could not assess."""
    _alerting_studies(conn)
    conn.execute("UPDATE results SET assessment = 'finding' WHERE finding = 1")
    conn.execute("UPDATE results SET assessment = 'not_assessable',"
                 " assessment_reason = 'image is blank, rescan suggested' WHERE instance_id = 3")
    _study(conn, "1.2.1", instances=2)
    _study(conn, "1.2.2", max_probability=0.2, findings=0, alert=0, top_instance_id=3,
           not_assessable=1)


def check_v6(conn) -> None:
    """v6: no study counts an image outside the validated range; assessments stay (their
    reasons too, in the form of the newest schema)."""
    rows = conn.execute("SELECT study_key, not_assessable, outside_range FROM studies"
                        " ORDER BY study_key")
    assert [tuple(r) for r in rows] == [("1.2.1", 0, 0), ("1.2.2", 1, 0)]
    assessment, reason = conn.execute("SELECT assessment, assessment_reason FROM results"
                                      " WHERE instance_id = 3").fetchone()
    assert assessment == "not_assessable" and "blank" in reason


def seed_v6(conn) -> None:
    """v6: two studies updated at different times."""
    _alerting_studies(conn)
    _study(conn, "1.2.1", updated_at=250.0)
    _study(conn, "1.2.2", updated_at=320.0, alert=0, top_instance_id=3)


def check_v7(conn) -> None:
    """v7: the studies count as complete when last updated (not completed again), and the
    DICOM outbox and the export record start empty."""
    rows = conn.execute("SELECT study_key, completed_at, completions, updated_at FROM studies"
                        " ORDER BY study_key")
    assert [tuple(r) for r in rows] == [("1.2.1", 250.0, 0, 250.0), ("1.2.2", 320.0, 0, 320.0)]
    assert conn.execute("SELECT COUNT(*) FROM dicom_outbox").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM exports").fetchone()[0] == 0


def seed_v7(conn) -> None:
    """v7: two complete alerting studies: 1.2.1, analysed by two models (CT and US),
    alerted once (one alert per study, naming its top instance's model); 1.2.2, whose alert
    was not queued yet when the box was upgraded."""
    for n, study, modality, model, p in ((1, "1.2.1", "CT", "ct-lesion@1.0.0", 0.9),
                                         (2, "1.2.1", "US", "us-lesion@2.0.0", 0.7),
                                         (3, "1.2.2", "CT", "ct-lesion@1.0.0", 0.95)):
        _instance(conn, n, study, modality=modality)
        _result(conn, n, p, model=model, finding=1, alert=1, assessment="finding")
    _study(conn, "1.2.1", instances=2, updated_at=201.0, completed_at=201.0, completions=1)
    _study(conn, "1.2.2", max_probability=0.95, top_instance_id=3, received_at=300.0,
           updated_at=301.0, completed_at=301.0, completions=1)
    insert(conn, "alerted_studies", study_key="1.2.1", seq=7, at=250.0)


def check_v8(conn) -> None:
    """v8: the alert sent names its top model; the alerted study counts as checked, so the
    producer sends the alert that was waiting and no late one for the second model."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from firmware_app.storage.outbox import Outbox
    from firmware_app.storage.telemetry import period_counts
    from firmware_app.telemetry.identity import DeviceIdentity
    from firmware_app.telemetry.messages import ModelFacts, queue_alerts

    alerted = conn.execute("SELECT study_key, model, seq, at FROM alerted_studies").fetchall()
    assert [tuple(r) for r in alerted] == [("1.2.1", "ct-lesion", 7, 250.0)]
    done = conn.execute("SELECT study_key, alerts_done_at = completed_at FROM studies"
                        " ORDER BY study_key").fetchall()
    assert [tuple(r) for r in done] == [("1.2.1", 1), ("1.2.2", None)]
    assert period_counts(conn, 0, 300)["alerts"] == 1  # the alert sent before still counts
    facts = ModelFacts("ct-lesion@1.0.0", ("lesion",), 0.8)
    identity = DeviceIdentity("clinic-1", "box-1", Ed25519PrivateKey.generate(), b"s" * 32,
                              X25519PrivateKey.generate())
    outbox = Outbox(conn, 100, set(facts.labels))
    assert queue_alerts(conn, outbox, identity, facts) == 1
    (message,) = outbox.audit(since=0)
    assert message["payload"]["study_ref"] == identity.study_ref("1.2.2")
    assert queue_alerts(conn, outbox, identity, facts) == 0


def seed_v8(conn) -> None:
    """v8: a technician's account."""
    insert(conn, "accounts", name="tina", role="technician", password_hash="x", created_at=1.0,
           changed_at=1.0)


def check_v9(conn) -> None:
    """v9: the audit trail starts empty and intact, its triggers in place; accounts kept."""
    from firmware_app.storage import audit
    from firmware_app.storage.audit_chain import verify
    from firmware_app.storage.audit_schema import TRIGGERS, missing_triggers

    assert missing_triggers(conn) == []
    assert len(TRIGGERS) == 4
    assert conn.execute("SELECT name FROM accounts").fetchone()[0] == "tina"
    assert verify(conn).describe() == "intact (0 rows)"
    assert audit.record(conn, "login", account="tina", address="10.0.0.7") == 1
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit")


def seed_v9(conn) -> None:
    """v9: a clinician's account."""
    insert(conn, "accounts", name="carl", role="clinician", password_hash="x", created_at=1.0,
           changed_at=1.0)


def check_v10(conn) -> None:
    """v10: the account has chosen no language yet; choosing one is kept."""
    from firmware_app.storage.accounts import Accounts

    [carl] = Accounts(conn).all()
    assert (carl.name, carl.language) == ("carl", "")
    Accounts(conn).set_language(carl.id, "zh_CN")
    assert Accounts(conn).get(carl.id).language == "zh_CN"


def seed_v10(conn) -> None:
    """v10: four complete studies of one image each, one per assessment."""
    for n, (study, probability, finding, assessment) in enumerate((
            ("outside", 0.96, 0, "outside_validated_range"), ("found", 0.30, 1, "finding"),
            ("blank", 0.0, 0, "not_assessable"), ("clear", 0.05, 0, "no_finding")), start=1):
        _instance(conn, n, study, received=float(n))
        _result(conn, n, probability, finding=finding, alert=0, assessment=assessment)
        _study(conn, study, max_probability=probability, findings=finding, alert=0,
               top_instance_id=n, received_at=float(n), updated_at=float(n),
               completed_at=float(n))


def check_v11(conn) -> None:
    """v11: band and suspicion come from the images the model gave a result for: an image
    outside the validated range at 0.96 ranks below a finding at 0.30 and shows no
    probability. The times stay, so nothing is completed or sent to the PACS again."""
    rows = conn.execute("SELECT study_key, band, suspicion, updated_at, completed_at"
                        " FROM studies ORDER BY band, suspicion DESC, received_at DESC")
    rows = rows.fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("found", 1, 0.30), ("blank", 2, None), ("outside", 2, None), ("clear", 3, 0.05)]
    assert all(r[3] == r[4] for r in rows)  # times untouched: not completed again
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "studies_suspicion" not in indexes and "studies_clinical_order" in indexes


def seed_v11(conn) -> None:
    """v11: an analysed image."""
    _instance(conn, 1, "S")


def check_v12(conn) -> None:
    """v12: its geometry is not known (NULL: read per slice)."""
    assert conn.execute("SELECT id, geometry_json FROM instances").fetchall()[0][:] == (1, None)


def seed_v12(conn) -> None:
    """v12: a DICOM result waiting for a refusing PACS."""
    insert(conn, "dicom_outbox", id=7, destination="pacs", kind="sr", study_key="1.2",
           sop_class_uid="1.2.3", sop_instance_uid="1.2.4", path="/x/1.2.4.dcm",
           state="pending", attempts=3, next_attempt_at=10.0, last_error="refused",
           created_at=1.0)


def check_v13(conn) -> None:
    """v13: the row is kept with no refusal counted and no status; it may now be held."""
    row = dict(conn.execute("SELECT * FROM dicom_outbox").fetchone())
    assert (row["id"], row["state"], row["attempts"], row["last_error"], row["path"]) == (
        7, "pending", 3, "refused", "/x/1.2.4.dcm")
    assert (row["refusals"], row["last_status"]) == (0, None)
    conn.execute("UPDATE dicom_outbox SET state = 'held', last_status = 43264")
    assert conn.execute("SELECT state FROM dicom_outbox").fetchone()[0] == "held"
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE dicom_outbox SET state = 'lost'")


def seed_v13(conn) -> None:
    """v13: reasons as English sentences: a quarantined object, an image not analysed, an
    image not assessable with two quality warnings."""
    _instance(conn, 31, "1.3.1", status="quarantined")
    _instance(conn, 32, "1.3.1", status="not_analysed")
    _instance(conn, 33, "1.3.1")
    conn.execute("UPDATE instances SET reason = 'truncated file' WHERE id = 31")
    conn.execute("UPDATE instances SET reason = 'modality NM is not one the model demo@1.0"
                 " accepts (CT, US)' WHERE id = 32")
    _result(conn, 33, 0.4, assessment="not_assessable",
            assessment_reason="image too dark, rescan suggested; image too small for reliable"
                              " reading (40 x 32 pixels)")
    conn.execute("UPDATE results SET warnings_json = ? WHERE instance_id = 33", (json.dumps([
        {"code": "too_dark", "message": "image too dark, rescan suggested"},
        {"code": "too_small",
         "message": "image too small for reliable reading (40 x 32 pixels)"}]),))


def check_v14(conn) -> None:
    """v14: the sentences are codes with their parameters (``contracts/reasons.py``); text
    the box did not write (a decoder's) is kept as an ``unknown`` reason."""
    from clinibox_common.contracts.reasons import Reason, ReasonCode, decode

    reasons = dict(conn.execute("SELECT id, reason FROM instances WHERE id > 30"))
    assert decode(reasons[31]) == [Reason(ReasonCode.UNKNOWN, {"text": "truncated file"})]
    assert decode(reasons[32]) == [Reason(ReasonCode.MODALITY_NOT_ACCEPTED, {
        "modality": "NM", "model": "demo@1.0", "accepted": "CT, US"})]
    assert reasons[33] is None
    why, warnings = conn.execute("SELECT assessment_reason, warnings_json FROM results"
                                 " WHERE instance_id = 33").fetchone()
    dark, small = Reason(ReasonCode.TOO_DARK), Reason(ReasonCode.TOO_SMALL,
                                                     {"columns": 40, "rows": 32})
    assert decode(why) == decode(warnings) == [dark, small]


def seed_v14(conn) -> None:
    """v14: DICOM results of each kind the CHECK allowed, one held after refusals."""
    for n, (kind, state) in enumerate((("sr", "sent"), ("seg", "pending"),
                                       ("key_image", "held")), start=21):
        insert(conn, "dicom_outbox", id=n, destination="pacs", kind=kind, study_key="1.2",
               sop_class_uid="1.2.3", sop_instance_uid=f"1.2.{n}", path=f"/x/1.2.{n}.dcm",
               state=state, attempts=2, next_attempt_at=10.0, created_at=1.0, refusals=n,
               last_status=0xA900 if state == "held" else None)


def check_v15(conn) -> None:
    """v15: every row kept as it was; the kind is checked against the table of DICOM outputs
    (``dicom_output_kinds``, written at every opening), no longer by a CHECK."""
    assert [tuple(r) for r in conn.execute(
        "SELECT id, kind, state, refusals, last_status FROM dicom_outbox ORDER BY id")] == [
        (21, "sr", "sent", 21, None), (22, "seg", "pending", 22, None),
        (23, "key_image", "held", 23, 0xA900)]
    assert {r[0] for r in conn.execute("SELECT kind FROM dicom_output_kinds")} == {
        "sr", "seg", "key_image"}
    with pytest.raises(sqlite3.IntegrityError, match="not a DICOM output"):
        conn.execute("UPDATE dicom_outbox SET kind = 'pdf' WHERE id = 21")



def seed_v15(conn) -> None:
    """v15: the event log, with a C-STORE refusal the landing throttles and other events."""
    for n, (component, message) in enumerate((
            ("ingest", "C-STORE refused: reason=uid_mismatch calling='AE1'"),
            ("ingest", "conflicting duplicate of instance 3 kept aside as x (from AE1)"),
            ("pacs", "C-STORE refused: not an ingest event")), start=41):
        insert(conn, "events", id=n, at=5.0, level="WARNING", component=component,
               message=message)


def check_v16(conn) -> None:
    """v16: events carry a code; the earlier software's C-STORE refusals get theirs, so the
    landing's hourly throttle counts them after the upgrade too."""
    assert [tuple(r) for r in conn.execute("SELECT id, code FROM events WHERE id > 40"
                                           " ORDER BY id")] == [
        (41, "cstore_refused"), (42, ""), (43, "")]
    assert db.events_since(conn, "ingest", "cstore_refused", 0.0) == 1


def check_v17(conn) -> None:
    """v17: the hospital's verdicts have a table of their own, empty after the upgrade (the
    events seeded at v16 are kept), and it takes a verdict and gives it back, not late
    unless said so."""
    assert conn.execute("SELECT COUNT(*) FROM hospital_reviews").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM events WHERE id > 40").fetchone()[0] == 3
    insert(conn, "hospital_reviews", seq=1, study_key="1.2", study_ref="ab" * 16, alert_seq=4,
           verdict="refer", note="", reviewed_at=5.0, received_at=6.0)
    row = conn.execute("SELECT verdict, follow_up_months, late FROM hospital_reviews").fetchone()
    assert tuple(row) == ("refer", None, 0)
    conn.execute("DELETE FROM hospital_reviews")


def check_v18(conn) -> None:
    """v18: rollout offers and the wait for a model have tables of their own, empty after
    the upgrade (the v17 verdicts table is kept), and an offer's seq counts in the
    downlink's watermark beside the verdicts'."""
    assert conn.execute("SELECT COUNT(*) FROM model_offers").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM model_waiting").fetchone()[0] == 0
    insert(conn, "hospital_reviews", seq=1, study_key="1.2", study_ref="ab" * 16, alert_seq=4,
           verdict="refer", note="", reviewed_at=5.0, received_at=6.0)
    insert(conn, "model_offers", seq=2, kind="rollout", rollout=1, name="m", version="2.0",
           payload="{}", step="offered", received_at=6.0, updated_at=6.0)
    from firmware_app.storage import hospital_reviews
    assert hospital_reviews.watermark(conn) == 2
    conn.execute("DELETE FROM hospital_reviews")
    conn.execute("DELETE FROM model_offers")

def check_v19(conn) -> None:
    """v19: live sessions, their requests and what they kept have tables of their own, empty
    after the upgrade; one session at most is open per source."""
    for table in ("live_sessions", "live_requests", "live_kept"):
        assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0
    row = {"source": "us-1", "study_uid": "1.2", "series_uid": "1.2.1", "started_by": "nurse",
           "started_at": 1.0}
    insert(conn, "live_sessions", id=1, **row)
    with pytest.raises(sqlite3.IntegrityError):
        insert(conn, "live_sessions", id=2, **row)
    conn.execute("DELETE FROM live_sessions")

def check_v20(conn) -> None:
    """v20: the hospital's link checks have a table of their own, empty after the upgrade,
    and each one kept counts in the downlink watermark beside verdicts and model offers."""
    assert conn.execute("SELECT COUNT(*) FROM link_checks").fetchone()[0] == 0
    insert(conn, "hospital_reviews", seq=1, study_key="1.2", study_ref="ab" * 16, alert_seq=4,
           verdict="refer", note="", reviewed_at=5.0, received_at=6.0)
    insert(conn, "link_checks", seq=2, created_at=6.0, received_at=7.0)
    from firmware_app.storage import hospital_reviews
    assert hospital_reviews.watermark(conn) == 2
    conn.execute("DELETE FROM hospital_reviews")
    conn.execute("DELETE FROM link_checks")

def seed_v20(conn) -> None:
    """Schema 20: the rows of v15 and a live session whose patient was typed."""
    seed_v15(conn)
    insert(conn, "live_sessions", id=1, source="us-1", study_uid="1.2", series_uid="1.2.1",
           patient_name="Li^Na", patient_id="P-1", started_by="nurse", started_at=1.0,
           ended_at=2.0)


def check_v21(conn) -> None:
    """v21: the worklist has tables of its own, empty after the upgrade (one state row at
    most); the sessions started before keep their typed patient, with no accession number."""
    row = conn.execute("SELECT patient_name, accession_number, sps_id FROM live_sessions"
                       " WHERE id = 1").fetchone()
    assert tuple(row) == ("Li^Na", "", "")
    for table in ("worklist_items", "worklist_state"):
        assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0
    with pytest.raises(sqlite3.IntegrityError):
        insert(conn, "worklist_state", id=2, state="ok", checked_at=1.0)
    conn.execute("DELETE FROM live_sessions")


def check_v22(conn) -> None:
    """v22: the hospital's times have a table of their own, empty after the upgrade, and each
    one kept counts in the downlink watermark beside verdicts and link checks."""
    assert conn.execute("SELECT COUNT(*) FROM hospital_clock").fetchone()[0] == 0
    insert(conn, "link_checks", seq=1, created_at=6.0, received_at=7.0)
    insert(conn, "hospital_clock", seq=2, created_at=8.0, received_at=7.5)
    from firmware_app.storage import hospital_reviews
    assert hospital_reviews.watermark(conn) == 2
    conn.execute("DELETE FROM link_checks")
    conn.execute("DELETE FROM hospital_clock")


def check_v23(conn) -> None:
    """v23: the kept documents have a table of their own, empty after the upgrade (the
    studies completed before keep none), one row per SOP Instance UID."""
    assert conn.execute("SELECT COUNT(*) FROM kept_documents").fetchone()[0] == 0
    row = dict(sop_instance_uid="1.2.9", study_key="1.2.3", series_instance_uid="1.2.8",
               sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34", kind="sr", modality="SR",
               path="x.dcm", created_at=1.0)
    insert(conn, "kept_documents", **row)
    with pytest.raises(sqlite3.IntegrityError):
        insert(conn, "kept_documents", **row)
    conn.execute("DELETE FROM kept_documents")


def check_v24(conn) -> None:
    """v24: the records outbox is empty after the upgrade (nothing is sent for studies
    completed before), one row per receiver, study, report kind and version."""
    assert conn.execute("SELECT COUNT(*) FROM records_outbox").fetchone()[0] == 0
    row = dict(receiver="his", study_key="1.2.3", report_kind="result", version=1,
               content="{}", state="pending", next_attempt_at=1.0, created_at=1.0)
    insert(conn, "records_outbox", **row)
    with pytest.raises(sqlite3.IntegrityError):
        insert(conn, "records_outbox", **row)
    with pytest.raises(sqlite3.IntegrityError):
        insert(conn, "records_outbox", **{**row, "version": 2, "report_kind": "other"})
    conn.execute("DELETE FROM records_outbox")


def check_v25(conn) -> None:
    """v25: no lookup of earlier studies and no earlier study fetched after the upgrade; one
    lookup per study, in a known state."""
    assert conn.execute("SELECT COUNT(*) FROM prior_lookups").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM prior_studies").fetchone()[0] == 0
    insert(conn, "prior_lookups", study_key="1.2.3", state="asking", asked_at=1.0)
    with pytest.raises(sqlite3.IntegrityError):
        insert(conn, "prior_lookups", study_key="1.2.3", state="asking", asked_at=2.0)
    with pytest.raises(sqlite3.IntegrityError):
        insert(conn, "prior_lookups", study_key="1.2.4", state="lost", asked_at=2.0)
    conn.execute("DELETE FROM prior_lookups")


def check_v26(conn) -> None:
    """v26: no clinic threshold after the upgrade (the package's stand); one per model and
    runtime."""
    assert conn.execute("SELECT COUNT(*) FROM clinic_thresholds").fetchone()[0] == 0
    row = {"model_id": "m@1", "finding": 0.1, "package_finding": 0.13, "state": "calibrated",
           "target_sensitivity": 0.94, "lesions": 20, "clear": 20, "computed_at": 1.0}
    insert(conn, "clinic_thresholds", backend="onnxruntime:onnx/fp32", **row)
    insert(conn, "clinic_thresholds", backend="openvino:openvino-ir/int8", **row)
    with pytest.raises(sqlite3.IntegrityError):
        insert(conn, "clinic_thresholds", backend="onnxruntime:onnx/fp32", **row)
    conn.execute("DELETE FROM clinic_thresholds")


def seed_v26(conn) -> None:
    """Schema 15's rows, and an alert sent at schema 26 with a verdict on it."""
    seed_v15(conn)
    insert(conn, "alerted_studies", study_key="1.2.9", model="ct-lesion", seq=41, at=400.0)


def check_v27(conn) -> None:
    """v27: an alert sent before keeps no image (its verdict labels the study's most
    suspicious image, as before); an alert sent since names its image."""
    assert [tuple(r) for r in conn.execute("SELECT seq, instance_id FROM alerted_studies"
                                           " WHERE study_key = '1.2.9'")] == [(41, None)]
    insert(conn, "alerted_studies", study_key="1.2.8", model="ct-lesion", seq=42, at=500.0,
           instance_id=7)
    assert conn.execute("SELECT instance_id FROM alerted_studies WHERE seq = 42"
                        ).fetchone()[0] == 7
    conn.execute("DELETE FROM alerted_studies WHERE seq = 42")


#: migration N: rows written at schema N-1, and what N promises about them after the ladder
ROWS: dict[int, tuple[Callable[[sqlite3.Connection], None],
                      Callable[[sqlite3.Connection], None]]] = {
    2: (seed_v1, check_v2), 3: (seed_v2, check_v3), 4: (seed_v3, check_v4),
    5: (seed_v4, check_v5), 6: (seed_v5, check_v6), 7: (seed_v6, check_v7),
    8: (seed_v7, check_v8), 9: (seed_v8, check_v9), 10: (seed_v9, check_v10),
    11: (seed_v10, check_v11), 12: (seed_v11, check_v12), 13: (seed_v12, check_v13),
    14: (seed_v13, check_v14),
    15: (seed_v14, check_v15), 16: (seed_v15, check_v16), 17: (seed_v15, check_v17),
    18: (seed_v15, check_v18), 19: (seed_v15, check_v19), 20: (seed_v15, check_v20),
    21: (seed_v20, check_v21), 22: (seed_v15, check_v22), 23: (seed_v15, check_v23),
    24: (seed_v15, check_v24), 25: (seed_v15, check_v25), 26: (seed_v15, check_v26),
    27: (seed_v26, check_v27),
}
