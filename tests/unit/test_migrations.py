"""Schema upgrades keep what the box holds.

v2 → v3: stable study ids, feedback per finding. v3 → v4: instances record
when retention deleted their image (and its size in pixels); a table of
retention passes. v4 → v5: results carry their assessment, lesion records and
class probabilities. v7 → v8: alerts are kept per study and model. v8 → v9: the
access audit trail (tables, anchor, triggers).
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage import db

V2_STUDIES = """
CREATE TABLE studies (
    study_key TEXT PRIMARY KEY, modality TEXT, instances INTEGER NOT NULL,
    max_probability REAL NOT NULL, findings INTEGER NOT NULL, alert INTEGER NOT NULL,
    top_instance_id INTEGER, warnings INTEGER NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE feedback (
    id INTEGER PRIMARY KEY, instance_id INTEGER NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('agree', 'disagree')), at REAL NOT NULL);
"""


def _v2_database(path) -> None:
    conn = db.connect(path)
    db.initialise(conn)
    conn.executescript("DROP TABLE studies; DROP TABLE feedback; DROP TABLE accounts;"
                       "DROP TABLE web_sessions; DROP TABLE login_failures;" + V2_STUDIES)
    for n, p in ((1, 0.9), (2, 0.2)):
        conn.execute("INSERT INTO instances(id, local_id, study_instance_uid, modality, source,"
                     " spool_path, size_bytes, status, received_at, updated_at)"
                     f" VALUES ({n}, 'l{n}', '1.2.{n}', 'CT', 'dicom', 'p', 1, 'processed',"
                     f" {100 * n}, 0)")
        conn.execute("INSERT INTO results(instance_id, model_id, backend, probability, finding,"
                     " alert, findings_json, warnings_json, key_frame, frames_inferred,"
                     f" timings_json, created_at) VALUES ({n}, 'm@1', 'ort', {p}, {int(p > .5)},"
                     f" {int(p > .8)}, '[]', '[]', 0, 1, '{{}}', 0)")
    conn.execute("INSERT INTO studies VALUES ('1.2.1', 'CT', 1, 0.9, 1, 1, 1, 0, 0)")
    conn.executemany("INSERT INTO feedback(instance_id, verdict, at) VALUES (1, ?, 5)",
                     [("agree",), ("disagree",)])
    conn.execute("PRAGMA user_version=2")
    conn.close()


def test_v2_database_is_upgraded_in_place(tmp_path):
    path = tmp_path / "box.db"
    _v2_database(path)
    conn = db.open_database(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION == 13
    studies = conn.execute("SELECT id, study_key, alert, received_at FROM studies"
                           " ORDER BY study_key").fetchall()
    assert [(r["study_key"], r["alert"], r["received_at"]) for r in studies] == [
        ("1.2.1", 1, 100.0), ("1.2.2", 0, 200.0)]  # rolled up again from the results
    feedback = conn.execute("SELECT instance_id, finding, verdict, account_id FROM feedback"
                            " ORDER BY id").fetchall()
    assert [tuple(r) for r in feedback] == [(1, -1, "agree", None), (1, -1, "disagree", None)]
    conn.execute("INSERT INTO feedback(instance_id, finding, verdict, at)"
                 " VALUES (1, 0, 'unsure', 6)")
    assert conn.execute("SELECT COUNT(*) FROM accounts").fetchone()[0] == 0
    conn.close()
    again = db.open_database(path)  # opening an upgraded database changes nothing
    assert again.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 3
    again.close()


#: what v9 added: the audit trail
V9_ONLY = """
DROP TRIGGER audit_rows_are_not_changed; DROP TRIGGER audit_rows_are_only_pruned;
DROP TRIGGER audit_anchor_is_kept; DROP TRIGGER audit_anchor_only_moves_on;
DROP TABLE audit; DROP TABLE audit_anchor;
DELETE FROM sqlite_sequence WHERE name = 'audit';
"""

#: what v8 changed: alerted_studies keyed by study only, no studies.alerts_done_at
V8_ONLY = V9_ONLY + """
ALTER TABLE studies DROP COLUMN alerts_done_at;
DROP TABLE alerted_studies;
CREATE TABLE alerted_studies (study_key TEXT PRIMARY KEY, seq INTEGER NOT NULL, at REAL NOT NULL);
"""

V4_ONLY = """
DROP INDEX instances_image_present; DROP INDEX instances_image_deleted;
DROP TABLE retention_passes;
ALTER TABLE instances DROP COLUMN image_deleted_at;
ALTER TABLE instances DROP COLUMN image_rows;
ALTER TABLE instances DROP COLUMN image_columns;
ALTER TABLE results DROP COLUMN assessment;
ALTER TABLE results DROP COLUMN assessment_reason;
ALTER TABLE results DROP COLUMN lesions_json;
ALTER TABLE results DROP COLUMN classes_json;
ALTER TABLE studies DROP COLUMN not_assessable;
""" + V8_ONLY


def _v3_database(path) -> None:
    """A v3 box (the current schema less what v4 and v5 added) holding two studies."""
    conn = db.connect(path)
    db.initialise(conn)
    from firmware_app.storage.study_rollup import update_study

    for n, p in ((1, 0.9), (2, 0.2)):
        conn.execute("INSERT INTO instances(id, local_id, study_instance_uid, modality, source,"
                     " spool_path, size_bytes, status, received_at, updated_at)"
                     f" VALUES ({n}, 'l{n}', '1.2.{n}', 'CT', 'dicom', 'p{n}', 10, 'processed',"
                     f" {100 * n}, {100 * n})")
        conn.execute("INSERT INTO results(instance_id, model_id, backend, probability, finding,"
                     " alert, findings_json, warnings_json, key_frame, frames_inferred,"
                     f" timings_json, created_at) VALUES ({n}, 'm@1', 'ort', {p}, {int(p > .5)},"
                     f" {int(p > .8)}, '[]', '[]', 0, 1, '{{}}', {100 * n + 1})")
        update_study(conn, f"1.2.{n}", "CT", {"patient_name": f"P^{n}"}, 300.0)
    conn.execute("UPDATE studies SET id = id + 40")  # ids the viewer has linked to
    conn.executescript(V4_ONLY)  # rolled up above with today's code, then made v3
    assert "image_deleted_at" not in db._columns(conn, "instances")
    conn.execute("INSERT INTO instances(id, local_id, source, spool_path, size_bytes, status,"
                 " received_at, updated_at) VALUES (3, 'l3', 'usb', 'p3', 5, 'queued', 400, 400)")
    conn.execute("INSERT INTO feedback(instance_id, finding, verdict, at)"
                 " VALUES (1, 0, 'agree', 5)")
    conn.execute("INSERT INTO alerted_studies VALUES ('1.2.1', 7, 250)")
    conn.execute("INSERT INTO telemetry_state VALUES ('summary_end', 260)")
    conn.execute("PRAGMA user_version=3")
    conn.close()


def test_v3_database_is_upgraded_in_place(tmp_path):
    path = tmp_path / "box.db"
    _v3_database(path)
    conn = db.open_database(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION == 13
    rows = conn.execute("SELECT id, status, spool_path, image_deleted_at, image_rows,"
                        " image_columns FROM instances ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [(1, "processed", "p1", None, None, None),
                                        (2, "processed", "p2", None, None, None),
                                        (3, "queued", "p3", None, None, None)]  # all present
    studies = conn.execute("SELECT id, study_key, patient_name, alert FROM studies"
                           " ORDER BY id").fetchall()
    assert [tuple(r) for r in studies] == [(41, "1.2.1", "P^1", 1), (42, "1.2.2", "P^2", 0)]
    assert conn.execute("SELECT SUM(not_assessable) FROM studies").fetchone()[0] == 0  # v5
    assert conn.execute("SELECT SUM(outside_range) FROM studies").fetchone()[0] == 0  # v6
    assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2
    assessments = conn.execute("SELECT instance_id, assessment, assessment_reason, lesions_json,"
                               " classes_json FROM results ORDER BY instance_id").fetchall()
    assert [tuple(r) for r in assessments] == [(1, "finding", "", "[]", "{}"),
                                               (2, "no_finding", "", "[]", "{}")]  # v5
    assert conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 1
    alerted = conn.execute("SELECT study_key, model, seq, at FROM alerted_studies").fetchall()
    assert [tuple(r) for r in alerted] == [("1.2.1", "m", 7, 250.0)]  # v8: by study and model
    assert conn.execute("SELECT COUNT(*) FROM retention_passes").fetchone()[0] == 0
    plan = " ".join(r[3] for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM instances WHERE image_deleted_at IS NULL"
        " ORDER BY received_at"))
    assert "instances_image_present" in plan
    plan = " ".join(r[3] for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM studies WHERE patient_id = ? AND id != ?"
        " ORDER BY study_date DESC, received_at DESC LIMIT 1", ("P1", 1)))
    assert "studies_patient" in plan  # the previous study is found without a scan
    conn.execute("UPDATE instances SET image_deleted_at = 500, image_rows = 64 WHERE id = 1")
    conn.close()
    again = db.open_database(path)  # opening an upgraded database changes nothing
    assert again.execute("SELECT image_deleted_at, image_rows FROM instances WHERE id = 1"
                         ).fetchone()[:] == (500.0, 64)
    assert again.execute("SELECT COUNT(*) FROM studies").fetchone()[0] == 2
    again.close()


def test_v2_database_reaches_v4_with_its_instances_present(tmp_path):
    path = tmp_path / "box.db"
    _v2_database(path)
    conn = db.open_database(path)
    columns = db._columns(conn, "instances")
    assert {"image_deleted_at", "image_rows", "image_columns"} <= columns
    assert conn.execute("SELECT COUNT(*) FROM instances WHERE image_deleted_at IS NULL"
                        ).fetchone()[0] == 2
    conn.close()


def test_study_ids_stay_when_a_study_gains_instances(conn):
    from firmware_app.storage.study_rollup import update_study

    for n in (1, 2):
        conn.execute("INSERT INTO instances(id, local_id, study_instance_uid, source, spool_path,"
                     f" size_bytes, status, received_at, updated_at) VALUES ({n}, 'l{n}', 'S',"
                     " 'dicom', 'p', 1, 'processed', 1, 1)")
        conn.execute("INSERT INTO results(instance_id, model_id, backend, probability, finding,"
                     " alert, findings_json, warnings_json, key_frame, frames_inferred,"
                     f" timings_json, created_at) VALUES ({n}, 'm', 'b', 0.{n}, 0, 0, '[]',"
                     " '[]', 0, 1, '{}', 1)")
        update_study(conn, "S", "CT", {"patient_name": "A^B"} if n == 1 else {}, 2.0)
        if n == 1:
            first = conn.execute("SELECT id FROM studies WHERE study_key='S'").fetchone()[0]
    row = conn.execute("SELECT id, instances, patient_name, max_probability FROM studies"
                       " WHERE study_key='S'").fetchone()
    assert row["id"] == first and row["instances"] == 2
    assert row["patient_name"] == "A^B"  # kept when the newer instance has none
    assert abs(row["max_probability"] - 0.2) < 1e-9


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "box.db"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version=99")
    raw.close()
    conn = db.connect(path)
    try:
        db.initialise(conn)
    except RuntimeError as exc:
        assert "newer than this software" in str(exc)
    else:
        raise AssertionError("a newer schema was accepted")
    finally:
        conn.close()


def _v7_database(path) -> None:
    """A v7 box with two complete alerting studies: 1.2.1, analysed by two models (CT and
    US), alerted once (v7: one alert per study, naming its top instance's model); 1.2.2,
    whose alert was not queued yet when the box was upgraded."""
    from firmware_app.storage.study_rollup import update_study

    conn = db.connect(path)
    db.initialise(conn)
    for n, study, modality, model, p in ((1, "1.2.1", "CT", "ct-lesion@1.0.0", 0.9),
                                         (2, "1.2.1", "US", "us-lesion@2.0.0", 0.7),
                                         (3, "1.2.2", "CT", "ct-lesion@1.0.0", 0.95)):
        conn.execute("INSERT INTO instances(id, local_id, study_instance_uid, modality, source,"
                     " spool_path, size_bytes, status, received_at, updated_at)"
                     f" VALUES ({n}, 'l{n}', '{study}', '{modality}', 'dicom', 'p{n}', 10,"
                     f" 'processed', {100 * n}, {100 * n})")
        conn.execute("INSERT INTO results(instance_id, model_id, backend, probability, finding,"
                     " alert, findings_json, warnings_json, key_frame, frames_inferred,"
                     f" timings_json, created_at) VALUES ({n}, '{model}', 'ort', {p}, 1, 1,"
                     f" '[]', '[]', 0, 1, '{{\"total\": 5}}', {100 * n + 1})")
        update_study(conn, study, modality, {}, 100 * n + 1)
    conn.execute("UPDATE studies SET completed_at = updated_at, completions = 1")
    conn.executescript(V8_ONLY)
    conn.execute("INSERT INTO alerted_studies VALUES ('1.2.1', 7, 250)")
    conn.execute("PRAGMA user_version=7")
    conn.close()


def test_v7_alerts_are_kept_per_study_and_model(tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from firmware_app.storage.outbox import Outbox
    from firmware_app.storage.telemetry import period_counts
    from firmware_app.telemetry.identity import DeviceIdentity
    from firmware_app.telemetry.messages import ModelFacts, queue_alerts

    path = tmp_path / "box.db"
    _v7_database(path)
    conn = db.open_database(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION == 13
    alerted = conn.execute("SELECT study_key, model, seq, at FROM alerted_studies").fetchall()
    assert [tuple(r) for r in alerted] == [("1.2.1", "ct-lesion", 7, 250.0)]  # its top model
    # the alerted study's alerts count as queued (retention may delete its images)
    done = conn.execute("SELECT study_key, alerts_done_at = completed_at FROM studies"
                        " ORDER BY study_key").fetchall()
    assert [tuple(r) for r in done] == [("1.2.1", 1), ("1.2.2", None)]
    assert period_counts(conn, 0, 300)["alerts"] == 1  # the alert sent before still counts
    # the producer sends the alert that was waiting, and no late alert for the second
    # model of the study alerted before the upgrade
    facts = ModelFacts("ct-lesion@1.0.0", ("lesion",), 0.8)
    identity = DeviceIdentity("clinic-1", "box-1", Ed25519PrivateKey.generate(), b"s" * 32)
    outbox = Outbox(conn, 100, set(facts.labels))
    assert queue_alerts(conn, outbox, identity, facts) == 1
    (message,) = outbox.audit(since=0)
    assert message["payload"]["study_ref"] == identity.study_ref("1.2.2")
    assert queue_alerts(conn, outbox, identity, facts) == 0
    conn.close()
    again = db.open_database(path)  # opening an upgraded database changes nothing
    assert again.execute("SELECT COUNT(*) FROM alerted_studies").fetchone()[0] == 2
    again.close()


def test_v8_database_gains_the_audit_trail(tmp_path):
    from firmware_app.storage import audit
    from firmware_app.storage.audit_chain import verify
    from firmware_app.storage.audit_schema import TRIGGERS

    path = tmp_path / "box.db"
    conn = db.connect(path)
    db.initialise(conn)
    conn.execute("INSERT INTO accounts(name, role, password_hash, created_at, changed_at)"
                 " VALUES ('tina', 'technician', 'x', 1, 1)")
    conn.executescript(V9_ONLY)
    conn.execute("PRAGMA user_version=8")
    assert "audit" not in db._tables(conn)
    conn.close()
    conn = db.open_database(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION == 13
    assert {"audit", "audit_anchor"} <= db._tables(conn)
    triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    assert set(TRIGGERS) <= triggers
    assert conn.execute("SELECT COUNT(*) FROM accounts").fetchone()[0] == 1  # kept
    assert verify(conn).describe() == "intact (0 rows)"
    assert audit.record(conn, "login", account="tina", address="10.0.0.7") == 1
    conn.close()
    again = db.open_database(path)  # opening an upgraded database changes nothing
    assert again.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 1
    assert verify(again).intact
    again.close()


def test_v9_database_gains_the_accounts_language(tmp_path):
    """v10: each account keeps the viewer language its user chose ('' until one is chosen)."""
    from firmware_app.storage.accounts import Accounts

    path = tmp_path / "box.db"
    conn = db.connect(path)
    db.initialise(conn)
    conn.execute("ALTER TABLE accounts DROP COLUMN language")  # as a v9 box has it
    conn.execute("INSERT INTO accounts(name, role, password_hash, created_at, changed_at)"
                 " VALUES ('carl', 'clinician', 'x', 1, 1)")
    conn.execute("PRAGMA user_version=9")
    conn.close()
    conn = db.open_database(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION == 13
    [carl] = Accounts(conn).all()
    assert (carl.name, carl.language) == ("carl", "")
    Accounts(conn).set_language(carl.id, "zh_CN")
    conn.close()
    again = db.open_database(path)  # opening an upgraded database changes nothing
    assert Accounts(again).get(carl.id).language == "zh_CN"
    again.close()


def test_v10_studies_gain_their_clinical_order_without_being_completed_again(tmp_path):
    """v11: a study's band and the probability it is ranked by come from the images the
    model gave a result for; an image outside the validated range at 0.96 ranks below a
    finding at 0.30 and shows no probability. The rows' times stay, so nothing is completed
    or sent to the PACS again."""
    path = tmp_path / "box.db"
    conn = db.connect(path)
    db.initialise(conn)
    for n, (study, probability, finding, assessment) in enumerate((
            ("outside", 0.96, 0, "outside_validated_range"), ("found", 0.30, 1, "finding"),
            ("blank", 0.0, 0, "not_assessable"), ("clear", 0.05, 0, "no_finding")), start=1):
        conn.execute("INSERT INTO instances(id, local_id, study_instance_uid, status,"
                     " spool_path, size_bytes, received_at, updated_at, source)"
                     " VALUES (?, ?, ?, 'processed', '', 1, ?, ?, 'dicom')",
                     (n, f"l{n}", study, n, n))
        conn.execute("INSERT INTO results(instance_id, model_id, backend, probability, finding,"
                     " alert, findings_json, warnings_json, key_frame, frames_inferred,"
                     " timings_json, created_at, assessment)"
                     " VALUES (?, 'm', 'b', ?, ?, 0, '[]', '[]', 0, 1, '{}', ?, ?)",
                     (n, probability, finding, n, assessment))
        conn.execute("INSERT INTO studies(study_key, instances, max_probability, findings,"
                     " alert, warnings, received_at, updated_at, completed_at)"
                     " VALUES (?, 1, ?, ?, 0, 0, ?, ?, ?)", (study, probability, finding, n,
                                                             n, n))
    conn.execute("DROP INDEX studies_clinical_order")  # as a v10 box has it
    conn.execute("ALTER TABLE studies DROP COLUMN band")
    conn.execute("ALTER TABLE studies DROP COLUMN suspicion")
    conn.execute("CREATE INDEX studies_suspicion ON studies(alert DESC, max_probability DESC,"
                 " received_at DESC)")
    conn.execute("PRAGMA user_version=10")
    conn.close()
    conn = db.open_database(path)
    rows = conn.execute("SELECT study_key, band, suspicion, updated_at, completed_at"
                        " FROM studies ORDER BY band, suspicion DESC, received_at DESC").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("found", 1, 0.30), ("blank", 2, None), ("outside", 2, None), ("clear", 3, 0.05)]
    assert all(r[3] == r[4] for r in rows)  # times untouched: not completed again
    assert "studies_suspicion" not in {r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index'")}
    conn.close()
