"""The USB mount helper on real loop-mounted ext4 media, real mount(8), sysfs and SQLite.

Loop devices work in this container, so each medium is a real ext4 image made with
``mkfs.ext4 -d`` (populated without ever being mounted writable) and attached with
losetup. FAT cannot be mounted here (the kernel has no vfat driver), so its options are
checked as arguments only. A loop device is not removable, so the command is run with
``--any-device``; the refusal without it is tested too.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from firmware_app.cli import usb as usb_cli
from firmware_app.ingest import usb_mount
from firmware_app.ingest.landing import Lander
from firmware_app.ingest.usb import FolderImporter, boot_id, import_status_path
from firmware_app.ingest.usb_mount import MediumError
from firmware_app.storage import db
from firmware_app.storage.spool import Spool

CT = Path(get_testdata_file("CT_small.dcm"))
MR = Path(get_testdata_file("MR_small.dcm"))


@dataclass
class Medium:
    """A loop device carrying an ext4 image with two DICOM files, a README and a script."""

    image: Path
    device: Path

    @property
    def name(self) -> str:
        """The kernel name, e.g. loop3."""
        return self.device.name

    def digest(self) -> str:
        """sha256 of the whole image: proves nothing was written to the medium."""
        return hashlib.sha256(self.image.read_bytes()).hexdigest()


def _mounts_of(path: Path) -> list[list[str]]:
    return [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1] == str(path)]


@pytest.fixture
def medium(tmp_path) -> Iterator[Medium]:
    """A real ext4 medium on a loop device; detached (and unmounted) afterwards."""
    if shutil.which("losetup") is None or shutil.which("mkfs.ext4") is None:
        pytest.fail("losetup and mkfs.ext4 are needed (apt-get install mount e2fsprogs)")
    content = tmp_path / "content"
    (content / "DICOM").mkdir(parents=True)
    shutil.copy(CT, content / "DICOM" / "IM0001")
    shutil.copy(MR, content / "DICOM" / "IM0002")
    (content / "README.TXT").write_text("exported by the ultrasound\n")
    script = content / "run.sh"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o755)
    image = tmp_path / "stick.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(content), str(image), "8M"], check=True)
    attached = subprocess.run(["losetup", "--find", "--show", str(image)],
                              capture_output=True, text=True)
    if attached.returncode != 0:
        pytest.fail(f"cannot attach a loop device here: {attached.stderr.strip()}")
    made = Medium(image, Path(attached.stdout.strip()))
    yield made
    for mount_point in usb_mount.mounted_members(made.name):
        subprocess.run(["umount", "--lazy", mount_point], check=False)
    subprocess.run(["losetup", "--detach", str(made.device)], check=False)


@pytest.fixture
def box(tmp_path) -> dict[str, Path]:
    """A box's state folder, import folder and config file (real SQLite database)."""
    state, import_dir = tmp_path / "state", tmp_path / "import"
    import_dir.mkdir()
    conn = db.connect(state / "clinibox.db")
    db.initialise(conn)
    conn.close()
    config = tmp_path / "box.toml"
    config.write_text(f'[storage]\nstate_dir = "{state}"\n[usb]\nwatch_dir = "{import_dir}"\n')
    return {"state": state, "import": import_dir, "config": config,
            "database": state / "clinibox.db"}


def _importer(box: dict[str, Path], settle: float = 0.2) -> FolderImporter:
    spool = Spool(box["state"] / "spool", box["state"] / "quarantine")
    lander = Lander(spool, box["database"], 64 * 2**20)
    return FolderImporter(box["import"], lander, box["database"], settle_seconds=settle)


def _run_command(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="clinibox")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config")
        return p

    usb_cli.add_parsers(sub, with_config)
    args = parser.parse_args(["usb-import", *argv])
    return args.func(args)


# -- names, options, sysfs ---------------------------------------------------------------------
def test_device_name_takes_kernel_names_and_refuses_anything_else():
    assert usb_mount.device_name("sdb1") == "sdb1"
    assert usb_mount.device_name("/dev/mmcblk0p1") == "mmcblk0p1"
    for bad in ("../sda", "sdb1/..", "", "SDB1", "/dev/disk/by-id/usb-x", "sd b", "-o"):
        with pytest.raises(MediumError):
            usb_mount.device_name(bad)


def test_mount_options_are_never_writable_executable_or_set_id():
    for fstype in usb_mount.ALLOWED_FSTYPES:
        options = usb_mount.mount_options(fstype, 123, 456)
        assert {"ro", "noexec", "nosuid", "nodev"} <= set(options), fstype
        assert "rw" not in options and "exec" not in options
    fat = usb_mount.mount_options("vfat", 123, 456)
    assert {"uid=123", "gid=456", "fmask=0337", "dmask=0227"} <= set(fat)
    assert "norecovery" in usb_mount.mount_options("ext4", 0, 0)
    assert "norecovery" not in usb_mount.mount_options("ext2", 0, 0)  # no journal to replay


