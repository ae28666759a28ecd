"""The box's keeping of the hospital's verdicts (storage/hospital_reviews.py), the status
fields that tell the hospital about the downlink, and the box's downlink key."""

from __future__ import annotations

import os
import stat
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clinibox_common.contracts import downlink
from clinibox_common.contracts.egress import EgressRefused, check_message
from firmware_app.settings.box import Config
from firmware_app.settings.storage import StorageConfig
from firmware_app.storage import audit_chain, db, hospital_reviews
from firmware_app.telemetry.downlink import (
    KEPT_LATE,
    LATE,
    UNKNOWN_STUDY,
    DownlinkReceiver,
    refusal_code,
)
from firmware_app.telemetry.identity import load_identity
from tests.telemetry_payloads import status_payload

REF = "0123456789abcdef" * 2


def _add(conn, seq: int, study_key: str | None = "1.2.3", verdict: str = "refer",
         months: int | None = None) -> bool:
    with db.transaction(conn):
        return hospital_reviews.add(conn, seq=seq, study_key=study_key, study_ref=REF,
                                    alert_seq=7, verdict=verdict, follow_up_months=months,
                                    note="call the family", reviewed_at=1000.0 + seq)


def test_a_review_is_kept_once_with_one_audit_row(conn):
    assert _add(conn, 1) is True
    assert _add(conn, 1, verdict="no_action") is False  # a redelivery writes nothing
    rows = conn.execute("SELECT seq, verdict FROM hospital_reviews").fetchall()
    assert [tuple(r) for r in rows] == [(1, "refer")]
    audited = conn.execute("SELECT account, action, target, detail FROM audit"
                           " WHERE action = 'hospital_review_received'").fetchall()
    assert [tuple(r) for r in audited] == [
        (hospital_reviews.ACTOR, "hospital_review_received", "study:1.2.3", "refer")]
    assert audit_chain.verify(conn).intact


def test_the_latest_review_of_a_study_wins(conn):
    _add(conn, 1, verdict="refer")
    _add(conn, 2, verdict="follow_up", months=6)
    _add(conn, 3, study_key="9.9", verdict="no_action")
    latest = hospital_reviews.latest(conn, "1.2.3")
    assert latest is not None and (latest.seq, latest.verdict, latest.follow_up_months) == (
        2, "follow_up", 6)
    assert latest.as_json() == {"verdict": "follow_up", "note": "call the family",
                                "reviewed_at": 1002.0, "follow_up_months": 6, "late": False}
    assert hospital_reviews.latest(conn, "4.4") is None
    assert {k: r.seq for k, r in hospital_reviews.latest_for(conn, ["1.2.3", "9.9", "x"])
            .items()} == {"1.2.3": 2, "9.9": 3}


def test_latest_by_study_id_reads_the_worklists_rows_in_one_go(conn):
    now = time.time()
    for study_id, key in ((1, "1.2.3"), (2, "4.5.6")):
        conn.execute("INSERT INTO studies(id, study_key, instances, max_probability, findings,"
                     " alert, warnings, received_at, updated_at) VALUES (?, ?, 1, 0.9, 1, 1, 0,"
                     " ?, ?)", (study_id, key, now, now))
    _add(conn, 1)
    _add(conn, 2, verdict="send_case")
    found = hospital_reviews.latest_by_study_id(conn, [1, 2])
    assert {k: v.verdict for k, v in found.items()} == {1: "send_case"}


def test_the_watermark_stops_at_the_first_gap(conn):
    assert hospital_reviews.watermark(conn) == 0
    _add(conn, 2)
    assert hospital_reviews.watermark(conn) == 0  # 1 is missing
    _add(conn, 1)
    _add(conn, 4)
    assert hospital_reviews.watermark(conn) == 2
    _add(conn, 3)
    assert hospital_reviews.watermark(conn) == 4


def test_status_accepts_the_downlink_fields_and_refuses_a_bad_key_text():
    key = downlink.key_text(downlink.parse_key_text("CQ" + "A" * 41 + "="))  # u = 9
    check_message("status", status_payload(downlink_key=key, downlink_seq=0), None)
    check_message("status", status_payload(), None)  # older boxes: both absent
    for bad in ("A" * 44, "A" * 42 + "==", "not a key", "A" * 43 + "=\n"):
        with pytest.raises(EgressRefused, match="downlink key"):
            check_message("status", status_payload(downlink_key=bad), None)
    with pytest.raises(EgressRefused):
        check_message("status", status_payload(downlink_seq=-1), None)


def _config(tmp_path) -> Config:
    config = Config()
    config.storage = StorageConfig(state_dir=str(tmp_path / "state"))
    return config


def test_the_box_makes_its_downlink_key_on_first_start_and_keeps_it(tmp_path):
    config = _config(tmp_path)
    identity = load_identity(config)
    path = config.downlink_key_path
    assert path == config.keys_dir / "device-downlink.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = load_identity(config)
    assert identity.downlink_key_text == again.downlink_key_text
    assert identity.downlink_key_text is not None and len(identity.downlink_key_text) == 44


DAY = 86_400.0


