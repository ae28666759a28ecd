"""The appliance image's recipe (``image/amd64.vmdb``) against the installer it runs: the image
installs with ``--no-enable`` (no systemd runs in the build's chroot) and enables the units
itself, so a unit that ``install.sh`` enables and the recipe forgets is dead on every flashed box
(the software update's path unit was, until this test)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _install_sh_enables() -> set[str]:
    text = (REPO / "scripts" / "install.sh").read_text(encoding="utf-8")
    match = re.search(r'^ENABLE_UNITS="([^"]*)"', text, re.M)
    assert match, "install.sh names no ENABLE_UNITS"
    return set(match[1].split())


def _image_enables(arch: str) -> set[str]:
    text = (REPO / "image" / f"{arch}.vmdb").read_text(encoding="utf-8")
    match = re.search(r"systemctl enable ((?:[^\n]*\\\n)*[^\n]*)", text)
    assert match, f"image/{arch}.vmdb enables no unit"
    return set(match[1].replace("\\\n", " ").split())


def test_the_image_enables_every_unit_the_installer_enables():
    installer = _install_sh_enables()
    assert {"clinibox.service", "clinibox-software-update.path",
            "clinibox-software-assess.service"} <= installer
    assert installer - _image_enables("amd64") == set()


def test_the_image_runs_the_installer_without_enabling():
    assert "--no-enable" in (REPO / "image" / "amd64.vmdb").read_text(encoding="utf-8")
