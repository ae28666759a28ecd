"""A release of the box's software: cut from a bundle, signed, and refused when anything in it
is not what was signed (``contracts/software_release.py``, ``ops/software_pack.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clinibox_common.contracts.package_archive import unpack
from clinibox_common.contracts.signing import generate_key_pair, load_public_key
from clinibox_common.contracts.software_release import (
    ReleaseError,
    ReleaseRefusal,
    dependency_change,
    read_sums,
    verify,
    version_key,
)
from firmware_app.ops.software_pack import PackError, pack_release
from firmware_app.ops.software_update import Outcome, RevertReason
from firmware_app.words import software_words
from tests.software_bundles import small_bundle


def _bundle(folder: Path) -> Path:
    return small_bundle(folder, "0.2.0")


@pytest.fixture
def keys(tmp_path):
    generate_key_pair(tmp_path / "hospital.pem", tmp_path / "hospital.pub")
    generate_key_pair(tmp_path / "other.pem", tmp_path / "other.pub")
    return tmp_path


@pytest.fixture
def unpacked(tmp_path, keys) -> Path:
    packed = pack_release(_bundle(tmp_path / "bundle"), keys / "hospital.pem", tmp_path / "out")
    assert packed.path.name == "clinibox-0.2.0.release"
    assert (packed.name, packed.version) == ("clinibox", "0.2.0")
    return unpack(packed.path, tmp_path / "unpacked")


def test_a_release_carries_the_app_pip_units_models_and_the_bundles_sums_and_verifies(
        unpacked, keys):
    release = verify(unpacked, [load_public_key(keys / "hospital.pub")])
    assert release.version == "0.2.0"
    assert sorted(release.files) == [
        "SHA256SUMS", "systemd/clinibox.service",
        "wheels/clinibox-0.2.0-py3-none-any.whl", "wheels/pip-24.0-py3-none-any.whl"]
    assert release.wheel.name == "clinibox-0.2.0-py3-none-any.whl"
    assert release.pip_wheel.name == "pip-24.0-py3-none-any.whl"
    # the dependencies and shipped models stay out of it, but their sums travel with it
    assert {"wheels/numpy-2.0-cp311.whl", "models/keys/hospital.pub"} <= set(
        read_sums(unpacked / "SHA256SUMS"))


def test_a_release_signed_by_a_key_the_box_does_not_trust_is_refused(unpacked, keys):
    with pytest.raises(ReleaseError) as refused:
        verify(unpacked, [load_public_key(keys / "other.pub")])
    assert refused.value.code is ReleaseRefusal.SIGNATURE


@pytest.mark.parametrize("change", ["altered", "added", "removed"])
def test_a_file_not_as_signed_is_refused_as_tampered(unpacked, keys, change):
    wheel = unpacked / "wheels" / "clinibox-0.2.0-py3-none-any.whl"
    if change == "altered":
        wheel.write_bytes(b"another app")
    elif change == "added":
        (unpacked / "systemd" / "extra.service").write_text("[Service]\n")
    else:
        (unpacked / "systemd" / "clinibox.service").unlink()
    with pytest.raises(ReleaseError) as refused:
        verify(unpacked, [load_public_key(keys / "hospital.pub")])
    assert refused.value.code is ReleaseRefusal.TAMPERED


def test_a_manifest_of_another_kind_is_no_release(unpacked, keys):
    manifest = json.loads((unpacked / "manifest.json").read_text())
    manifest["schema"] = "clinibox-package/1"
    (unpacked / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ReleaseError) as refused:
        verify(unpacked, [load_public_key(keys / "hospital.pub")])
    assert refused.value.code is ReleaseRefusal.NOT_A_RELEASE


def test_a_damaged_bundle_or_one_with_a_private_key_is_never_packed(tmp_path, keys):
    damaged = _bundle(tmp_path / "damaged")
    (damaged / "wheels" / "numpy-2.0-cp311.whl").write_bytes(b"changed after the sums")
    with pytest.raises(PackError, match="does not match"):
        pack_release(damaged, keys / "hospital.pem", tmp_path / "out")
    leaky = _bundle(tmp_path / "leaky")
    (leaky / "models" / "keys" / "hospital.pem").write_bytes(b"secret")
    with pytest.raises(PackError, match="private key"):
        pack_release(leaky, keys / "hospital.pem", tmp_path / "out")


def test_only_the_apps_own_wheels_may_change_between_a_running_version_and_a_release():
    running = {"wheels/clinibox-0.1.0-py3-none-any.whl": "a", "wheels/pip-24.0.whl": "b",
               "wheels/numpy-2.0.whl": "c", "native/receiver/r.cc": "d", "install.sh": "e"}
    same_deps = {**running, "install.sh": "changed"}
    same_deps.pop("wheels/clinibox-0.1.0-py3-none-any.whl")
    same_deps["wheels/clinibox-0.2.0-py3-none-any.whl"] = "f"
    assert dependency_change(running, same_deps) == []
    assert dependency_change(running, {**same_deps, "wheels/numpy-2.0.whl": "x"}) == [
        "wheels/numpy-2.0.whl"]
    assert dependency_change(running, {**same_deps, "native/receiver/r.cc": "x"}) == [
        "native/receiver/r.cc"]
    assert dependency_change(running, {**same_deps, "wheels/scipy-1.0.whl": "x"}) == [
        "wheels/scipy-1.0.whl"]
    assert dependency_change(running, {**same_deps, "models/m/1.1.0/manifest.json": "x"}) == [
        "models/m/1.1.0/manifest.json"]


def test_versions_compare_as_numbers():
    assert version_key("0.10.0") > version_key("0.9.1") > version_key("0.9.0")


def test_every_outcome_and_reason_has_words():
    for outcome in Outcome:
        assert str(outcome) in software_words.OUTCOMES
    for reason in (*ReleaseRefusal, *RevertReason):
        assert str(reason) in software_words.REASONS
    sentence = software_words.outcome_sentence(
        {"outcome": "reverted", "release": "0.2.0", "running": "0.1.0",
         "reason": "selftest_failed"})
    assert "0.2.0" in sentence and "0.1.0" in sentence and "self-test" in sentence


def test_the_device_page_and_the_screen_say_how_the_last_update_ended(tmp_path, monkeypatch):
    from firmware_app.cli.console_banner import banner
    from firmware_app.settings import box as config_module
    from tests.unit.firmware_app.test_usb_provision import _box, _device_page

    state = tmp_path / "software-state"
    state.mkdir()
    (state / "outcome.json").write_text(json.dumps(
        {"outcome": "reverted", "running": "0.1.0", "release": "0.1.1",
         "reason": "selftest_failed", "detail": "release fault", "at": 1_795_000_000.0}))
    monkeypatch.setattr(software_words, "STATE_DIR", state)
    config = _box(tmp_path)
    chinese = _device_page(config, "zh-CN")
    assert 'id="software-version"' in chinese
    assert ("版本 0.1.1 试运行后已自动退回：它的自检失败了，而之前的版本在同一项上通过；"
            "设备重新运行 0.1.0") in chinese
    assert "release fault" not in chinese and "selftest_failed" not in chinese
    lines = banner(config_module.load(str(config)), None, [])
    assert ("  last software update: version 0.1.1 was tried and taken back by itself: its "
            "self-test failed where the version before passed; the box runs 0.1.0 again"
            ) in lines
