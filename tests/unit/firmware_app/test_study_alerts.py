"""A complete study's alerts: one per study and model (by name), each once.

Real SQLite: results stored by the box's ``ResultStore``, completions recorded as
the study completion records them, alerts queued by the telemetry producer's own
``queue_alerts`` into the real outbox (which checks every payload against the
egress schema). Two models as routing rules run them: one for CT, one for
ultrasound, each with its own labels and alert threshold.
"""

from __future__ import annotations

import time
from sqlite3 import Connection

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from clinibox_common.contracts.egress import SCHEMAS, check_message
from engine.inference.aggregate import InstanceFindings
from engine.inference.postprocess import Box
from firmware_app.storage import db
from firmware_app.storage.outbox import Outbox
from firmware_app.storage.results import ResultStore
from firmware_app.storage.study_completion import mark_completed
from firmware_app.storage.telemetry import period_counts
from firmware_app.telemetry.identity import DeviceIdentity
from firmware_app.telemetry.messages import ModelFacts, queue_alerts

CT_MODEL, US_MODEL = "ct-lesion@1.0.0", "us-lesion@2.0.0"
US_FACTS = ModelFacts(US_MODEL, ("nodule",), 0.6)
#: the box's own model (CT) and the routed one (US); every label passes the egress gate
FACTS = ModelFacts(CT_MODEL, ("lesion", "nodule"), 0.8, (US_FACTS,))
THRESHOLDS = {"ct-lesion": 0.8, "us-lesion": 0.6}
LABELS = {"ct-lesion": "lesion", "us-lesion": "nodule"}
STUDY = "1.2.826.0.1.3680043.8.498.1"
IDENTITY = DeviceIdentity("clinic-1", "box-1", Ed25519PrivateKey.generate(), b"s" * 32,
                          X25519PrivateKey.generate())


def analysed(conn: Connection, model_id: str, probability: float, *, study: str = STUDY,
             modality: str | None = None) -> int:
    """Receive one instance of ``study`` and store ``model_id``'s result on it, as the
    worker does (its alert flag by that model's own threshold)."""
    name = model_id.partition("@")[0]
    now = time.time()
    instance = conn.execute(
        "INSERT INTO instances(local_id, source, spool_path, size_bytes, status, received_at,"
        " updated_at) VALUES (?, 'dicom', 'p', 1, 'processing', ?, ?)",
        (f"l{now}-{probability}", now, now)).lastrowid
    boxes = [Box(2.0, 2.0, 20.0, 20.0, probability, LABELS[name])] if probability >= 0.5 else []
    ResultStore(conn).complete(
        instance_id=instance,
        identity={"study_instance_uid": study,
                  "modality": modality or ("US" if name == "us-lesion" else "CT")},
        findings=InstanceFindings(probability=probability, finding=probability >= 0.5,
                                  alert=probability >= THRESHOLDS[name], boxes=boxes,
                                  heatmap=None, key_frame=0),
        warnings=[], model_id=model_id, backend="onnxruntime/fp32", frames_inferred=1,
        timings={"total": 12.5})
    return instance


def complete(conn: Connection, study: str = STUDY) -> None:
    """Record a completion of the study now (as the study completion does once it is stable)."""
    (study_id,) = conn.execute("SELECT id FROM studies WHERE study_key = ?", (study,)).fetchone()
    with db.transaction(conn):
        mark_completed(conn, study_id, time.time())


@pytest.fixture
def outbox(conn: Connection) -> Outbox:
    """The real outbox, gating alerts with every running model's labels."""
    return Outbox(conn, 1000, set(FACTS.labels))


def alerts(conn: Connection, outbox: Outbox) -> list[dict]:
    """Queue what is due; return the alert payloads queued by this call, by model id."""
    before = {m["seq"] for m in outbox.audit(since=0)}
    queued = queue_alerts(conn, outbox, IDENTITY, FACTS)
    new = [m["payload"] for m in outbox.audit(since=0)
           if m["kind"] == "alert" and m["seq"] not in before]
    assert queued == len(new)
    return sorted(new, key=lambda p: p["model"])


