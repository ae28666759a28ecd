"""The box takes the hospital's signed time: a ``clock`` downlink kept, an authentic message
ahead of the box's clock handed to the clock's helper (telemetry/hospital_time.py), and the
helper (ops/hospital_clock.py) that checks it again and moves the clock forward, never back.

The system clock itself is never set here (it is the test machine's): ``set_clock`` records
the moment instead. tests/integration/test_systemd_units.py shows that the helper's unit may
call clock_settime and the service's may not."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clinibox_common.contracts import downlink
from clinibox_common.errors import EXIT_FAIL
from firmware_app.ops import hospital_clock
from firmware_app.storage import event_codes, hospital_reviews
from firmware_app.telemetry import hospital_time
from firmware_app.telemetry.downlink import CLOCK, KEPT, REPEAT, UNKNOWN_STUDY, refusal_code
from tests.unit.firmware_app.test_hospital_reviews import DAY, _Box

HOUR = 3600.0


@pytest.fixture
def box(tmp_path):
    b = _Box(tmp_path)
    key = tmp_path / "hospital-signing.pub"
    key.write_bytes(b.hospital.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    b.receiver.config.telemetry.hospital_signing_key = str(key)
    yield b
    b.close()


def _clock(box: _Box, seq: int, created_at: float, behind_s: float = 0.0,
           signer: Ed25519PrivateKey | None = None) -> bytes:
    return downlink.seal_downlink(
        "clinic-a", "box-1", seq, downlink.clock_payload(behind_s, created_at),
        box.identity.downlink_key.public_key(), signer or box.hospital, kind=downlink.KIND_CLOCK)


def _waiting(box: _Box) -> list[int]:
    return [stamp for stamp, _ in hospital_time.waiting(box.receiver.config.clock_incoming_dir)]


def test_the_clock_payload_is_checked_like_every_downlink():
    payload = downlink.clock_payload(3 * DAY, 1_800_000_000)
    assert payload == {"schema": 1, "created_at": 1_800_000_000, "behind_s": 259_200}
    assert downlink.clock_payload(-5, 1)["behind_s"] == 0  # never "negative behind"
    with pytest.raises(downlink.EgressRefused):
        downlink.SCHEMAS[downlink.KIND_CLOCK].check({**payload, "extra": 1}, "clock", None)


def test_a_time_from_the_hospital_is_kept_once_counted_in_the_watermark_and_handed_over(box):
    ahead = time.time() + 3 * DAY  # the box's clock is three days behind the hospital's
    assert box.receiver.handle(_clock(box, 1, ahead, behind_s=3 * DAY)) == KEPT
    assert box.receiver.handle(_clock(box, 1, ahead, behind_s=3 * DAY)) == REPEAT
    assert hospital_reviews.watermark(box.conn) == 1
    assert box.codes() == [CLOCK]
    assert _waiting(box) == [int(ahead)]
    (path,) = [p for _, p in hospital_time.waiting(box.receiver.config.clock_incoming_dir)]
    _, payload = downlink.open_downlink(
        path.read_bytes(), clinic="clinic-a", device="box-1",
        hospital_key=box.hospital.public_key(), box_key=box.identity.downlink_key,
        trust_hospital_clock=True)
    assert payload["created_at"] == int(ahead)
    assert oct(path.stat().st_mode & 0o777) == "0o640"


def test_an_authentic_verdict_from_the_future_is_kept_not_refused_and_gives_the_time(box):
    """A box two days behind: before, every verdict was refused as "future" and the hospital
    sent it again forever; now it is the radiologist's verdict and a bound on the time."""
    assert box.receiver.handle(box.seal(1, age_days=-2)) == KEPT
    assert hospital_reviews.watermark(box.conn) == 1
    assert box.codes() == [UNKNOWN_STUDY]
    assert len(_waiting(box)) == 1


def test_only_the_newest_time_waits_and_a_message_not_ahead_hands_nothing(box):
    now = time.time()
    assert box.receiver.handle(box.seal(1, age_days=0)) == KEPT  # the box's clock is right
    assert _waiting(box) == []
    box.receiver.handle(_clock(box, 2, now + 2 * DAY))
    box.receiver.handle(_clock(box, 3, now + 1 * DAY))  # an older bound: not left
    assert _waiting(box) == [int(now + 2 * DAY)]
    box.receiver.handle(_clock(box, 4, now + 3 * DAY))  # a newer one replaces it
    assert _waiting(box) == [int(now + 3 * DAY)]
    assert hospital_reviews.watermark(box.conn) == 4


