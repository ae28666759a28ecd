"""The outbox (durable, ordered, bounded) and the messages the box builds from its results."""

from __future__ import annotations

import json
import time

import pytest

from clinibox_common.contracts.egress import EgressRefused, check_message
from firmware_app.dicom_out.study_documents import ModelIdentity
from firmware_app.ingest.landing import Lander
from firmware_app.service.appliance import load_runner, model_facts
from firmware_app.service.study_completion import StudyCompleter
from firmware_app.service.worker import Worker
from firmware_app.settings.box import Config
from firmware_app.settings.storage import StorageConfig
from firmware_app.storage import db
from firmware_app.storage.outbox import Outbox
from firmware_app.storage.spool import make_spool
from firmware_app.telemetry.identity import find_study, load_identity, study_ref
from firmware_app.telemetry.messages import (
    ModelFacts,
    build_summary,
    histogram,
    percentiles,
    queue_alerts,
)
from firmware_app.telemetry.service import TelemetryProducer
from tests.canary import write_canary_studies

LABELS = {"lesion"}


def status(state="heartbeat"):
    return {"schema": 1, "created_at": int(time.time()), "state": state, "uptime_s": 5,
            "model": "clinibox-demo-lesion@1.0.0", "software": "0.1.0", "queue_depth": 0,
            "outbox_pending": 0}


def alert(n=0):
    return {"schema": 1, "created_at": int(time.time()), "study_ref": f"{n:032x}",
            "finding": "lesion", "score": 0.95, "threshold": 0.88, "modality": "US",
            "model": "clinibox-demo-lesion@1.0.0", "instances": 1, "processing_ms": 12.0}


def test_alerts_drain_before_status_and_seq_only_grows_across_reopen(conn, tmp_path):
    outbox = Outbox(conn, 100, LABELS)
    s1 = outbox.enqueue("status", status())
    a1 = outbox.enqueue("alert", alert(1))
    a2 = outbox.enqueue("alert", alert(2))
    assert [m.seq for m in outbox.waiting()] == [a1, a2, s1]
    outbox.mark_sent(a1)
    conn.close()
    again = db.connect(tmp_path / "box.db")  # a restart
    reopened = Outbox(again, 100, LABELS)
    assert [m.seq for m in reopened.waiting()] == [a2, s1]
    a3 = reopened.enqueue("alert", alert(3))
    assert a3 > max(a1, a2, s1)
    again.close()


def test_sequence_numbers_are_never_reused_even_after_purge(conn):
    outbox = Outbox(conn, 100, LABELS)
    seqs = [outbox.enqueue("alert", alert(n)) for n in range(3)]
    for seq in seqs:
        outbox.mark_sent(seq)
    assert outbox.purge(audit_seconds=-1) == 3
    assert outbox.enqueue("alert", alert(9)) == seqs[-1] + 1


def test_a_newer_heartbeat_supersedes_an_unsent_one(conn):
    outbox = Outbox(conn, 100, LABELS)
    first = outbox.enqueue("status", status())
    second = outbox.enqueue("status", status())
    assert [m.seq for m in outbox.waiting()] == [second]
    states = dict(conn.execute("SELECT seq, state FROM outbox").fetchall())
    assert states[first] == "superseded"
    assert outbox.counter("dropped_total") == 0


def test_bound_drops_metrics_before_alerts_and_counts_it(conn, caplog):
    outbox = Outbox(conn, 4, LABELS)
    alerts = [outbox.enqueue("alert", alert(n)) for n in range(3)]
    summary_like = outbox.enqueue("status", status())
    newest = outbox.enqueue("alert", alert(3))  # 5 waiting > 4: the status goes
    waiting = [m.seq for m in outbox.waiting()]
    assert waiting == [*alerts, newest] and summary_like not in waiting
    assert outbox.counter("dropped_total") == 1
    assert "dropped status" in caplog.text
    outbox.enqueue("alert", alert(4))  # only alerts left: the oldest alert goes
    assert outbox.waiting()[0].seq == alerts[1]
    assert outbox.counter("dropped_total") == 2
    events = [r[0] for r in conn.execute("SELECT message FROM events")]
    assert sum("outbox full" in e for e in events) == 2


def test_the_gate_runs_before_anything_is_stored(conn):
    outbox = Outbox(conn, 100, LABELS)
    with pytest.raises(EgressRefused):
        outbox.enqueue("alert", {**alert(), "patient": "DOE^JANE"})
    assert outbox.pending_count() == 0
    assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0


