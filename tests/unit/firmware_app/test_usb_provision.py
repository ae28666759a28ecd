"""Provisioning from a USB stick (``firmware_app/ops/usb_provision.py``) and what the appliance's
screen then says (``clinibox console-banner``), with a real bundle from a fresh CA."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from clinibox_common.contracts.enrolment import parse_code
from firmware_app.cli.console_banner import WAITING_FOR_BUNDLE, banner
from firmware_app.ops.usb_provision import (
    StickOutcome,
    StickResult,
    provision_from,
    read_outcome,
    record,
)
from firmware_app.settings import box as config_module
from tests.provisioned_box import CLINIC, DEVICE, hospital_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hospital_bundle(tmp_path_factory.mktemp("hospital"))


def _box(tmp_path: Path) -> Path:
    config = tmp_path / "etc" / "clinibox.toml"
    config.parent.mkdir()
    config.write_text(f'[storage]\nstate_dir = "{tmp_path / "state"}"\n', encoding="utf-8")
    return config


def _stick(tmp_path: Path, *files: Path) -> Path:
    stick = tmp_path / "stick"
    stick.mkdir()
    for file in files:
        shutil.copy(file, stick / file.name)
    (stick / "IMG0001.dcm").write_bytes(b"not looked at here")
    return stick


def test_a_stick_without_a_bundle_changes_nothing(tmp_path):
    config = _box(tmp_path)
    before = config.read_bytes()
    assert provision_from(_stick(tmp_path), config).outcome is StickOutcome.NO_BUNDLE
    assert config.read_bytes() == before


def test_the_bundle_on_a_stick_provisions_the_box_and_the_screen_shows_its_code(tmp_path,
                                                                                 bundle):
    config = _box(tmp_path)
    waiting = banner(config_module.load(str(config)), None, ["192.0.2.7"])
    assert f"  {WAITING_FOR_BUNDLE}" in waiting
    assert any("https://192.0.2.7:8080/" in line and "port 11112" in line for line in waiting)

    result = provision_from(_stick(tmp_path, bundle), config)
    assert (result.outcome, result.bundle, result.enrolled_as) == (
        StickOutcome.PROVISIONED, "box-1.bundle", f"{CLINIC}/{DEVICE}")
    provisioned = config_module.load(str(config))
    assert provisioned.mqtt.host == "mqtt.hospital.example"
    shown = banner(provisioned, result, [])
    assert f"  enrolled as {CLINIC}/{DEVICE}, hospital broker mqtt.hospital.example:8883" in shown
    assert "  no network address yet: plug in the clinic's network cable" in shown
    (line,) = [line for line in shown if "enrol-code" in line]
    code = parse_code(line.split("enrol-code ")[1])
    assert (code.clinic, code.device) == (CLINIC, DEVICE)
    assert sum("█" in line for line in shown) > 10  # the QR code, drawn in blocks
    assert not any(WAITING_FOR_BUNDLE in line for line in shown)


def test_two_bundles_are_refused_and_nothing_is_written(tmp_path, bundle):
    config = _box(tmp_path)
    other = tmp_path / "box-2.bundle"
    shutil.copy(bundle, other)
    before = config.read_bytes()
    result = provision_from(_stick(tmp_path, bundle, other), config)
    assert result.outcome is StickOutcome.TWO_BUNDLES
    assert result.bundle == "box-1.bundle, box-2.bundle"
    assert config.read_bytes() == before
    assert not (config.parent / "clinibox.enrolment").exists()
    shown = banner(config_module.load(str(config)), result, [])
    assert f"  USB stick refused (box-1.bundle, box-2.bundle): {result.reason}" in shown


def test_a_stick_for_another_box_never_moves_a_provisioned_one(tmp_path, bundle):
    config = _box(tmp_path)
    assert provision_from(_stick(tmp_path, bundle), config).outcome is StickOutcome.PROVISIONED
    before = config.read_bytes()
    moved = tmp_path / "moved"
    moved.mkdir()
    result = provision_from(_stick(moved, _bundle_for(tmp_path, "box-9")), config)
    # another hospital's bundle (its own CA) for another device: refused before provisioning
    assert result.outcome is StickOutcome.ANOTHER_CA
    assert "--force" in result.reason
    assert config.read_bytes() == before


def _bundle_for(tmp_path: Path, device: str) -> Path:
    from tests import provisioned_box

    original = provisioned_box.DEVICE
    provisioned_box.DEVICE = device
    try:
        made = provisioned_box.hospital_bundle(tmp_path / f"hospital-{device}")
    finally:
        provisioned_box.DEVICE = original
    return made


def test_a_link_named_like_a_bundle_is_not_followed(tmp_path, bundle):
    config = _box(tmp_path)
    stick = _stick(tmp_path)
    (stick / "box-1.bundle").symlink_to(bundle)
    assert provision_from(stick, config).outcome is StickOutcome.NO_BUNDLE


def test_the_outcome_is_kept_as_a_code_for_the_banner(tmp_path):
    path = tmp_path / "usb-provision.json"
    assert read_outcome(path) is None
    result = StickResult(StickOutcome.REFUSED, "box-1.bundle", "", "bundle refused", "now")
    record(result, path)
    assert read_outcome(path) == result
    assert re.search(r'"outcome": "refused"', path.read_text())
    path.write_text('{"outcome": "exploded"}')
    assert read_outcome(path) is None


def test_a_provisioned_box_takes_a_renewal_only_from_its_own_hospitals_ca(tmp_path, bundle):
    """The box's clinic and device are on its screen: a stick with those ids under another
    CA (someone at a USB port, with a broker and hospital key of their own) is refused, while
    a renewal the same hospital issued is taken."""
    config = _box(tmp_path)
    assert provision_from(_stick(tmp_path, bundle), config).outcome is StickOutcome.PROVISIONED
    before = config.read_bytes()
    forged = tmp_path / "forger"
    forged.mkdir()
    result = provision_from(_stick(forged, hospital_bundle(tmp_path / "forger-ca")), config)
    assert result.outcome is StickOutcome.ANOTHER_CA
    assert "--force" in result.reason
    assert config.read_bytes() == before
    renewed = tmp_path / "renewed"
    renewed.mkdir()
    assert provision_from(_stick(renewed, bundle), config).outcome is StickOutcome.PROVISIONED


def test_the_screen_shows_no_control_character_from_a_stick(tmp_path):
    result = StickResult(StickOutcome.REFUSED, "\x1b[2Jbox.bundle", "",
                         "bad\x1b]0;owned\x07 bundle", "now")
    (line,) = [line for line in banner(config_module.load(str(_box(tmp_path))), result, [])
               if "refused" in line]
    assert "\x1b" not in line and "\x07" not in line
    assert line == "  USB stick refused (?[2Jbox.bundle): bad?]0;owned? bundle"


def _device_page(config: Path, language: str = "en") -> str:
    from firmware_app.storage import db
    from firmware_app.storage.accounts import Accounts
    from tests.web_client import ViewerClient
    from web.app import create_app

    loaded = config_module.load(str(config))
    app = create_app(loaded)
    conn = db.connect(loaded.database_path)
    if not Accounts(conn).count():
        Accounts(conn).add("tina", "keeps-the-box-running", "technician")
    conn.close()
    technician = ViewerClient(app)
    technician.login("tina", "keeps-the-box-running")
    return technician.get("/device", headers={"Accept-Language": language}).get_data(
        as_text=True)


def test_the_device_page_says_what_the_screen_says(tmp_path, bundle):
    """Before the bundle: what the box waits for; after: the same enrolment code as its screen,
    with its QR code; in Chinese without the English sentence."""
    config = _box(tmp_path)
    waiting = _device_page(config)
    assert "waiting for the hospital's enrolment bundle: put a USB stick" in waiting
    assert 'id="enrolment-code"' not in waiting
    chinese = _device_page(config, "zh-CN")
    assert "正在等待中心医院的登记包" in chinese and "enrolment bundle" not in chinese
    result = provision_from(_stick(tmp_path, bundle), config)
    (line,) = [line for line in banner(config_module.load(str(config)), result, [])
               if "enrol-code" in line]
    page = _device_page(config)
    code = line.split("enrol-code ")[1]
    assert f'id="enrolment-code">clinibox central enrol-code {code}</code>' in page
    assert "<svg" in page and f"<title>{code}</title>" in page


def test_without_a_config_only_a_stick_with_a_bundle_is_refused(tmp_path, bundle):
    assert provision_from(_stick(tmp_path), None).outcome is StickOutcome.NO_BUNDLE
    other = tmp_path / "other"
    other.mkdir()
    assert provision_from(_stick(other, bundle), None).outcome is StickOutcome.REFUSED


def test_a_root_step_reads_only_the_medium_itself(tmp_path):
    """The import folder is the service user's: a folder of its own, or a link, put where
    the medium was mounted is refused, never read by root."""
    from firmware_app.ingest.usb_mount import MediumError, opened_medium

    impostor = tmp_path / "usb-sdz"
    impostor.mkdir()
    with pytest.raises(MediumError, match="not the filesystem of /dev/null"):
        opened_medium("null", impostor)
    link = tmp_path / "usb-sdy"
    link.symlink_to(impostor)
    with pytest.raises(MediumError, match="cannot be opened"):
        opened_medium("null", link)
