"""The appliance image, built by ``make image``, boots under QEMU and becomes the hospital's box
from a USB stick, with no keyboard: the tier ``make test-image`` (marker ``image``; the image
takes minutes to build, so ``make test`` leaves it out; bench/appliance_image.py has the
figures). ``make test-image-arm64`` runs the same tests on the arm64 image, booted by UEFI
firmware on QEMU's emulated ARM board (``CLINIBOX_IMAGE_ARCH=arm64``).

One machine boots once for the module, from an overlay of the image on a 12 GiB disk, with
a FAT stick on its USB bus carrying the hospital's enrolment bundle, a fixed address
(``clinibox-network.toml``) and the hospital's model package, and its clock starting in
2025, as with a flat clock battery and no network time: the stick moves it forward to when
the hospital issued the bundle. The
hospital runs on the host: a real Mosquitto (TLS, client certificates, the ACL) and
``clinibox central serve``, which the box reaches at 10.0.2.2 through QEMU's user network.
Then:

- the box answers C-ECHO (dcmtk's ``echoscu``) and serves its viewer's login page over TLS,
  on ports forwarded to the host;
- the stick provisioned it: the screen's banner names the clinic and device and shows the
  enrolment code, which the hospital enrols (``central enrol-code``); the hospital's signed
  test then goes down to the box and its answer comes back (``central check-box``);
- the stick's bundle waited three hours, so its clock floor left the box minutes behind:
  the hospital saw it in the box's status and sent its signed time, which
  ``clinibox-clock.service`` set (decision 0048);
- the stick's model package, signed by the hospital, became the box's first model: its name
  taken, installed with no terminal, reported to the hospital;
- the hospital rolled out a software release whose self-test fails: the box fetched it,
  tried it, went back to the version it ran by itself and said so on its screen, and the
  hospital's console (``clinibox central web``) shows it back on that version;
- the data partition filled the disk at the first boot;
- and the image itself holds nothing of one box: no machine id, no key, no database, no
  hospital in its config.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import urllib3

from clinibox_common.contracts.enrolment import time_floor
from clinibox_common.contracts.package_archive import pack
from tests.box_harness import clinibox
from tests.image.hospital import Hospital
from tests.image.qemu_box import HOST_FROM_BOX, BootedBox, built_image, c_echo, make_stick
from tests.image.releases import make_release
from tests.model_packages import make_package
from tests.provisioned_box import CLINIC, DEVICE

pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(3600)]

#: the image's CPU: amd64 (make test-image) or arm64 (make test-image-arm64, emulated)
ARCH = os.environ.get("CLINIBOX_IMAGE_ARCH", "amd64")
IMAGE = Path(os.environ.get("CLINIBOX_IMAGE", built_image(ARCH)))
#: the offline bundle the image was built from: releases are cut from it
BUNDLE = IMAGE.with_name(IMAGE.name.removesuffix(".img") + "-offline")
#: the box's software version, as the image's name says it
RUNNING = IMAGE.name.removeprefix("clinibox-").removesuffix(f"-{ARCH}.img")
# an emulated ARM machine on an x86 host starts the box's Python several times slower
BOOT_SECONDS = 600 if ARCH == "amd64" else 2400
UPDATE_SECONDS = 1500 if ARCH == "amd64" else 5400


FLAT_BATTERY = "2025-06-01T00:00:00"
BUNDLE_WAITED = dt.timedelta(hours=3)
MODEL_NAME, MODEL_VERSION = "clinic-lesion", "1.0.0"
NETWORK_SETTING = ('address = "10.0.2.15/24"\ngateway = "10.0.2.2"\n'
                   'dns = ["10.0.2.3"]\n')


@pytest.fixture(scope="module")
def stick_bundle(tmp_path_factory: pytest.TempPathFactory, hospital: Hospital) -> Path:
    """The stick's bundle: it waited three hours before it was plugged in, so the stick's clock
    floor stops short of the real time (the hospital's CA started five minutes ago) and the
    hospital's time must bring the box the rest of the way."""
    return hospital.bundle_issued(dt.datetime.now(dt.timezone.utc) - BUNDLE_WAITED,
                                  tmp_path_factory.mktemp("stick-bundle") / f"{DEVICE}.bundle")


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory, hospital: Hospital,
           stick_bundle: Path) -> Iterator[BootedBox]:
    if not IMAGE.is_file():
        pytest.fail(f"no image at {IMAGE}: make image ARCH={ARCH} builds it (make test-image "
                    "does it first)")
    folder = tmp_path_factory.mktemp("booted")
    # the stick also fixes the box's address: the one QEMU's DHCP would give, so the
    # forwarded ports still reach it, now without DHCP
    network = folder / "clinibox-network.toml"
    network.write_text(NETWORK_SETTING, encoding="utf-8")
    # the hospital's model, signed with its model-signing key: the box's first model
    maker = tmp_path_factory.mktemp("maker")
    package = make_package(maker, MODEL_VERSION, key=hospital.folder / "model-signing.pem",
                           name=MODEL_NAME)
    archive = pack(package, maker / f"{MODEL_NAME}-{MODEL_VERSION}.tar.gz").path
    # a flat clock battery, and no network time (QEMU's network reaches no NTP server): the
    # box starts long before the hospital issued its bundle
    box = BootedBox(IMAGE, folder, arch=ARCH, clock_start=FLAT_BATTERY,
                    stick=make_stick(folder / "stick.img", [stick_bundle, network, archive],
                                     size_mib=64))
    box.start()
    try:
        box.echo_after = box.wait_for(lambda: c_echo(box.dicom_port), "C-ECHO answer",
                                      BOOT_SECONDS)
        yield box
    finally:
        box.stop()


