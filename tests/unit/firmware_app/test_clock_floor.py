"""A box whose clock is behind the hospital's bundle (a flat clock battery, no network time)
takes it from a USB stick all the same: the stick's root step moves the clock forward to when
the hospital issued the bundle, never back, and no further than the CA's signature allows
(``contracts.enrolment.time_floor``, ``firmware_app/ops/clock_floor.py``)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import pytest
from cryptography import x509

from central.bundle import make_bundle
from clinibox_common.contracts import enrolment
from clinibox_common.contracts.enrolment import CERT_BACKDATE, EnrolmentError, time_floor
from firmware_app.cli.console_banner import banner
from firmware_app.ops.clock_floor import keep_for_next_boot, raise_clock
from firmware_app.ops.usb_provision import StickOutcome, provision_from
from firmware_app.settings import box as config_module
from tests.provisioned_box import CLINIC, DEVICE, hospital_bundle

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hospital_bundle(tmp_path_factory.mktemp("hospital"))


def _issued(bundle: Path) -> dt.datetime:
    issued = json.loads(bundle.read_bytes())["issued_at"]
    return dt.datetime.fromisoformat(issued.replace("Z", "+00:00"))


def _with_issued_at(bundle: Path, when: str, out: Path) -> bytes:
    body = json.loads(bundle.read_bytes())
    body["issued_at"] = when
    out.write_text(json.dumps(body), encoding="utf-8")
    return out.read_bytes()


class Clock:
    """The box's clock, behind by a year and a day until the step moves it."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start
        self.kept: list[dt.datetime] = []

    def set(self, moment: dt.datetime) -> None:
        self.now = moment

    def raise_(self, floor: dt.datetime) -> float:
        return raise_clock(floor, now=lambda: self.now, set_clock=self.set, keep=self.kept.append)


def test_the_floor_is_when_the_hospital_issued_the_bundle(bundle):
    floor = time_floor(bundle.read_bytes())
    assert floor == _issued(bundle)
    assert floor <= dt.datetime.now(UTC)


def test_an_issue_time_the_ca_did_not_sign_counts_only_within_the_backdate(bundle, tmp_path):
    tls = json.loads(bundle.read_bytes())["tls"]
    client, ca = (x509.load_pem_x509_certificate(tls[name].encode("ascii"))
                  for name in ("client_cert", "ca_cert"))
    forged = _with_issued_at(bundle, "2090-01-01T00:00:00Z", tmp_path / "forged.bundle")
    assert time_floor(forged) == client.not_valid_before_utc + CERT_BACKDATE  # not 2090
    early = _with_issued_at(bundle, "2001-01-01T00:00:00Z", tmp_path / "early.bundle")
    # never before both certificates start
    assert time_floor(early) == max(client.not_valid_before_utc, ca.not_valid_before_utc)
    with pytest.raises(EnrolmentError, match="issued_at"):
        time_floor(_with_issued_at(bundle, "yesterday", tmp_path / "bad.bundle"))


def test_a_bundle_that_does_not_hold_gives_no_floor(bundle, tmp_path):
    body = json.loads(bundle.read_bytes())
    body["tls"]["client_cert"] = body["tls"]["ca_cert"]  # not issued for this box
    with pytest.raises(EnrolmentError):
        time_floor(json.dumps(body).encode("utf-8"))


def test_the_clock_moves_forward_only(bundle):
    floor = time_floor(bundle.read_bytes())
    behind = Clock(floor - dt.timedelta(days=366))
    assert behind.raise_(floor) == pytest.approx(366 * 86400)
    assert behind.now == floor and behind.kept == [floor]
    ahead = Clock(floor + dt.timedelta(minutes=3))
    assert ahead.raise_(floor) == 0.0
    assert ahead.now == floor + dt.timedelta(minutes=3) and ahead.kept == []


def test_the_moment_is_kept_for_the_next_boot_in_timesyncds_own_file(tmp_path):
    folder = tmp_path / "timesync"
    folder.mkdir()
    moment = dt.datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
    keep_for_next_boot(moment, folder / "clock")
    kept = (folder / "clock").stat()
    assert kept.st_mtime == moment.timestamp()
    assert (kept.st_uid, kept.st_gid) == (folder.stat().st_uid, folder.stat().st_gid)
    keep_for_next_boot(moment, tmp_path / "no-timesyncd" / "clock")  # nothing to keep it in
    assert not (tmp_path / "no-timesyncd").exists()


def _box(tmp_path: Path) -> Path:
    config = tmp_path / "etc" / "clinibox.toml"
    config.parent.mkdir()
    config.write_text(f'[storage]\nstate_dir = "{tmp_path / "state"}"\n', encoding="utf-8")
    return config


def _stick(tmp_path: Path, bundle: Path) -> Path:
    stick = tmp_path / "stick"
    stick.mkdir()
    shutil.copy(bundle, stick / bundle.name)
    return stick