def test_two_models_on_one_study_give_two_alerts_each_once(conn, outbox):
    analysed(conn, CT_MODEL, 0.91)
    analysed(conn, CT_MODEL, 0.30)
    analysed(conn, US_MODEL, 0.65)
    analysed(conn, US_MODEL, 0.72)
    assert alerts(conn, outbox) == []  # not complete yet: no alert
    complete(conn)
    ct, us = alerts(conn, outbox)
    for payload in (ct, us):
        check_message("alert", payload, FACTS.labels)
        assert set(payload) == set(SCHEMAS["alert"].fields)
        assert payload["study_ref"] == IDENTITY.study_ref(STUDY)
    # each alert is its own model's: id, top probability, threshold, finding, its instances
    assert {k: ct[k] for k in ("model", "score", "threshold", "finding", "modality",
                               "instances", "processing_ms")} == {
        "model": CT_MODEL, "score": 0.91, "threshold": 0.8, "finding": "lesion",
        "modality": "CT", "instances": 2, "processing_ms": 12.5}
    assert {k: us[k] for k in ("model", "score", "threshold", "finding", "modality",
                               "instances")} == {
        "model": US_MODEL, "score": 0.72, "threshold": 0.6, "finding": "nodule",
        "modality": "US", "instances": 2}
    assert alerts(conn, outbox) == []  # each once
    complete(conn)  # completed again without a new instance: still nothing
    assert alerts(conn, outbox) == []
    rows = conn.execute("SELECT study_key, model FROM alerted_studies ORDER BY model").fetchall()
    assert [tuple(r) for r in rows] == [(STUDY, "ct-lesion"), (STUDY, "us-lesion")]
    # each alert keeps the image it was about, its model's most suspicious: what the hospital's
    # verdict on it labels
    about = conn.execute("SELECT r.probability FROM alerted_studies a JOIN results r"
                         " ON r.instance_id = a.instance_id ORDER BY a.model").fetchall()
    assert [r[0] for r in about] == [0.91, 0.72]
    assert period_counts(conn, 0, time.time() + 1)["alerts"] == 2  # alerts sent, not studies


def test_one_model_on_a_study_gives_one_alert_however_many_instances(conn, outbox):
    for probability in (0.95, 0.85, 0.2, 0.9):
        analysed(conn, CT_MODEL, probability)
    analysed(conn, US_MODEL, 0.3)  # the other model finds nothing to alert on here
    complete(conn)
    (alert,) = alerts(conn, outbox)
    assert (alert["model"], alert["score"], alert["instances"]) == (CT_MODEL, 0.95, 4)
    assert alerts(conn, outbox) == []


def test_a_late_instance_never_alerts_the_same_model_again(conn, outbox):
    analysed(conn, CT_MODEL, 0.85)
    complete(conn)
    assert [a["model"] for a in alerts(conn, outbox)] == [CT_MODEL]
    analysed(conn, CT_MODEL, 0.99)  # later, and more suspicious
    assert alerts(conn, outbox) == []
    complete(conn)  # its next completion (a new SR version): no second alert
    assert alerts(conn, outbox) == []
    # a late instance of another model alerting waits for the completion, then alerts once
    analysed(conn, US_MODEL, 0.7)
    assert alerts(conn, outbox) == []
    complete(conn)
    assert [(a["model"], a["score"]) for a in alerts(conn, outbox)] == [(US_MODEL, 0.7)]
    assert alerts(conn, outbox) == []
    assert conn.execute("SELECT COUNT(*) FROM alerted_studies").fetchone()[0] == 2


def test_a_new_version_of_the_model_does_not_alert_the_study_again(conn, outbox):
    analysed(conn, CT_MODEL, 0.85)
    complete(conn)
    assert len(alerts(conn, outbox)) == 1
    analysed(conn, "ct-lesion@1.1.0", 0.97)  # the model was upgraded meanwhile
    complete(conn)
    assert alerts(conn, outbox) == []
    # a study both versions analysed alerts once, naming the version of its top instance
    other = "1.2.826.0.1.3680043.8.498.2"
    analysed(conn, CT_MODEL, 0.82, study=other)
    analysed(conn, "ct-lesion@1.1.0", 0.9, study=other)
    complete(conn, other)
    (alert,) = alerts(conn, outbox)
    assert (alert["model"], alert["score"], alert["instances"]) == ("ct-lesion@1.1.0", 0.9, 2)


def test_an_alert_counts_only_what_the_completion_covered(conn, outbox):
    analysed(conn, CT_MODEL, 0.2)
    analysed(conn, US_MODEL, 0.9)
    complete(conn)
    analysed(conn, CT_MODEL, 0.95)  # arrives after the completion, before the producer runs
    assert [(a["model"], a["instances"]) for a in alerts(conn, outbox)] == [(US_MODEL, 1)]
    complete(conn)
    assert [(a["model"], a["score"]) for a in alerts(conn, outbox)] == [(CT_MODEL, 0.95)]


def test_an_alert_that_cannot_be_queued_is_not_marked_sent(conn, outbox):
    analysed(conn, CT_MODEL, 0.9)
    analysed(conn, US_MODEL, 0.9)
    complete(conn)
    strict = Outbox(conn, 1000, {"lesion"})  # the US model's label is refused by the gate
    with pytest.raises(ValueError):
        queue_alerts(conn, strict, IDENTITY, FACTS)
    # neither alert of the study was kept: the study's alerts are one transaction
    assert conn.execute("SELECT COUNT(*) FROM alerted_studies").fetchone()[0] == 0
    assert len(alerts(conn, outbox)) == 2


def test_facts_of_a_model_are_found_by_name(conn):
    assert FACTS.for_model("us-lesion@9.9.9") is US_FACTS
    assert FACTS.for_model(CT_MODEL) is FACTS
    assert FACTS.for_model("not-running@1.0.0") is FACTS  # the box's own, as before