def test_the_booted_box_answers_c_echo(booted):
    assert c_echo(booted.dicom_port)
    assert booted.echo_after < BOOT_SECONDS


def test_the_machine_booted_the_images_own_kernel_through_grub(booted):
    # GRUB's menu entry names the kernel it loads, on the serial console: Debian's kernel
    # for the image's CPU (an arm64 image booted by the board's UEFI firmware)
    assert re.search(rf"Loading Linux \S+-{ARCH} \.\.\.", booted.console()), \
        booted.console()[:3000]


def test_the_viewer_serves_its_login_page_over_tls(booted):
    session = requests.Session()
    session.trust_env = False
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    pages: list[requests.Response] = []

    def login_page() -> bool:
        # QEMU accepts on the forwarded port before the box listens: try until it answers
        try:
            pages.append(session.get(f"https://127.0.0.1:{booted.web_port}/login",
                                     verify=False, timeout=30))
        except requests.RequestException:
            return False
        return True

    booted.wait_for(login_page, "login page", 300)
    assert pages[-1].status_code == 200
    assert 'type="password"' in pages[-1].text


def test_the_stick_provisioned_the_box_and_the_hospital_reaches_it(booted, hospital):
    code = re.compile(rf"clinibox central enrol-code (CBX1:{CLINIC.upper()}:{DEVICE.upper()}:"
                      r"[A-Z2-7]+:[0-9A-F]{8})")
    booted.wait_for(lambda: code.search(booted.console()) is not None,
                    "enrolment code on the screen", 180)
    console = booted.console()
    assert f"enrolled as {CLINIC}/{DEVICE}, hospital broker {HOST_FROM_BOX}:" in console
    # the hospital enrols the code it was sent, then proves the link both ways
    enrolled = clinibox("central", "enrol-code", code.search(console)[1], "--config",
                        str(hospital.central), check=False)
    assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr
    # check-box refuses a box the hospital has not heard from since its enrolment ("check it is
    # running and reaches the broker"): on the emulated ARM board its services take minutes to
    # restart on the provisioned config while the stick's model installs, so wait for its
    # first status (the downlink key it reports), as the hospital would
    booted.wait_for(lambda: bool(_central(hospital, "SELECT 1 FROM box_state WHERE clinic = ?"
                                          " AND device = ? AND downlink_key IS NOT NULL")),
                    "the box's first status at the hospital", BOOT_SECONDS)
    checked = clinibox("central", "check-box", f"{CLINIC}/{DEVICE}", "--timeout", "240",
                       "--config", str(hospital.central), check=False)
    assert checked.returncode == 0, (checked.stdout + checked.stderr + "\n"
                                     + booted.console()[-3000:])


def test_the_stick_moved_a_clock_behind_the_bundle_forward(booted, stick_bundle):
    floor = time_floor(stick_bundle.read_bytes())
    when = floor.strftime("%Y-%m-%d %H:%M")
    moved = f"clock was behind the hospital's bundle: moved forward to {when} UTC"
    booted.wait_for(lambda: moved in booted.console(), "the clock line on the screen", 180)
    # the hospital then reached the box over TLS (above): its certificates hold by that clock


