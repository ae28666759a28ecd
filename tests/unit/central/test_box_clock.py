"""The hospital sends its time to a box whose clock is behind (central/box_clock.py): the
receiver reads each authentic status's ``created_at``, queues a ``clock`` downlink at most once
an hour, even for a box so far behind that its messages are refused as too old, and the box
that opens it hands the time to its clock's helper."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import box_clock
from central.config import CentralConfig
from central.downlink_publisher import claim
from central.receiver import Receiver
from central.store import Store
from clinibox_common.contracts import downlink
from firmware_app.settings.box import Config
from firmware_app.settings.storage import StorageConfig
from firmware_app.storage import db
from firmware_app.telemetry import hospital_time
from firmware_app.telemetry.downlink import KEPT, DownlinkReceiver
from firmware_app.telemetry.identity import load_identity
from tests.central_fixtures import (  # noqa: F401 (pytest fixtures)
    central_box,
    central_database,
    central_hospital,
    central_store,
)
from tests.telemetry_payloads import Box, status_payload

DAY = 86_400.0
NOW = float(int(time.time()))


@pytest.fixture
def box_keys(tmp_path):
    """The box's own downlink key, made as the box makes it, and its config."""
    config = Config(storage=StorageConfig(state_dir=str(tmp_path / "box")))
    config.telemetry.clinic, config.telemetry.device = "clinic-a", "box-1"
    return config, load_identity(config)


@pytest.fixture
def receiver(store, hospital, tmp_path):
    config = CentralConfig()
    config.keys.hospital_signing_key = str(tmp_path / "hospital-signing.pem")
    return Receiver(config, store, hospital[0])


def _status(box: Box, identity, behind_s: float, state: str = "heartbeat", *,
            seq: int = 0, takes_time: bool = True) -> tuple[str, bytes]:
    fields = {"takes_time": 1} if takes_time else {}
    return box.envelope("status", status_payload(
        state, created_at=int(NOW - behind_s), downlink_key=identity.downlink_key_text,
        downlink_seq=seq, **fields))


def _clocks(store: Store) -> list[tuple[int, dict]]:
    with store.database.transaction(write=False) as tx:
        rows = tx.execute("SELECT seq, payload FROM downlinks WHERE kind = 'clock'"
                          " ORDER BY seq").fetchall()
    return [(int(seq), json.loads(payload)) for seq, payload in rows]


def test_a_box_still_behind_gets_the_time_again_minutes_later_three_times_an_hour_at_most(
        receiver, store, box, box_keys):
    """One time waits for a box at a time; once it confirmed it and is still behind (the time
    reached it late, held at the broker while its service restarted), the next goes
    RETRY_SECONDS after the last, PER_WINDOW in an hour at most."""
    _, identity = box_keys
    retry, window = box_clock.RETRY_SECONDS, box_clock.WINDOW_SECONDS

    def status(at: float, confirmed: int) -> list[int]:
        """Two statuses a second apart (the first's watermark is the hospital's to read by
        the second's); the clock downlinks queued by then."""
        for later in (0.0, 1.0):
            assert receiver.handle(*_status(box, identity, 3 * DAY, seq=confirmed),
                                   received_at=NOW + at + later) == "stored"
        return [seq for seq, _ in _clocks(store)]

    assert status(0, 0) == [1]
    [(_, payload)] = _clocks(store)
    assert payload == {"schema": 1, "created_at": int(NOW), "behind_s": int(3 * DAY)}
    assert status(60, 0) == [1]  # the next heartbeat, the first not yet confirmed
    assert status(retry + 1, 0) == [1]  # however long: unconfirmed, none piles up
    assert status(retry + 2, 1) == [1, 2]
    assert status(2 * retry + 5, 1) == [1, 2]  # the second unconfirmed
    assert status(2 * retry + 6, 2) == [1, 2, 3]
    assert status(3 * retry + 10, 3) == [1, 2, 3]  # three in the hour: no fourth
    assert status(window + 1, 3) == [1, 2, 3, 4]  # the first has left the hour


def test_a_confirmed_time_is_not_sent_again_within_the_retry(receiver, store, box, box_keys):
    _, identity = box_keys
    receiver.handle(*_status(box, identity, 3 * DAY), received_at=NOW)
    for at in (box_clock.RETRY_SECONDS - 2, box_clock.RETRY_SECONDS - 1):
        receiver.handle(*_status(box, identity, 3 * DAY, seq=1), received_at=NOW + at)
    assert [seq for seq, _ in _clocks(store)] == [1]


