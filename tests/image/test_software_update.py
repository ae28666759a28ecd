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
and the box answers C-ECHO on the version it kept. Then the hospital rolls out 0.1.3, whose
self-test fails too, over the broker (``clinibox central rollout``): the box fetches it, tries
it, goes back to 0.1.2 by itself and says so, and the hospital's rollout and the box's status
show it.
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


def _central(hospital: Hospital, sql: str) -> tuple | None:
    database = hospital.folder / "central.db"
    if not database.exists():
        return None
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute(sql, (CLINIC, DEVICE)).fetchone()


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


def test_a_release_the_hospital_rolls_out_that_fails_is_taken_back_and_the_hospital_sees_it(
        updated, hospital, tmp_path):
    updated.wait_for(lambda: _software_at_the_hospital(hospital) == "0.1.2",
                     "the hospital seeing software 0.1.2", 600)
    broken = make_release(BUNDLE, "0.1.3", hospital.folder / "model-signing.pem", tmp_path,
                          broken=True)
    started = clinibox("central", "rollout", str(broken), "--to", f"{CLINIC}/{DEVICE}",
                       "--config", str(hospital.central), check=False)
    assert started.returncode == 0, started.stdout + started.stderr

    def step() -> tuple | None:
        return _central(hospital, "SELECT step, reason FROM rollout_targets WHERE clinic = ?"
                                  " AND device = ? ORDER BY rollout_id DESC LIMIT 1")

    updated.wait_for(lambda: step() == ("rolled_back", "selftest_failed"),
                     "the hospital's rollout saying the box went back", 1500)
    assert ("software update: version 0.1.3 was tried and taken back by itself: its "
            "self-test failed where the version before passed; the box runs 0.1.2 again"
            ) in updated.console()
    seen = _central(hospital, "SELECT last_seen FROM box_state WHERE clinic = ? AND device = ?")
    assert seen is not None
    # the box's next status says 0.1.2 again (the console's box page reads it)
    updated.wait_for(lambda: (_central(hospital, "SELECT software, last_seen FROM box_state"
                                                 " WHERE clinic = ? AND device = ?") or
                              (None, 0))[1] > seen[0] and
                     _software_at_the_hospital(hospital) == "0.1.2",
                     "a status after the return saying 0.1.2", 600)