def _fake_block_device(sys_root: Path, disk_path: str, partition: str, removable: str) -> None:
    # A USB stick or card reader cannot be attached to this machine, so these tests
    # build the kernel's sysfs layout for one; the loop test below reads the real /sys.
    disk = sys_root / disk_path.lstrip("/")
    node = disk / partition
    node.mkdir(parents=True)
    (node / "partition").write_text("1\n")
    (node / "dev").write_text("8:17\n")
    (disk / "removable").write_text(removable + "\n")
    links = sys_root / "class" / "block"
    links.mkdir(parents=True, exist_ok=True)
    (links / partition).symlink_to(node)


def test_removable_means_on_usb_or_marked_removable(tmp_path):
    sys_root = tmp_path / "sys"
    _fake_block_device(sys_root, "/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host6/"
                       "target6:0:0/6:0:0:0/block/sdb", "sdb1", removable="0")
    _fake_block_device(sys_root, "/devices/pci0000:00/0000:00:1c.0/mmc_host/mmc0/mmc0:0001/"
                       "block/mmcblk0", "mmcblk0p1", removable="1")
    _fake_block_device(sys_root, "/devices/pci0000:00/0000:00:1d.0/nvme/nvme0/nvme0n1",
                       "nvme0n1p1", removable="0")
    assert usb_mount.is_removable("sdb1", sys_root)
    assert usb_mount.is_removable("mmcblk0p1", sys_root)
    assert not usb_mount.is_removable("nvme0n1p1", sys_root)
    with pytest.raises(MediumError, match="not a block device known"):
        usb_mount.is_removable("sdz9", sys_root)


def test_a_disk_in_use_elsewhere_is_found_but_not_its_partitions_being_imported(tmp_path):
    # Partitioned loop devices do not appear in this container (no partition scan), so
    # this builds sysfs and mountinfo for a stick with two partitions.
    sys_root = tmp_path / "sys"
    _fake_block_device(sys_root, "/devices/usb1/1-1/block/sdb", "sdb1", removable="1")
    (sys_root / "devices/usb1/1-1/block/sdb/dev").write_text("8:16\n")
    second = sys_root / "devices/usb1/1-1/block/sdb/sdb2"
    second.mkdir()
    (second / "partition").write_text("2\n")
    (second / "dev").write_text("8:18\n")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 0:21 / /proc rw - proc proc rw\n"
        "90 1 8:18 / /var/lib/clinibox/import/usb-sdb2 ro,nosuid - vfat /dev/sdb2 ro\n")
    assert usb_mount.disk_members("sdb1", sys_root) == {"sdb": "8:16", "sdb1": "8:17",
                                                        "sdb2": "8:18"}
    found = usb_mount.mounted_members("sdb1", sys_root, mountinfo)
    assert found == ["/var/lib/clinibox/import/usb-sdb2"]
    assert usb_mount.mounted_members("sdb1", sys_root, mountinfo,
                                     except_under=Path("/var/lib/clinibox/import")) == []
    mountinfo.write_text("95 1 8:16 / /media/by\\040hand rw - ext4 /dev/sdb rw\n")
    assert usb_mount.mounted_members("sdb1", sys_root, mountinfo,
                                     except_under=Path("/var/lib/clinibox/import")) == \
        ["/media/by hand"]


def test_a_real_loop_device_is_not_removable(medium):
    assert not usb_mount.is_removable(medium.name)
    assert usb_mount.disk_members(medium.name) == {
        medium.name: Path(f"/sys/class/block/{medium.name}/dev").read_text().strip()}


# -- mounting for real -------------------------------------------------------------------------
def test_medium_is_mounted_read_only_noexec_nosuid_nodev(medium, tmp_path):
    before = medium.digest()
    mount_point = tmp_path / "import" / f"usb-{medium.name}"
    mount_point.parent.mkdir()
    assert usb_mount.mounted_members(medium.name) == []
    usb_mount.mount_medium(medium.device, mount_point, "ext4", os.getuid(), os.getgid())

    (entry,) = _mounts_of(mount_point)
    assert entry[0] == str(medium.device) and entry[2] == "ext4"
    assert {"ro", "noexec", "nosuid", "nodev", "norecovery"} <= set(entry[3].split(","))
    assert usb_mount.mounted_members(medium.name) == [str(mount_point)]
    assert (mount_point / "DICOM" / "IM0001").read_bytes()[128:132] == b"DICM"
    with pytest.raises(OSError) as refused:
        (mount_point / "new-file").write_bytes(b"x")
    assert refused.value.errno == errno.EROFS
    with pytest.raises(PermissionError):
        subprocess.run([str(mount_point / "run.sh")], check=False)

    assert usb_mount.unmount_medium(mount_point)
    assert _mounts_of(mount_point) == []
    assert not mount_point.exists()
    assert medium.digest() == before


