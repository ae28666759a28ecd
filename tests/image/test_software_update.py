"""The booted image updates its own software from a USB stick and from the hospital's rollout,
and takes a failing version back by itself, under the image's real systemd (tier
``make test-image``).

The stick carries the hospital's enrolment bundle and two releases cut from the bundle the
image was built from and signed with the hospital's model-signing key (which the bundle makes
the box trust): 0.1.1, whose self-test fails a check of its own, and 0.1.2, a good one. The
box provisions itself, takes both releases and applies them oldest first
(``clinibox-software-update.path`` → ``clinibox software apply --incoming``): 0.1.1 is
installed beside the running version, switched to, fails its self-test and is taken back;
0.1.2 is kept. The screen says each end, the hospital sees the box's version in its status,
and the box answers C-ECHO on the version it kept. A release the hospital rolls out over the
broker (``clinibox central rollout``) is tried on the box that boots in
``test_appliance_boot.py``, the part CI runs.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import pytest

from tests.box_harness import clinibox
from tests.image.hospital import Hospital
from tests.image.qemu_box import BootedBox, built_image, c_echo, make_stick
from tests.image.releases import make_release
from tests.provisioned_box import CLINIC, DEVICE

pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(2400)]

IMAGE = Path(os.environ.get("CLINIBOX_IMAGE", built_image("amd64")))
BUNDLE = IMAGE.with_name(IMAGE.name.removesuffix(".img") + "-offline")
BOOT_SECONDS = 600
UPDATE_SECONDS = 1500


def _software_at_the_hospital(hospital: Hospital) -> str | None:
    database = hospital.folder / "central.db"
    if not database.exists():
        return None
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as conn:
        row = conn.execute("SELECT software FROM box_state WHERE clinic = ? AND device = ?",
                           (CLINIC, DEVICE)).fetchone()
    return row[0] if row else None


@pytest.fixture(scope="module")
def updated(tmp_path_factory: pytest.TempPathFactory, hospital: Hospital):
    if not IMAGE.is_file() or not BUNDLE.is_dir():
        pytest.fail(f"no image and bundle at {IMAGE}: make image ARCH=amd64 builds them "
                    "(make test-image does it first)")
    folder = tmp_path_factory.mktemp("software")
    key = hospital.folder / "model-signing.pem"
    broken = make_release(BUNDLE, "0.1.1", key, folder, broken=True)
    good = make_release(BUNDLE, "0.1.2", key, folder)
    stick = make_stick(folder / "stick.img", [hospital.bundle, broken, good], size_mib=64)
    box = BootedBox(IMAGE, folder, stick=stick)
    box.start()
    try:
        box.wait_for(lambda: c_echo(box.dicom_port), "C-ECHO answer", BOOT_SECONDS)
        code = re.compile(rf"clinibox central enrol-code (CBX1:{CLINIC.upper()}:"
                          rf"{DEVICE.upper()}:[A-Z2-7]+:[0-9A-F]{{8}})")
        box.wait_for(lambda: code.search(box.console()) is not None,
                     "enrolment code on the screen", 300)
        enrolled = clinibox("central", "enrol-code", code.search(box.console())[1],
                            "--config", str(hospital.central), check=False)
        assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr
        box.wait_for(lambda: "software update: version 0.1.2 installed" in box.console(),
                     "the second update's end on the screen", UPDATE_SECONDS)
        yield box
    finally:
        box.stop()


def test_the_failing_version_was_tried_and_taken_back_by_itself(updated):
    console = updated.console()
    assert ("software update: version 0.1.1 was tried and taken back by itself: its "
            "self-test failed where the version before passed; the box runs 0.1.0 again"
            ) in console, console[-4000:]
    assert console.index("version 0.1.1 was tried") < console.index("version 0.1.2 installed")


def test_the_good_version_is_kept_and_answers(updated):
    assert ("software update: version 0.1.2 installed, its self-test passed, and kept"
            in updated.console())
    updated.wait_for(lambda: c_echo(updated.dicom_port), "C-ECHO on 0.1.2", 300)


def test_the_hospital_sees_the_version_the_box_kept(updated, hospital):
    updated.wait_for(lambda: _software_at_the_hospital(hospital) == "0.1.2",
                     "the hospital seeing software 0.1.2", 600)