def _central(hospital: Hospital, query: str) -> list[tuple]:
    with sqlite3.connect(hospital.folder / "central.db") as conn:
        return conn.execute(query, (CLINIC, DEVICE)).fetchall()


def test_the_hospital_set_the_boxs_clock_the_rest_of_the_way(booted, hospital):
    """The stick's floor left the box minutes behind; its status said so; the hospital's
    signed time went down (a clock downlink), clinibox-clock.service set the clock forward,
    and the box's next statuses carry the hospital's time (within a minute)."""
    def clock_confirmed() -> bool:
        sent = _central(hospital, "SELECT d.seq FROM downlinks d JOIN box_state b ON"
                        " b.clinic = d.clinic AND b.device = d.device WHERE d.clinic = ? AND"
                        " d.device = ? AND d.kind = 'clock' AND b.downlink_seq >= d.seq")
        return bool(sent)

    booted.wait_for(clock_confirmed, "the box to confirm the hospital's time", 900)
    [(behind,)] = _central(hospital, "SELECT json_extract(payload, '$.behind_s') FROM downlinks"
                           " WHERE clinic = ? AND device = ? AND kind = 'clock'")
    assert behind > 120  # the stick left it minutes behind

    def on_time() -> bool:
        latest = _central(hospital, "SELECT created_at, received_at FROM messages WHERE"
                          " clinic = ? AND device = ? AND kind = 'status' ORDER BY seq DESC"
                          " LIMIT 1")
        return bool(latest) and abs(latest[0][1] - latest[0][0]) < 60

    booted.wait_for(on_time, "a status on the hospital's time", 900)


def test_the_stick_gave_the_box_its_first_model(booted, hospital):
    """The stick's model package, signed by the hospital's model-signing key: the box, which
    had no model of its own, took its name and installed it, with no terminal; its screen says
    so and its status tells the hospital it runs it."""
    line = (f"model {MODEL_NAME}@{MODEL_VERSION} from the USB stick installed, on trial; "
            "it is this box's model from now on")
    booted.wait_for(lambda: line in booted.console(), "the model line on the screen", 600)
    booted.wait_for(lambda: _central(hospital, "SELECT model FROM box_state WHERE clinic = ?"
                                     " AND device = ?") == [(f"{MODEL_NAME}@{MODEL_VERSION}",)],
                    "the hospital to see the box run its model", 900)


def _next_version(version: str) -> str:
    major, minor, patch = version.split(".")
    return f"{major}.{minor}.{int(patch) + 1}"


def test_a_release_that_fails_its_self_test_goes_back_by_itself_and_the_console_shows_it(
        booted, hospital, tmp_path):
    """The hospital rolls out a release of the box's software whose self-test fails (cut
    from the image's own bundle, signed with its model-signing key): the box fetches it,
    installs it beside the running version, switches, fails the self-test and goes back by
    itself; its screen says so, the hospital's rollout reads "rolled back", the box's next
    status says the version it runs again, and the console's fleet page and box page show it
    (decision 0046)."""
    broken_version = _next_version(RUNNING)
    broken = make_release(BUNDLE, broken_version, hospital.folder / "model-signing.pem",
                          tmp_path, broken=True)
    started = clinibox("central", "rollout", str(broken), "--to", f"{CLINIC}/{DEVICE}",
                       "--config", str(hospital.central), check=False)
    assert started.returncode == 0, started.stdout + started.stderr
    subject = f"clinibox@{broken_version}"

    def reported_back() -> list[tuple]:
        return _central(hospital, "SELECT created_at FROM messages WHERE clinic = ? AND"
                        " device = ? AND"
                        " kind = 'event' AND json_extract(payload, '$.event') = 'rollout' AND"
                        " json_extract(payload, '$.step') = 'rolled_back' AND"
                        f" json_extract(payload, '$.subject_model') = '{subject}'")

    booted.wait_for(lambda: bool(reported_back()), "the box reporting it went back",
                    UPDATE_SECONDS)
    assert (f"software update: version {broken_version} was tried and taken back by itself: "
            "its self-test failed where the version before passed; the box runs "
            f"{RUNNING} again") in booted.console()
    assert _central(hospital, "SELECT step, reason FROM rollout_targets WHERE clinic = ? AND"
                    " device = ? ORDER BY rollout_id DESC LIMIT 1") == [
        ("rolled_back", "selftest_failed")]
    [(reported_at,)] = reported_back()

    def status_after() -> list[tuple]:
        # made after the return, on the box's clock: the service that came back up says its
        # version as it connects (before the report, which it sends from its outbox)
        return _central(hospital, "SELECT json_extract(payload, '$.software') FROM messages"
                        " WHERE clinic = ? AND device = ? AND kind = 'status' AND"
                        f" created_at >= {reported_at} ORDER BY seq DESC LIMIT 1")

    booted.wait_for(lambda: bool(status_after()), "a status after the return", BOOT_SECONDS)
    assert status_after() == [(RUNNING,)]
    # what the hospital's IT reads: the fleet page's row and the box's own page
    fleet = hospital.console_page("/fleet")
    row = next((part for part in fleet.split("<tr")[1:] if DEVICE in part), "")
    assert f"software {RUNNING}" in row, row or fleet[-3000:]
    assert f"software {broken_version}" not in fleet
    box_page = hospital.console_page(f"/fleet/{CLINIC}/{DEVICE}")
    assert re.search(rf"Software version</dt>\s*<dd[^>]*>{re.escape(RUNNING)}</dd>",
                     box_page), box_page[-3000:]