def test_a_forged_time_is_refused_and_hands_nothing(box):
    forged = _clock(box, 1, time.time() + 30 * DAY, signer=Ed25519PrivateKey.generate())
    assert box.receiver.handle(forged) == "bad-signature"
    assert _waiting(box) == [] and hospital_reviews.watermark(box.conn) == 0
    assert box.codes() == [refusal_code("bad-signature")]


class _Clock:
    """The box's clock for the helper: ``now`` reads it, ``set`` records where it was set."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.set_to: list[dt.datetime] = []

    def read(self) -> float:
        return self.now

    def set(self, moment: dt.datetime) -> None:
        self.set_to.append(moment)
        self.now = moment.timestamp()


def _events(box: _Box) -> list[str]:
    return [r[0] for r in box.conn.execute("SELECT code FROM events ORDER BY id")]


def test_the_helper_sets_the_clock_forward_to_the_hospitals_time_and_says_so(box):
    behind = time.time() - 3 * DAY
    ahead = time.time()
    clock = _Clock(behind)
    box.receiver.clock = clock.read
    box.receiver.handle(_clock(box, 1, ahead, behind_s=3 * DAY))
    outcome = hospital_clock.take_hospital_time(box.receiver.config, set_clock=clock.set,
                                                now=clock.read)
    assert clock.set_to == [dt.datetime.fromtimestamp(int(ahead), dt.timezone.utc)]
    assert outcome.moved_s == pytest.approx(int(ahead) - behind)
    assert outcome.refused == [] and _waiting(box) == []
    moved = event_codes.code(event_codes.CLOCK_MOVED, round(outcome.moved_s / 60))
    assert _events(box)[-1] == moved  # its words: test_event_words.py
    # run again (the path unit fires once more): nothing waits, nothing moves
    again = hospital_clock.take_hospital_time(box.receiver.config, set_clock=clock.set,
                                              now=clock.read)
    assert (again.moved_s, again.hospital_time, len(clock.set_to)) == (0.0, None, 1)


def test_the_time_the_file_waited_for_the_helper_counts_at_most_ten_minutes(box):
    """On a slow board the helper starts minutes after the service left the time: the
    file's age on the box's own clock (its change time, which no user sets back) is added,
    so the clock does not stay those minutes behind; a file that waited longer counts ten
    minutes only."""
    folder = box.receiver.config.clock_incoming_dir
    for waited, counted in ((150.0, 150.0), (5 * HOUR, hospital_clock.WAITED_AT_MOST_SECONDS)):
        folder.mkdir(parents=True, exist_ok=True)
        ahead = time.time() + 3 * DAY  # the box's clock (this machine's) is behind
        hospital_time.hand_over(folder, _clock(box, 1, ahead), ahead)
        left = max(path.lstat().st_ctime for path in hospital_time.entries(folder))
        clock = _Clock(left + waited)  # the helper starts that long after
        outcome = hospital_clock.take_hospital_time(box.receiver.config, set_clock=clock.set,
                                                    now=clock.read)
        assert outcome.waited_s == pytest.approx(counted)
        assert clock.set_to[0].timestamp() == pytest.approx(int(ahead) + counted)
        assert outcome.hospital_time == int(ahead)


def test_the_helper_never_moves_the_clock_back(box):
    box.receiver.config.clock_incoming_dir.mkdir(parents=True)
    built = time.time()
    hospital_time.hand_over(box.receiver.config.clock_incoming_dir,
                            _clock(box, 1, built), built)
    clock = _Clock(built + HOUR)  # the box is ahead of that time: a message that waited
    outcome = hospital_clock.take_hospital_time(box.receiver.config, set_clock=clock.set,
                                                now=clock.read)
    assert clock.set_to == [] and outcome.moved_s == 0.0
    assert outcome.hospital_time == int(built) and _waiting(box) == []


def test_a_file_the_service_user_left_cannot_move_the_clock(box, tmp_path):
    """The service's user can write the folder; only what the hospital signed for this box
    moves the clock: a forgery, another box's message, a link to a file are refused."""
    folder = box.receiver.config.clock_incoming_dir
    folder.mkdir(parents=True)
    future = time.time() + 400 * DAY
    forged = _clock(box, 1, future, signer=Ed25519PrivateKey.generate())
    (folder / f"{int(future):013d}.downlink").write_bytes(forged)
    other = downlink.seal_downlink(
        "clinic-a", "box-2", 1, downlink.clock_payload(0, future - 1),
        box.identity.downlink_key.public_key(), box.hospital, kind=downlink.KIND_CLOCK)
    (folder / f"{int(future - 1):013d}.downlink").write_bytes(other)
    target = tmp_path / "real-message"
    target.write_bytes(_clock(box, 2, future - 2))
    os.symlink(target, folder / f"{int(future - 2):013d}.downlink")
    clock = _Clock(time.time())
    outcome = hospital_clock.take_hospital_time(box.receiver.config, set_clock=clock.set,
                                                now=clock.read)
    assert clock.set_to == []
    assert sorted(outcome.refused) == ["bad-signature", "not-for-this-box", "unreadable"]
    assert _waiting(box) == [] and target.exists()  # the link went, not what it named
    refused = [code for code in _events(box) if code.startswith(event_codes.CLOCK_REFUSED)]
    assert len(refused) == 3