class _Box:
    """A box's downlink receiver on a fresh database, and a hospital that signs for it."""

    def __init__(self, tmp_path) -> None:
        config = _config(tmp_path)
        config.telemetry.clinic, config.telemetry.device = "clinic-a", "box-1"
        self.identity = load_identity(config)
        self.conn = db.connect(config.database_path)
        db.initialise(self.conn)
        self.hospital = Ed25519PrivateKey.generate()
        self.receiver = DownlinkReceiver(config, self.identity, self.hospital.public_key())

    def seal(self, seq: int, *, age_days: float = 0.0, signer=None, device: str = "box-1",
             created_at: float | None = None) -> bytes:
        """A review of REF built ``age_days`` ago, signed by the hospital (or ``signer``)."""
        built = time.time() - age_days * DAY if created_at is None else created_at
        review = downlink.review_payload(study_ref=REF, alert_seq=3, verdict="refer", note="",
                                         reviewed_at=built - 60, created_at=built)
        return downlink.seal_downlink("clinic-a", device, seq, review,
                                      self.identity.downlink_key.public_key(),
                                      signer or self.hospital)

    def codes(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT code FROM events ORDER BY id")]

    def close(self) -> None:
        self.conn.close()
        self.receiver.close()


@pytest.fixture
def box(tmp_path):
    b = _Box(tmp_path)
    yield b
    b.close()


def test_a_refused_downlink_is_an_event_and_an_unknown_study_is_kept(box):
    assert box.identity.downlink_key is not None
    box_key = box.identity.downlink_key.public_key()
    review = downlink.review_payload(study_ref=REF, alert_seq=3, verdict="refer", note="",
                                     reviewed_at=time.time())
    forged = downlink.seal_downlink("clinic-a", "box-1", 1, review, box_key,
                                    Ed25519PrivateKey.generate())
    assert box.receiver.handle(forged) == "bad-signature"
    good = downlink.seal_downlink("clinic-a", "box-1", 1, review, box_key, box.hospital)
    assert box.receiver.handle(good) == "kept"
    assert box.receiver.handle(good) == "repeat"
    assert box.codes() == [refusal_code("bad-signature"), UNKNOWN_STUDY]
    row = box.conn.execute("SELECT study_key, study_ref FROM hospital_reviews").fetchone()
    assert tuple(row) == (None, REF)
    assert hospital_reviews.unresolved(box.conn) == 1


def test_a_stale_authentic_review_is_kept_late_and_the_watermark_passes_it(box):
    assert box.receiver.handle(box.seal(1, age_days=45)) == KEPT_LATE
    assert box.receiver.handle(box.seal(1, age_days=45)) == "repeat"  # kept once, noted once
    assert box.receiver.handle(box.seal(2)) == "kept"
    assert hospital_reviews.watermark(box.conn) == 2  # no gap left at 1
    rows = box.conn.execute("SELECT seq, late FROM hospital_reviews ORDER BY seq").fetchall()
    assert [tuple(r) for r in rows] == [(1, 1), (2, 0)]
    assert box.codes() == [UNKNOWN_STUDY, LATE, UNKNOWN_STUDY]  # REF names no study here


def test_a_late_review_reads_back_late(conn):
    with db.transaction(conn):
        hospital_reviews.add(conn, seq=1, study_key="1.2.3", study_ref=REF, alert_seq=7,
                             verdict="refer", follow_up_months=None, note="",
                             reviewed_at=1000.0, late=True)
    _add(conn, 2, study_key="4.5.6")
    late = hospital_reviews.latest(conn, "1.2.3")
    assert late is not None and late.late is True and late.as_json()["late"] is True
    assert hospital_reviews.latest_for(conn, ["4.5.6"])["4.5.6"].late is False


@pytest.mark.parametrize(("age_days", "signer", "device", "reason"), [
    (45, "forger", "box-1", "bad-signature"),
    (45, None, "box-2", "not-for-this-box"),
    (-2, "forger", "box-1", "bad-signature"),
])
def test_a_stale_or_future_review_that_is_not_authentic_settles_nothing(box, age_days, signer,
                                                                        device, reason):
    forger = Ed25519PrivateKey.generate() if signer else None
    assert box.receiver.handle(box.seal(1, age_days=age_days, signer=forger,
                                        device=device)) == reason
    assert box.conn.execute("SELECT COUNT(*) FROM hospital_reviews").fetchone()[0] == 0
    assert hospital_reviews.watermark(box.conn) == 0
    assert box.codes() == [refusal_code(reason)]


def test_open_downlink_still_refuses_stale_unless_asked_and_then_says_so(box):
    assert box.identity.downlink_key is not None
    keys = {"clinic": "clinic-a", "device": "box-1", "hospital_key": box.hospital.public_key(),
            "box_key": box.identity.downlink_key}
    old, fresh = box.seal(1, age_days=31), box.seal(2, age_days=29)
    with pytest.raises(downlink.DownlinkRefused) as refused:
        downlink.open_downlink(old, **keys)
    assert refused.value.reason == "stale"
    header, payload, stale = downlink.open_downlink(old, **keys, accept_stale=True)
    assert (header.seq, payload["verdict"], stale) == (1, "refer", True)
    assert downlink.open_downlink(fresh, **keys, accept_stale=True)[2] is False
    assert len(downlink.open_downlink(fresh, **keys)) == 2
    with pytest.raises(downlink.DownlinkRefused) as refused:
        downlink.open_downlink(box.seal(3, age_days=-2), **keys, accept_stale=True)
    assert refused.value.reason == "future"