def test_the_stick_fixed_the_boxs_address(booted):
    # the hospital reaching the box (above) proves the address, the gateway and the routes
    fixed = ("network: fixed address 10.0.2.15/24 via 10.0.2.2, DNS 10.0.2.3 "
             "(set from a USB stick)")
    booted.wait_for(lambda: fixed in booted.console(), "the network line on the screen", 180)
    assert "network setting on the USB stick refused" not in booted.console()


def test_the_data_partition_filled_the_disk_at_first_boot(booted):
    grown = re.compile(r"data partition /dev/vda3: (\d+(?:\.\d+)?)G")
    booted.wait_for(lambda: grown.search(booted.console()) is not None, "first boot's line", 60)
    size = float(grown.search(booted.console())[1])
    assert size > booted.disk_gib - 4  # the root partition takes 3 GiB of the 12


def test_the_image_holds_nothing_of_one_box():
    root = _partition_files(IMAGE, 2, ["/etc/machine-id", "/etc/clinibox/clinibox.toml"])
    assert root["/etc/machine-id"] == ""
    config = root["/etc/clinibox/clinibox.toml"]
    assert "[mqtt]" not in config and "trust_demo_key = false" in config
    listing = subprocess.run(["debugfs", "-R", "ls -p /", _offset_device(IMAGE, 3)],
                             capture_output=True, text=True, timeout=60)
    names = {line.split("/")[5] for line in listing.stdout.splitlines() if line.count("/") > 5}
    # the data partition holds only the empty import folder install.sh made: no keys, no
    # database, no certificate
    assert names <= {".", "..", "lost+found", "import"}, names


def _offset_device(image: Path, number: int) -> str:
    """``debugfs``'s view of partition ``number``: the image with the partition's offset."""
    table = subprocess.run(["parted", "-m", "-s", str(image), "unit", "B", "print"],
                           capture_output=True, text=True, check=True, timeout=60).stdout
    for line in table.splitlines():
        fields = line.split(":")
        if fields[0] == str(number):
            return f"{image}?offset={fields[1].rstrip('B')}"
    raise AssertionError(f"no partition {number} in {image}:\n{table}")


def _partition_files(image: Path, number: int, paths: list[str]) -> dict[str, str]:
    device = _offset_device(image, number)
    found = {}
    for path in paths:
        shown = subprocess.run(["debugfs", "-R", f"cat {path}", device], capture_output=True,
                               text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        found[path] = shown.stdout
    return found


def test_the_published_image_writes_back_exactly_as_the_page_says(tmp_path):
    """docs/technician/flash.md: ``bmaptool copy IMAGE.img.zst DISK`` finds the block map
    beside the image, and the disk then holds the image; ``sha256sum -c SHA256SUMS`` holds."""
    checked = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=IMAGE.parent,
                             capture_output=True, text=True, timeout=600)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    disk = tmp_path / "disk.img"
    written = subprocess.run(["bmaptool", "copy", f"{IMAGE}.zst", str(disk)],
                             capture_output=True, text=True, timeout=900)
    assert written.returncode == 0, written.stderr
    assert f"{IMAGE.name}.bmap" in written.stderr  # it found the block map by itself
    same = subprocess.run(["cmp", str(IMAGE), str(disk)], capture_output=True, timeout=900)
    assert same.returncode == 0, same.stdout