def test_a_box_a_year_behind_takes_the_bundle_from_a_stick(bundle, tmp_path, monkeypatch):
    clock = Clock(time_floor(bundle.read_bytes()) - dt.timedelta(days=366))
    # the bundle's checks read the box's clock
    monkeypatch.setattr(enrolment, "_now", lambda now: now if now is not None else clock.now)

    config = _box(tmp_path)
    refused = provision_from(_stick(tmp_path, bundle), config)  # as a terminal would
    assert refused.outcome is StickOutcome.REFUSED
    assert "not valid before" in refused.reason and refused.clock_to == ""

    result = provision_from(tmp_path / "stick", config, raise_clock=clock.raise_)
    assert result.outcome is StickOutcome.PROVISIONED
    assert result.enrolled_as == f"{CLINIC}/{DEVICE}"
    assert clock.now == _issued(bundle)
    assert result.clock_to == _issued(bundle).isoformat(timespec="seconds")
    when = _issued(bundle).strftime("%Y-%m-%d %H:%M")
    assert (f"  clock was behind the hospital's bundle: moved forward to {when} UTC, when it "
            "was issued (no network time yet)") in banner(config_module.load(str(config)),
                                                         result, [])


def test_a_box_on_time_is_not_moved(bundle, tmp_path):
    clock = Clock(dt.datetime.now(UTC))
    before = clock.now
    result = provision_from(_stick(tmp_path, bundle), _box(tmp_path), raise_clock=clock.raise_)
    assert result.outcome is StickOutcome.PROVISIONED
    assert clock.now == before and result.clock_to == ""
    assert not any("clock was behind" in line for line in banner(
        config_module.load(str(tmp_path / "etc" / "clinibox.toml")), result, []))


def test_another_hospitals_bundle_never_moves_a_provisioned_boxs_clock(bundle, tmp_path,
                                                                      monkeypatch):
    """A red-team find: a bundle "not valid yet" by the box's clock (an attacker's own CA,
    its certificates dated in the future) once failed the CA comparison's own checks, was
    taken for the same hospital's, moved the clock and then provisioned the box to the
    attacker's broker. The CA is now compared from the bundle's fields alone, first."""
    config = _box(tmp_path)
    assert provision_from(_stick(tmp_path, bundle), config).outcome is StickOutcome.PROVISIONED
    before = config.read_bytes()
    other = hospital_bundle(tmp_path / "other-hospital")
    (tmp_path / "second").mkdir()
    clock = Clock(dt.datetime(2020, 1, 1, tzinfo=UTC))  # every bundle is in its future
    monkeypatch.setattr(enrolment, "_now", lambda now: now if now is not None else clock.now)
    result = provision_from(_stick(tmp_path / "second", other), config,
                            raise_clock=clock.raise_)
    assert result.outcome is StickOutcome.ANOTHER_CA
    assert clock.now == dt.datetime(2020, 1, 1, tzinfo=UTC) and clock.kept == []
    assert config.read_bytes() == before


def test_a_bundle_nested_too_deeply_or_too_big_is_refused_not_read_whole(tmp_path):
    stick = tmp_path / "stick"
    stick.mkdir()
    (stick / "deep.bundle").write_text("[" * 200_000, encoding="utf-8")
    clock = Clock(dt.datetime(2020, 1, 1, tzinfo=UTC))
    deep = provision_from(stick, _box(tmp_path), raise_clock=clock.raise_)
    assert deep.outcome is StickOutcome.REFUSED and "nested too deeply" in deep.reason
    (stick / "deep.bundle").unlink()
    with (stick / "big.bundle").open("wb") as big:
        big.truncate(4 * 2**30)  # sparse: 4 GiB that must never be read whole
    large = provision_from(stick, tmp_path / "etc" / "clinibox.toml", raise_clock=clock.raise_)
    assert large.outcome is StickOutcome.REFUSED and "far too large" in large.reason
    assert clock.now == dt.datetime(2020, 1, 1, tzinfo=UTC)


def test_a_link_in_timesyncds_folder_is_never_followed(tmp_path):
    folder = tmp_path / "timesync"
    folder.mkdir()
    target = tmp_path / "elsewhere"
    (folder / "clock").symlink_to(target)  # dangling: root would create and chown it
    with pytest.raises(OSError):
        keep_for_next_boot(dt.datetime(2099, 1, 1, tzinfo=UTC), folder / "clock")
    assert not target.exists()
    target.write_text("root's", encoding="utf-8")
    before = target.stat()
    with pytest.raises(OSError):
        keep_for_next_boot(dt.datetime(2099, 1, 1, tzinfo=UTC), folder / "clock")
    assert target.stat().st_mtime == before.st_mtime


def test_make_bundle_says_when_it_issued_the_bundle(tmp_path):
    hospital_bundle(tmp_path / "h")
    moment = dt.datetime(2026, 11, 27, 12, 0, 5, tzinfo=UTC)
    made = make_bundle(ca_cert_path=tmp_path / "h" / "ca" / "ca.pem",
                       ca_key_path=tmp_path / "h" / "ca.key", clinic=CLINIC, device=DEVICE,
                       broker_host="mqtt.hospital.example", broker_port=8883,
                       hospital_key_path=tmp_path / "h" / "hospital.pub",
                       signing_key_paths=[tmp_path / "h" / "model-signing.pub"], now=moment)
    assert made.issued_at == "2026-11-27T12:00:05Z"
    assert os.path.exists(tmp_path / "h" / "box-1.bundle")