def test_audit_lists_waiting_and_recent_messages_exactly(conn):
    outbox = Outbox(conn, 100, LABELS)
    payload = alert(5)
    seq = outbox.enqueue("alert", payload)
    outbox.mark_sent(seq)
    waiting = outbox.enqueue("status", status())
    rows = outbox.audit(since=time.time() - 60)
    assert [(r["seq"], r["state"]) for r in rows] == [(seq, "sent"), (waiting, "pending")]
    assert rows[0]["payload"] == payload
    assert outbox.audit(since=time.time() + 60)[0]["seq"] == waiting  # pending always listed


def test_histogram_and_percentiles():
    assert histogram([0.0, 0.05, 0.5, 0.99, 1.0, 1.7]) == [2, 0, 0, 0, 0, 1, 0, 0, 0, 3]
    assert histogram([]) == [0] * 10
    figures = percentiles([float(v) for v in range(1, 101)])
    assert figures["max"] == 100.0 and 49 < figures["p50"] < 52 and figures["p99"] > 98


def test_study_ref_is_keyed():
    assert study_ref(b"k" * 32, "1.2.3") != study_ref(b"j" * 32, "1.2.3")
    assert len(study_ref(b"k" * 32, "1.2.3")) == 32


@pytest.fixture(scope="module")
def runner():
    config = Config()
    config.runtime.backend = "onnxruntime"
    return load_runner(config)


def test_canary_studies_give_alerts_and_a_summary_free_of_identifiers(tmp_path, runner):
    config = Config(storage=StorageConfig(state_dir=str(tmp_path / "state")))
    config.telemetry.summary_seconds = 1
    conn = db.connect(config.database_path)
    db.initialise(conn)
    spool = make_spool(config)
    lander = Lander(spool, config.database_path, 64 * 2**20)
    worker = Worker(config, spool, runner)
    canaries = write_canary_studies(tmp_path / "in", 6, lesion=True)
    for path in canaries.files:
        lander.land(path.read_bytes(), sop_instance_uid=None, source="usb", origin="stick")
    while worker.run_once():
        pass
    producer = TelemetryProducer(config, load_identity(config), model_facts(runner.package))
    producer.tick(now=time.time() + 5)
    # an alert waits until its study is complete (no instance for stable_seconds)
    assert conn.execute("SELECT COUNT(*) FROM alerted_studies").fetchone()[0] == 0
    completer = StudyCompleter(config, ModelIdentity.from_manifest(runner.package.manifest),
                               producer.identity.device)
    assert completer.tick(now=time.time() + 1) == 0  # not stable yet
    assert completer.tick(now=time.time() + config.studies.stable_seconds + 1) == 6
    producer.tick(now=time.time() + 5)
    alerted = conn.execute("SELECT study_key FROM alerted_studies").fetchall()
    assert alerted, "lesion phantoms above the alert threshold must raise alerts"
    rows = producer.outbox.audit(since=0)
    kinds = [r["kind"] for r in rows]
    assert kinds.count("alert") == len(alerted) and "summary" in kinds
    text = json.dumps(rows).encode()
    assert canaries.found_in(text) == []
    assert b"1.2.826" not in text
    summary = next(r["payload"] for r in rows if r["kind"] == "summary")
    check_message("summary", summary, LABELS)
    assert summary["instances"] == 6 and summary["studies"] == 6
    assert sum(summary["confidence_histogram"]) == 6
    assert sum(summary["modalities"].values()) == 6 and set(summary["modalities"]) == {"CT", "US"}
    stored = dict(conn.execute("SELECT assessment, COUNT(*) FROM results GROUP BY assessment")
                  .fetchall())
    assert summary["assessments"] == stored and sum(summary["assessments"].values()) == 6
    assert 0 < summary["intensity"]["mean"] < 1 and summary["latency_ms"]["max"] > 0
    # the clinic can find the study from an alert's reference; nobody else can
    ref = next(r["payload"]["study_ref"] for r in rows if r["kind"] == "alert")
    assert find_study(conn, producer.identity, ref) in {a[0] for a in alerted}
    # each alert carries its top image's assessment and the lesions of its study's images
    # assessed "finding", as stored (size: the long axis in mm the study page shows)
    for alert in (r["payload"] for r in rows if r["kind"] == "alert"):
        study_key = find_study(conn, producer.identity, alert["study_ref"])
        stored = [lesion for (text,) in conn.execute(
            "SELECT r.lesions_json FROM results r JOIN instances i ON i.id = r.instance_id"
            " WHERE i.study_instance_uid = ? AND r.assessment = 'finding'", (study_key,))
            for lesion in json.loads(text)]
        assert alert["assessment"] == "finding" and stored
        assert sorted((lesion["score"], lesion.get("size_mm")) for lesion in alert["lesions"]) \
            == sorted((round(s["probability"], 4), round(s["long_axis_mm"], 1)
                       if s["units"] == "mm" else None) for s in stored)
        assert [lesion["score"] for lesion in alert["lesions"]] \
            == sorted((lesion["score"] for lesion in alert["lesions"]), reverse=True)
        assert {lesion["label"] for lesion in alert["lesions"]} == LABELS
    assert any("size_mm" in lesion for r in rows if r["kind"] == "alert"
               for lesion in r["payload"]["lesions"])
    # one alert per study (and model: one runs here): a second tick queues nothing new
    assert queue_alerts(conn, producer.outbox, producer.identity, producer.model) == 0
    conn.close()


