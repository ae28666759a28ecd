"""The appliance image's recipes (``image/amd64.vmdb``, ``image/arm64.vmdb``) against the
installer they run: the image installs with ``--no-enable`` (no systemd runs in the build's
chroot) and enables the units itself (``image/steps/finish.sh``), so a unit that
``install.sh`` enables and the image forgets is dead on every flashed box (the software
update's path unit was, until this test)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ARCHES = ["amd64", "arm64"]


def _install_sh_enables() -> set[str]:
    text = (REPO / "scripts" / "install.sh").read_text(encoding="utf-8")
    match = re.search(r'^ENABLE_UNITS="([^"]*)"', text, re.M)
    assert match, "install.sh names no ENABLE_UNITS"
    return set(match[1].split())


def _image_enables() -> set[str]:
    text = (REPO / "image" / "steps" / "finish.sh").read_text(encoding="utf-8")
    match = re.search(r"systemctl enable ((?:[^\n]*\\\n)*[^\n]*)", text)
    assert match, "image/steps/finish.sh enables no unit"
    return set(match[1].replace("\\\n", " ").split())


def _shell_steps(arch: str) -> list[str]:
    recipe = yaml.safe_load((REPO / "image" / f"{arch}.vmdb").read_text(encoding="utf-8"))
    return [step["shell"] for step in recipe["steps"] if "shell" in step]


def test_the_image_enables_every_unit_the_installer_enables():
    installer = _install_sh_enables()
    assert {"clinibox.service", "clinibox-software-update.path",
            "clinibox-software-assess.service"} <= installer
    assert installer - _image_enables() == set()


def test_the_image_runs_the_installer_without_enabling():
    assert "--no-enable" in (REPO / "image" / "steps" / "install-box.sh").read_text(
        encoding="utf-8")


@pytest.mark.parametrize("arch", ARCHES)
def test_each_architecture_installs_and_finishes_the_box_the_same_way(arch):
    steps = "\n".join(_shell_steps(arch))
    for shared in ("install-box.sh", "uuid-links.sh", "finish.sh"):
        assert f'"{{{{ steps }}}}/{shared}"' in steps, (arch, shared)
    # the last step leaves nothing of one box: it is the shared finish
    assert _shell_steps(arch)[-1].strip().startswith('"{{ steps }}/finish.sh"')


def test_the_arm64_image_boots_by_uefi_from_the_removable_path():
    recipe = yaml.safe_load((REPO / "image" / "arm64.vmdb").read_text(encoding="utf-8"))
    flags = [step for step in recipe["steps"] if "set_part_flag" in step]
    assert [(step["tag"], step["flag"]) for step in flags] == [("efi", "esp")]
    assert any("grub-efi.sh" in step and "BOOTAA64.EFI" in step for step in _shell_steps("arm64"))