def test_mount_point_in_use_or_not_empty_is_refused(medium, tmp_path):
    mount_point = tmp_path / f"usb-{medium.name}"
    mount_point.mkdir()
    (mount_point / "left-over").write_text("x")
    with pytest.raises(MediumError, match="not empty"):
        usb_mount.mount_medium(medium.device, mount_point, "ext4", 0, 0)
    assert _mounts_of(mount_point) == []
    assert (mount_point / "left-over").exists()
    assert not usb_mount.unmount_medium(mount_point)  # not empty: never deleted
    assert (mount_point / "left-over").exists()


def test_busy_medium_is_detached_lazily(medium, tmp_path):
    mount_point = tmp_path / f"usb-{medium.name}"
    usb_mount.mount_medium(medium.device, mount_point, "ext4", 0, 0)
    with open(mount_point / "DICOM" / "IM0001", "rb") as busy:
        assert not usb_mount.unmount_medium(mount_point, attempts=2, pause=0.05)
        assert _mounts_of(mount_point) == []
        assert not mount_point.exists()
        assert busy.read(132)[128:] == b"DICM"  # an open file stays readable


# -- knowing when the import is done -----------------------------------------------------------
def _status(**changes) -> dict:
    status = {"boot_id": "b", "watch_dir": "/var/lib/clinibox/import", "scan_started": 50.0,
              "folders": {"usb-sdb1": {"waiting": 0, "errors": 0, "taken": 3, "unreadable": 0}}}
    status.update(changes)
    return status


def test_import_progress_needs_a_clean_scan_that_started_after_the_mount():
    watch, folder = Path("/var/lib/clinibox/import"), "usb-sdb1"

    def judge(status: dict, since: float = 40.0):
        return usb_mount.import_progress(status, folder, watch, since, "b")

    assert judge(_status()).done and judge(_status()).message == "3 file(s) taken"
    assert not judge(_status(boot_id="before-reboot")).done
    assert "watches /elsewhere" in judge(_status(watch_dir="/elsewhere")).message
    assert not judge(_status(), since=60.0).done
    waiting = _status(folders={folder: {"waiting": 2, "errors": 0}})
    assert judge(waiting).message == "2 file(s) settling, 0 failed to be stored"
    assert not judge(_status(folders={folder: {"waiting": 0, "errors": 1}})).done
    other_stick_busy = _status(folders={"usb-sdc1": {"waiting": 5, "errors": 1}})
    assert judge(other_stick_busy).done  # only this medium's files count
    unreadable = judge(_status(folders={folder: {"unreadable": 1}}))
    assert unreadable.done and "could not be read" in unreadable.problem


def test_importer_status_file_drives_the_wait(box):
    stick = box["import"] / "usb-sdb1"
    stick.mkdir()
    shutil.copy(CT, stick / "IM0001")
    importer = _importer(box, settle=1.0)
    since = time.monotonic()
    path = import_status_path(box["state"])

    importer.scan_once(now=100.0)
    status = json.loads(path.read_text())
    assert status["boot_id"] == boot_id() and status["watch_dir"] == str(box["import"])
    assert status["scan_started"] >= since and status["scan_finished"] >= status["scan_started"]
    assert status["waiting"] == 1 and status["folders"]["usb-sdb1"]["waiting"] == 1
    first = usb_mount.import_progress(status, "usb-sdb1", box["import"], since, boot_id())
    assert not first.done

    importer.scan_once(now=101.5)
    status = json.loads(path.read_text())
    assert status["accepted"] == 1 and status["folders"]["usb-sdb1"]["taken"] == 1
    done = usb_mount.wait_for_import(path, "usb-sdb1", box["import"], since, timeout=5)
    assert done.done and done.message == "1 file(s) taken"


def test_status_file_goes_to_the_runtime_dir(box, tmp_path, monkeypatch):
    runtime = tmp_path / "run"
    runtime.mkdir()
    monkeypatch.setenv("CLINIBOX_RUNTIME_DIR", str(runtime))
    assert import_status_path(box["state"]) == runtime / "import-status.json"
    _importer(box).scan_once()
    assert json.loads((runtime / "import-status.json").read_text())["waiting"] == 0
    assert not (box["state"] / "import-status.json").exists()