def test_summary_reports_drops_once_and_feedback(tmp_path, runner, conn):
    outbox = Outbox(conn, 10, LABELS)
    for n in range(12):
        outbox.enqueue("alert", alert(n))
    conn.execute("INSERT INTO instances(local_id, source, spool_path, size_bytes, status,"
                 " received_at, updated_at) VALUES ('x', 'usb', 'p', 1, 'processed', 0, 0)")
    now = time.time()
    for verdict in ("agree", "agree", "disagree", "unsure"):
        conn.execute("INSERT INTO feedback(instance_id, verdict, at) VALUES (1, ?, ?)",
                     (verdict, now))
    facts = model_facts(runner.package)
    first = build_summary(conn, outbox, facts, (now - 10, now + 1), 10.0, tmp_path)
    assert first["outbox_dropped"] == 2 and first["outbox_pending"] == 10
    assert first["feedback"] == {"agree": 2, "disagree": 1, "unsure": 1}
    check_message("summary", first, LABELS)
    second = build_summary(conn, outbox, facts, (now + 1, now + 2), 11.0, tmp_path)
    assert second["outbox_dropped"] == 0


def test_summary_counts_images_no_model_is_meant_for_apart_from_quarantine(
        tmp_path, runner, conn):
    now = time.time()
    for n, status in enumerate(("not_analysed", "not_analysed", "quarantined")):
        conn.execute("INSERT INTO instances(local_id, source, spool_path, size_bytes, status,"
                     " received_at, updated_at) VALUES (?, 'dicom', 'p', 1, ?, ?, ?)",
                     (f"x{n}", status, now, now))
    summary = build_summary(conn, Outbox(conn, 10, LABELS), model_facts(runner.package),
                            (now - 10, now + 1), 10.0, tmp_path)
    check_message("summary", summary, LABELS)
    assert (summary["not_analysed"], summary["quarantined"]) == (2, 1)


def test_a_reinstalled_box_numbers_above_its_earlier_installation(tmp_path):
    first_db = db.connect(tmp_path / "first.db")
    db.initialise(first_db)
    old = [Outbox(first_db, 100, LABELS).enqueue("alert", alert(n)) for n in range(50)]
    first_db.close()
    assert old[0] >= int((time.time() - 60) * 1_000_000)  # starts at the clock, in µs
    time.sleep(0.01)
    wiped = db.connect(tmp_path / "reinstalled.db")  # the state was wiped: a fresh database
    db.initialise(wiped)
    db.initialise(wiped)  # initialising again changes nothing
    assert Outbox(wiped, 100, LABELS).enqueue("alert", alert(99)) > max(old)
    wiped.close()


def test_a_box_waiting_for_its_model_sends_summaries_and_heartbeats(tmp_path, monkeypatch):
    """A new box with no model yet (its model id is "") still counts what it received, and
    its status keeps going out: a summary due at once (a clock moved forward a year by the
    stick's bundle, or simply an hour without a model) once stopped every heartbeat."""
    config = Config(storage=StorageConfig(state_dir=str(tmp_path / "state")))
    conn = db.connect(config.database_path)
    db.initialise(conn)
    conn.execute("INSERT INTO instances(local_id, source, spool_path, size_bytes, status,"
                 " received_at, updated_at) VALUES ('x', 'dicom', 'p', 1, 'received', 0, 0)")
    conn.commit()
    waiting = ModelFacts("", (), 1.0, waiting_for_model="not_installed")
    producer = TelemetryProducer(config, load_identity(config), waiting)
    later = time.time() + 366 * 86400
    assert producer.tick(now=later) == 2
    kinds = {m.kind: m.payload for m in producer.outbox.waiting()}
    assert set(kinds) == {"summary", "status"}
    assert "model" not in kinds["summary"]
    check_message("summary", kinds["summary"], set())
    # and a summary the outbox refuses never holds the heartbeat back
    from firmware_app.telemetry import service

    def refused(*args, **kwargs):
        return {**build_summary(*args, **kwargs), "model": "not a model id"}

    monkeypatch.setattr(service, "build_summary", refused)
    producer.next_heartbeat = 0.0
    assert producer.tick(now=later + 2 * config.telemetry.summary_seconds) == 1  # the status
    assert [m.kind for m in producer.outbox.waiting()].count("summary") == 1
    conn.close()
