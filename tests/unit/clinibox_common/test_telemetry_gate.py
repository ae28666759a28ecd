"""The egress gate and the envelope: closed schema, encryption, signatures, backoff."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from clinibox_common.contracts.egress import EgressRefused, check_message
from clinibox_common.contracts.envelope import (
    EnvelopeError,
    Header,
    canonical_payload,
    open_envelope,
    read_header,
    seal,
)
from clinibox_common.contracts.topics import parse_topic, subscription, topic
from firmware_app.telemetry.mqtt import Backoff

LABELS = {"lesion"}


def alert(**changes):
    payload = {"schema": 1, "created_at": 1_700_000_000, "study_ref": "ab" * 16,
               "finding": "lesion", "score": 0.93, "threshold": 0.88, "modality": "CT",
               "model": "clinibox-demo-lesion@1.0.0", "instances": 2, "processing_ms": 41.5}
    payload.update(changes)
    return payload


def test_a_well_formed_alert_passes():
    check_message("alert", alert(), LABELS)


@pytest.mark.parametrize("changes", [
    {"patient_name": "DOE^JANE"},                        # a field not on the list
    {"study_ref": "1.2.840.113619.2.55.3.604688119"},    # a UID where the hash belongs
    {"modality": "CT DOE^JANE"},                          # free text in an enum
    {"finding": "mass"},                                  # not one of the model's labels
    {"score": 1.5},                                       # out of range
    {"score": float("nan")},
    {"instances": True},                                  # a boolean is not a count
    {"created_at": "2024-01-01"},                         # a date string
    {"model": "x" * 80 + "@1.0"},
    {"processing_ms": [1, 2]},
])
def test_anything_off_the_allow_list_is_refused(changes):
    with pytest.raises(EgressRefused):
        check_message("alert", alert(**changes), LABELS)


def test_a_label_with_a_trailing_newline_is_refused_at_the_hospital_too():
    """The hospital checks labels without the model's list: ``$`` matched before a final
    newline, so "lesion\n" would have reached its tables and CSV (issue 43's red team)."""
    check_message("alert", alert(finding="lesion"), None)
    with pytest.raises(EgressRefused):
        check_message("alert", alert(finding="lesion\n"), None)


LESION = {"label": "lesion", "score": 0.91, "size_mm": 12.3}


def test_an_alert_carries_its_assessment_and_lesions_and_older_alerts_stay_valid():
    check_message("alert", alert(), LABELS)  # a box older than the console sends neither
    uncalibrated = {"label": "lesion", "score": 0.5}  # no size where there is no calibration
    check_message("alert", alert(assessment="finding", lesions=[LESION, uncalibrated]), LABELS)
    check_message("alert", alert(lesions=[LESION] * 16, assessment="not_assessable"), None)
    check_message("alert", alert(lesions=[]), LABELS)


@pytest.mark.parametrize(("changes", "where"), [
    ({"lesions": [dict(LESION, label="mass")]}, "alert.lesions[0].label"),  # not a model label
    ({"lesions": [LESION] * 17}, "alert.lesions"),                          # too many
    ({"lesions": [LESION, dict(LESION, size_mm=-1)]}, "alert.lesions[1].size_mm"),
    ({"lesions": [dict(LESION, size_mm=2000.5)]}, "alert.lesions[0].size_mm"),
    ({"lesions": [dict(LESION, score=1.2)]}, "alert.lesions[0].score"),
    ({"lesions": [dict(LESION, note="DOE^JANE")]}, "alert.lesions[0]"),  # an extra field
    ({"lesions": [{"score": 0.9}]}, "alert.lesions[0]"),                   # no label
    ({"lesions": LESION}, "alert.lesions"),                                # not a list
    ({"lesions": ["lesion"]}, "alert.lesions[0]"),
    ({"assessment": "probably fine"}, "alert.assessment"),
])
def test_an_alert_s_lesions_and_assessment_off_the_schema_are_refused(changes, where):
    with pytest.raises(EgressRefused) as caught:
        check_message("alert", alert(**changes), LABELS)
    assert str(caught.value).startswith(f"{where}:")
    assert "DOE" not in str(caught.value) and "mass" not in str(caught.value)


def event(**changes):
    payload = {"schema": 1, "created_at": 1_700_000_000, "event": "model_unavailable",
               "reason": "not_installed", "unit": "clinibox",
               "model": "clinibox-demo-lesion@1.0.0", "subject_model": "clinibox-demo-us"}
    payload.update(changes)
    return payload


def test_a_device_event_names_its_model_by_id_or_by_name_alone():
    check_message("event", event(), None)  # a routed model with no version on the box
    check_message("event", event(reason="tampered", subject_model="clinibox-demo-us@2.0.0"),
                  None)


@pytest.mark.parametrize("changes", [
    {"subject_model": "/var/lib/clinibox/models/clinibox-demo-us"},   # a path
    {"subject_model": "DOE^JANE"},                                    # free text
    {"subject_model": "clinibox-demo-us@"},
    {"model": "clinibox-demo-lesion"},             # the running model is always a full id
    {"reason": "no such package under /var/lib"},
    {"event": "model_missing"},
    {"note": "routing rules name it"},
])
def test_a_device_event_off_the_allow_list_is_refused(changes):
    with pytest.raises(EgressRefused):
        check_message("event", event(**changes), None)


def test_a_missing_field_and_an_unknown_kind_are_refused():
    payload = alert()
    del payload["score"]
    with pytest.raises(EgressRefused, match="missing"):
        check_message("alert", payload, LABELS)
    with pytest.raises(EgressRefused, match="unknown message kind"):
        check_message("images", alert(), LABELS)


def test_refusals_never_echo_the_refused_value():
    with pytest.raises(EgressRefused) as caught:
        check_message("alert", alert(modality="CNRY-SECRET-NAME"), LABELS)
    assert "CNRY" not in str(caught.value)
    with pytest.raises(EgressRefused) as caught:
        check_message("alert", alert(**{"CNRY-KEY": 1}), LABELS)
    assert "CNRY" not in str(caught.value)


def test_nested_summary_objects_are_closed_too():
    from clinibox_common.contracts.egress import SCHEMAS

    fields = SCHEMAS["summary"].fields
    assert "latency_ms" in fields and "feedback" in fields
    with pytest.raises(EgressRefused):
        fields["latency_ms"].check({"p50": 1, "p90": 2, "p99": 3, "max": 4, "note": 5},
                                   "latency_ms", None)
    with pytest.raises(EgressRefused):
        fields["modalities"].check({"CT": 1, "DOE": 2}, "modalities", None)
    with pytest.raises(EgressRefused):
        fields["confidence_histogram"].check([1] * 9, "h", None)


@pytest.fixture
def keys():
    return X25519PrivateKey.generate(), Ed25519PrivateKey.generate()


def test_envelope_round_trip_and_header(keys):
    hospital, device = keys
    header = Header("clinic-a", "box-1", "alert", 7)
    envelope = seal(header, alert(), hospital.public_key(), device)
    assert read_header(envelope) == header
    opened = open_envelope(envelope, device.public_key(), hospital)
    assert opened.header == header and opened.payload == alert()
    assert canonical_payload(alert()) not in envelope  # the payload is not in clear


def test_sealing_twice_never_reuses_key_material(keys):
    hospital, device = keys
    header = Header("clinic-a", "box-1", "alert", 7)
    first = seal(header, alert(), hospital.public_key(), device)
    second = seal(header, alert(), hospital.public_key(), device)
    body = 6 + len(header.to_bytes())
    # a fresh ephemeral key and nonce each time: the ciphertexts differ
    assert first[body:body + 44] != second[body:body + 44]
    assert first[body + 44:-64] != second[body + 44:-64]


@pytest.mark.parametrize("position", [10, 60, -80, -1])
def test_any_flipped_byte_is_refused(keys, position):
    hospital, device = keys
    envelope = bytearray(seal(Header("c", "d", "alert", 1), alert(), hospital.public_key(),
                              device))
    envelope[position] ^= 0x01
    with pytest.raises(EnvelopeError) as caught:
        open_envelope(bytes(envelope), device.public_key(), hospital)
    assert caught.value.reason in {"malformed", "bad-signature"}


def test_wrong_device_key_and_wrong_hospital_key_are_refused(keys):
    hospital, device = keys
    envelope = seal(Header("c", "d", "alert", 1), alert(), hospital.public_key(), device)
    with pytest.raises(EnvelopeError) as caught:
        open_envelope(envelope, Ed25519PrivateKey.generate().public_key(), hospital)
    assert caught.value.reason == "bad-signature"
    with pytest.raises(EnvelopeError) as caught:
        open_envelope(envelope, device.public_key(), X25519PrivateKey.generate())
    assert caught.value.reason == "undecryptable"


def test_garbage_is_malformed(keys):
    hospital, device = keys
    for data in (b"", b"CBX1", b"X" * 300, b"CBX1\xff\xff" + b"\0" * 200):
        with pytest.raises(EnvelopeError) as caught:
            open_envelope(data, device.public_key(), hospital)
        assert caught.value.reason == "malformed"


def test_topics():
    assert topic("clinic-a", "box-1", "alert") == "clinibox/clinic-a/box-1/alert"
    assert parse_topic("clinibox/clinic-a/box-1/summary") == ("clinic-a", "box-1", "summary")
    assert parse_topic("clinibox/clinic-a/box-1/images") is None
    assert subscription("g") == "$share/g/clinibox/+/+/+"
    with pytest.raises(ValueError):
        topic("clinic/a", "box-1", "alert")


def test_backoff_grows_with_jitter_and_resets():
    backoff = Backoff(1.0, 60.0, random.Random(4))
    delays = [backoff.next_delay() for _ in range(12)]
    assert all(1.0 <= d <= 60.0 for d in delays)
    assert max(delays[6:]) > max(delays[:2])  # grows
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered
    backoff.reset()
    assert backoff.next_delay() <= 2.0