def test_an_unwritable_status_never_stops_the_import(box, tmp_path):
    spool = Spool(box["state"] / "spool", box["state"] / "quarantine")
    importer = FolderImporter(box["import"], Lander(spool, box["database"], 2**26),
                              box["database"], settle_seconds=0,
                              status_path=tmp_path / "missing" / "status.json")
    shutil.copy(CT, box["import"] / "IM0001")
    assert importer.scan_once().accepted == 1
    assert not (tmp_path / "missing").exists()


def test_wait_gives_up_after_its_timeout(tmp_path):
    started = time.monotonic()
    progress = usb_mount.wait_for_import(tmp_path / "none.json", "usb-sdb1", tmp_path,
                                         started, timeout=0.3, poll=0.05)
    assert not progress.done and "no import status" in progress.message
    assert 0.3 <= time.monotonic() - started < 3


# -- the command, end to end -------------------------------------------------------------------
def test_usb_import_mounts_imports_and_unmounts(medium, box):
    before = medium.digest()
    importer = _importer(box)
    stop = threading.Event()
    thread = threading.Thread(target=importer.run, args=(stop, 0.05), daemon=True)
    thread.start()
    try:
        code = _run_command("--config", str(box["config"]), "--any-device",
                            "--timeout", "60", str(medium.device))
    finally:
        stop.set()
        thread.join(timeout=10)
    assert code == 0
    mount_point = box["import"] / f"usb-{medium.name}"
    assert not mount_point.exists() and _mounts_of(mount_point) == []
    conn = db.connect(box["database"])
    rows = conn.execute("SELECT source, origin FROM instances ORDER BY origin").fetchall()
    conn.close()
    assert [tuple(r) for r in rows] == [("usb", f"usb:usb-{medium.name}/DICOM/IM0001"),
                                         ("usb", f"usb:usb-{medium.name}/DICOM/IM0002")]
    assert medium.digest() == before


def test_usb_import_refuses_a_device_that_is_not_removable(medium, box):
    assert _run_command("--config", str(box["config"]), medium.name) == 1
    assert not (box["import"] / f"usb-{medium.name}").exists()
    assert usb_mount.mounted_members(medium.name) == []
    assert _run_command("--config", str(box["config"]), "../etc") == 2


def test_usb_import_that_times_out_unmounts_anyway_and_records_it(medium, box):
    # no importer runs: the wait cannot finish
    code = _run_command("--config", str(box["config"]), "--any-device", "--timeout", "0.5",
                        medium.name)
    assert code == 1
    assert usb_mount.mounted_members(medium.name) == []
    assert not (box["import"] / f"usb-{medium.name}").exists()
    conn = db.connect(box["database"])
    (message,) = conn.execute("SELECT message FROM events WHERE level='ERROR'").fetchone()
    conn.close()
    assert f"/dev/{medium.name} not finished after 0.5 s" in message
    assert "unmounted anyway" in message


def test_usb_import_steps_run_separately_as_the_unit_does(medium, box):
    name = medium.name
    base = ("--config", str(box["config"]), "--any-device")
    assert _run_command(*base, "--step", "mount", name) == 0
    mount_point = box["import"] / f"usb-{name}"
    assert "ro" in _mounts_of(mount_point)[0][3].split(",")
    assert _run_command(*base, "--step", "mount", name) == 1  # already in use
    assert _run_command(*base, "--step", "unmount", name) == 0
    assert not mount_point.exists()
    assert _run_command(*base, "--step", "unmount", name) == 0  # nothing left: still fine


def test_from_a_units_own_mount_namespace_the_steps_work_in_the_hosts(monkeypatch, tmp_path):
    """systemd runs a unit's '+' steps in the unit's mount namespace: mount and umount then
    run through nsenter in PID 1's, the medium is read through /proc/1/root and the host's
    mount table is the one checked (tests/image/ boots the real case)."""
    monkeypatch.setattr(usb_mount, "in_host_mounts", lambda: False)
    assert usb_mount.host_command(["umount", "/x"]) == [
        "nsenter", "--mount=/proc/1/ns/mnt", "--", "umount", "/x"]
    assert usb_mount.host_view(Path("/var/lib/clinibox/import/usb-sdb1")) == Path(
        "/proc/1/root/var/lib/clinibox/import/usb-sdb1")
    monkeypatch.setattr(usb_mount, "in_host_mounts", lambda: True)
    assert usb_mount.host_command(["umount", "/x"]) == ["umount", "/x"]
    assert usb_mount.host_view(tmp_path) == tmp_path