def test_the_command_refuses_a_box_with_no_hospital_key(box, capsys):
    box.receiver.config.telemetry.hospital_signing_key = ""
    config_file = box.receiver.config.state_dir / "box.toml"
    config_file.write_text(f'[storage]\nstate_dir = "{box.receiver.config.state_dir}"\n')
    from clinibox.table import build_parser
    args = build_parser("hospital-time").parse_args(["hospital-time", "--config",
                                                     str(config_file)])
    assert args.func(args) == EXIT_FAIL


def test_nothing_waiting_needs_no_key_and_changes_nothing(box):
    clock = _Clock(time.time())
    outcome = hospital_clock.take_hospital_time(box.receiver.config, set_clock=clock.set,
                                                now=clock.read)
    assert (outcome.moved_s, outcome.refused, outcome.hospital_time) == (0.0, [], None)
    assert clock.set_to == [] and _events(box) == []


def test_the_helper_records_nothing_when_the_database_is_missing(tmp_path, box):
    """A helper run before the service made its database still sets the clock."""
    box.receiver.handle(_clock(box, 1, time.time() + DAY))
    box.conn.close()
    box.receiver.close()
    box.receiver.config.database_path.unlink()
    clock = _Clock(time.time())
    outcome = hospital_clock.take_hospital_time(box.receiver.config, set_clock=clock.set,
                                                now=clock.read)
    assert len(clock.set_to) == 1 and outcome.moved_s > 0
    assert not box.receiver.config.database_path.exists()  # no empty database left behind
    box.conn = sqlite3.connect(":memory:")  # for the fixture's close (not a file)


def test_nothing_left_in_the_folder_can_start_the_helper_again_and_again(box):
    """The path unit starts the helper while anything named ``*.downlink`` is there: a folder,
    a name the service never writes, and a genuine time beside them are all dealt with and
    removed, and the genuine time still moves the clock."""
    folder = box.receiver.config.clock_incoming_dir
    folder.mkdir(parents=True)
    (folder / f"{1:013d}.downlink").mkdir()
    (folder / f"{1:013d}.downlink" / "inside").write_text("x")
    (folder / "x.downlink").write_text("junk")
    (folder / "1234567890123456.downlink").write_text("junk")
    ahead = time.time() + DAY
    hospital_time.hand_over(folder, _clock(box, 1, ahead), ahead)
    clock = _Clock(time.time())
    outcome = hospital_clock.take_hospital_time(box.receiver.config, set_clock=clock.set,
                                                now=clock.read)
    assert len(clock.set_to) == 1 and outcome.hospital_time == int(ahead)
    assert outcome.refused == ["unreadable"] * 3
    assert hospital_time.entries(folder) == []


def test_a_box_whose_keys_cannot_be_read_empties_the_folder_and_says_so(box, capsys):
    folder = box.receiver.config.clock_incoming_dir
    ahead = time.time() + DAY
    box.receiver.clock = lambda: time.time()
    box.receiver.handle(_clock(box, 1, ahead))
    assert _waiting(box)
    box.receiver.config.telemetry.hospital_signing_key = str(folder / "gone.pub")
    with pytest.raises(OSError):
        hospital_clock.take_hospital_time(box.receiver.config, set_clock=_Clock(0).set)
    assert hospital_time.entries(folder) == []


def test_a_time_replaced_while_the_helper_reads_is_not_a_refusal(box, monkeypatch):
    ahead = time.time() + DAY
    box.receiver.handle(_clock(box, 1, ahead))

    def gone(path, limit):
        raise FileNotFoundError(path)

    monkeypatch.setattr(hospital_clock, "read_regular", gone)
    outcome = hospital_clock.take_hospital_time(box.receiver.config, set_clock=_Clock(0).set)
    assert outcome.refused == [] and outcome.hospital_time is None
