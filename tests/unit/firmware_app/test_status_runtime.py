"""A status names the runtime the box's model runs on, and whether it is a fallback (the fleet
page shows both); a box that does not analyse says neither."""

from __future__ import annotations

import dataclasses

import pytest

from clinibox_common.contracts.egress import EgressRefused, check_message
from firmware_app.storage.outbox import Outbox
from firmware_app.telemetry.messages import build_status
from tests.audit_trail_attack import MODEL


@pytest.fixture
def outbox(conn):
    return Outbox(conn, 100, set(MODEL.labels))


def test_a_status_names_the_runtime_and_a_fallback(outbox):
    model = dataclasses.replace(MODEL, runtime="openvino", runtime_fallback=True)
    status = build_status(outbox.conn, outbox, model, "heartbeat", 5.0)
    assert (status["runtime"], status["runtime_fallback"]) == ("openvino", 1)
    check_message("status", status, None)
    plain = build_status(outbox.conn, outbox, dataclasses.replace(MODEL, runtime="tflite"),
                         "heartbeat", 5.0)
    assert (plain["runtime"], plain["runtime_fallback"]) == ("tflite", 0)


def test_a_box_that_does_not_analyse_names_no_runtime(outbox):
    status = build_status(outbox.conn, outbox, MODEL, "heartbeat", 5.0)
    assert "runtime" not in status and "runtime_fallback" not in status
    check_message("status", status, None)


def test_the_hospital_refuses_a_runtime_it_does_not_know(outbox):
    status = build_status(outbox.conn, outbox, dataclasses.replace(MODEL, runtime="openvino"),
                          "heartbeat", 5.0)
    for field, value in (("runtime", "cuda-on-a-toaster"), ("runtime_fallback", 2)):
        with pytest.raises(EgressRefused, match=field):
            check_message("status", {**status, field: value}, None)


def test_a_status_names_its_models_manifest_digest_and_where_its_audit_trail_starts(outbox):
    """What the hospital checks a rollout's step and the audit trail's front against."""
    from clinibox_common.bundled import DEMO_PUBLIC_KEY
    from clinibox_common.contracts.signing import manifest_digest
    from engine.model_package import load_package
    from firmware_app.service.appliance import model_facts
    from firmware_app.storage import audit
    from tests.model_packages import DEMO

    package = load_package(DEMO, [DEMO_PUBLIC_KEY])
    facts = model_facts(package)
    assert facts.manifest_digest == manifest_digest(package.manifest)
    assert len(facts.manifest_digest) == 64
    audit.record(outbox.conn, "study_view", account="carl", address="10.0.0.5",
                 target="study:1", detail="", at=1000.0)
    status = build_status(outbox.conn, outbox, facts, "heartbeat", 5.0, audit_keep_days=30.0)
    assert status["model_digest"] == facts.manifest_digest
    assert (status["audit"]["anchor_row"], status["audit"]["keep_days"]) == (0, 30.0)
    check_message("status", status, None)
    with pytest.raises(EgressRefused, match="model_digest"):
        check_message("status", {**status, "model_digest": "not a digest"}, None)
    older = build_status(outbox.conn, outbox, MODEL, "heartbeat", 5.0)  # no digest known
    assert "model_digest" not in older and "anchor_row" not in older["audit"]