def test_a_box_so_far_behind_that_its_messages_are_too_old_still_gets_the_time(
        receiver, store, box, box_keys):
    """A box provisioned from a bundle made 100 days before (its clock raised only to the
    bundle's issue): every message is refused as too old, and no status ever told the
    hospital its downlink key. The time goes all the same."""
    _, identity = box_keys
    assert receiver.handle(*_status(box, identity, 100 * DAY), received_at=NOW) == "too-old"
    [(_, payload)] = _clocks(store)
    assert payload["behind_s"] == int(100 * DAY)
    [pending] = claim(store.database, now=NOW + 1, resend_seconds=1800)
    assert pending.kind == downlink.KIND_CLOCK  # sealable: the key was kept for it


@pytest.mark.parametrize(("behind_s", "state", "signing", "why"), [
    (60, "heartbeat", True, "within the tolerance"),
    (3 * DAY, "offline", True, "a last will is built at connection time"),
    (3 * DAY, "heartbeat", False, "the hospital signs no downlink"),
])
def test_no_time_is_sent_when_it_should_not_be(store, box, hospital, box_keys, tmp_path,
                                               behind_s, state, signing, why):
    config = CentralConfig()
    if signing:
        config.keys.hospital_signing_key = str(tmp_path / "hospital-signing.pem")
    receiver = Receiver(config, store, hospital[0])
    receiver.handle(*_status(box, box_keys[1], behind_s, state), received_at=NOW)
    assert _clocks(store) == [], why


def test_an_older_box_that_would_refuse_the_kind_gets_none(receiver, store, box, box_keys):
    """A box from before the clock downlink refuses the kind as unknown and never keeps its
    sequence number: every downlink after it would wait forever. It says nothing of
    ``takes_time``, so the hospital sends it none."""
    receiver.handle(*_status(box, box_keys[1], 3 * DAY, takes_time=False), received_at=NOW)
    assert _clocks(store) == []


def test_a_refused_status_keeps_its_boxs_last_seen(receiver, store, box, box_keys):
    assert receiver.handle(*_status(box, box_keys[1], 0), received_at=NOW) == "stored"
    assert receiver.handle(*_status(box, box_keys[1], 100 * DAY),
                           received_at=NOW + 600) == "too-old"
    with store.database.transaction(write=False) as tx:
        (seen,) = tx.execute("SELECT last_seen FROM box_state").fetchone()
    assert seen == NOW


def test_no_time_without_a_downlink_key_to_seal_it_to(receiver, store, box):
    receiver.handle(*box.envelope("status", status_payload(
        "heartbeat", created_at=int(NOW - 3 * DAY))), received_at=NOW)
    assert _clocks(store) == []


def test_the_box_opens_the_hospitals_time_and_hands_it_to_its_clock(receiver, store, box,
                                                                    box_keys):
    config, identity = box_keys
    receiver.handle(*_status(box, identity, 3 * DAY), received_at=NOW)
    [pending] = claim(store.database, now=NOW, resend_seconds=1800)
    signer = Ed25519PrivateKey.generate()
    sealed = downlink.seal_downlink(pending.clinic, pending.device, pending.seq,
                                    pending.payload, identity.downlink_key.public_key(),
                                    signer, kind=pending.kind)
    conn = db.connect(config.database_path)
    db.initialise(conn)
    conn.close()
    on_box = DownlinkReceiver(config, identity, signer.public_key())
    on_box.clock = lambda: NOW - 3 * DAY  # the box's clock, three days behind
    try:
        assert on_box.handle(sealed) == KEPT
    finally:
        on_box.close()
    assert [stamp for stamp, _ in hospital_time.waiting(config.clock_incoming_dir)] == [int(NOW)]


def test_behind_reads_only_a_number():
    assert box_clock.behind_s({"created_at": NOW - 10}, NOW) == 10
    assert box_clock.behind_s({"created_at": NOW + 10}, NOW) == 0
    assert box_clock.behind_s({"created_at": True}, NOW) == 0
    assert box_clock.behind_s({}, NOW) == 0


def test_the_tolerance_is_the_boxs_own(tmp_path: Path):
    """One number decides on both sides: what the hospital calls behind is what the box
    corrects."""
    assert box_clock.CLOCK_TOLERANCE_SECONDS is hospital_time.CLOCK_TOLERANCE_SECONDS
