"""Mount a USB medium read-only under the import folder, wait for its import, unmount it.

The udev rule ``systemd/udev/90-clinibox-usb-import.rules`` starts
``clinibox-usb-import@<device>.service`` for a USB (or removable) block device
that carries a filesystem. The unit runs the three steps of this helper:

``--step mount`` (root, in the host's mount namespace: a mount made inside a
    sandbox would be invisible to the importer) checks the device, probes its
    filesystem and mounts it ``ro,noexec,nosuid,nodev`` at
    ``<import folder>/usb-<device>``, readable by the service user;
``--step wait`` (the service user, sandboxed) waits until the importer
    (``ingest/usb.py``) reports a scan that started after the mount and found
    nothing on the medium still settling or failing, or until ``--timeout``;
``--step unmount`` (root; runs even when the wait failed) unmounts and removes
    the mount point, so the medium can be pulled.

``clinibox usb-import DEVICE`` (as root) runs all three, for technicians and
tests. Nothing here ever writes to the medium: ext3/ext4 are mounted with
``norecovery`` so that a dirty journal is not replayed onto the stick.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clinibox_common.errors import CliniboxError
from firmware_app.ingest.usb import boot_id

log = logging.getLogger(__name__)


#: filesystems the helper mounts (what USB sticks, card readers and CD exports carry)
ALLOWED_FSTYPES = ("vfat", "exfat", "ntfs", "ntfs3", "iso9660", "udf", "ext2", "ext3", "ext4")
#: options every import mount has, checked again in /proc/self/mounts after mounting
REQUIRED_OPTIONS = ("ro", "noexec", "nosuid", "nodev")
#: prefix of the mount point below the import folder
MOUNT_PREFIX = "usb-"
#: default seconds to wait for an import before unmounting anyway
DEFAULT_TIMEOUT = 1800.0

_DEVICE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class MediumError(CliniboxError):
    """A device the helper refuses or cannot mount, with the reason for people."""

    kind = "medium refused"


# -- device checks -----------------------------------------------------------------------------
def device_name(argument: str) -> str:
    """The kernel name (``sdb1``) of ``sdb1`` or ``/dev/sdb1``; MediumError when it is not one."""
    name = argument.removeprefix("/dev/")
    if not _DEVICE_NAME.match(name):
        raise MediumError(f"{argument!r} is not a block device name such as sdb1")
    return name


def mount_point_for(import_dir: Path, name: str) -> Path:
    """Where the medium on ``/dev/<name>`` is mounted: ``<import folder>/usb-<name>``."""
    return Path(import_dir) / f"{MOUNT_PREFIX}{name}"


def is_removable(name: str, sys_root: Path = Path("/sys")) -> bool:
    """Whether ``/dev/<name>`` sits on USB or on a disk the kernel marks removable.

    Reads sysfs: the device's real path names its bus (``…/usb1/1-1/…/block/sdb/sdb1``)
    and ``removable`` of the whole disk is 1 for card readers and most sticks.
    MediumError when the kernel does not know the device.
    """
    node = sys_root / "class" / "block" / name
    if not node.exists():
        raise MediumError(f"/dev/{name} is not a block device known to the kernel")
    real = node.resolve()
    disk = real.parent if (real / "partition").exists() else real
    on_usb = any(part.startswith("usb") for part in real.parts)
    try:
        removable = (disk / "removable").read_text().strip() == "1"
    except OSError:
        removable = False
    return on_usb or removable


def disk_members(name: str, sys_root: Path = Path("/sys")) -> dict[str, str]:
    """``{kernel name: "major:minor"}`` of the whole disk holding ``name`` and its partitions."""
    real = (sys_root / "class" / "block" / name).resolve()
    disk = real.parent if (real / "partition").exists() else real
    members = {}
    for node in [disk, *sorted(p for p in disk.iterdir() if (p / "partition").exists())]:
        try:
            members[node.name] = (node / "dev").read_text().strip()
        except OSError:
            continue
    return members


def mounted_members(name: str, sys_root: Path = Path("/sys"),
                    mountinfo: Path | None = None,
                    except_under: Path | None = None) -> list[str]:
    """Mount points that use the disk of ``name`` or any of its partitions.

    A medium whose disk is already in use (the box's own disk on USB, a stick
    someone mounted by hand) is not the helper's to mount. Mount points below
    ``except_under`` (the import folder: another partition of the same stick,
    being imported) do not count.
    """
    if mountinfo is None:  # the host's table: a mount in the unit's namespace alone is none
        mountinfo = Path("/proc/self/mountinfo" if in_host_mounts() else "/proc/1/mountinfo")
    members = disk_members(name, sys_root)
    numbers = set(members.values())
    sources = {f"/dev/{member}" for member in members}
    found = []
    for line in mountinfo.read_text().splitlines():
        head, _, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if len(fields) < 5 or len(rest) < 2:
            continue
        if fields[2] in numbers or rest[1] in sources:
            point = _unescape(fields[4])
            if except_under is None or not Path(point).is_relative_to(except_under):
                found.append(point)
    return found


def probe_fstype(device: Path) -> str:
    """The filesystem type on ``device`` as blkid reads it from the medium itself."""
    result = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", str(device)],
                            capture_output=True, text=True, timeout=60, check=False)
    fstype = result.stdout.strip()
    if result.returncode != 0 or not fstype:
        raise MediumError(f"{device}: no filesystem recognised on it")
    return fstype


def mount_options(fstype: str, uid: int, gid: int) -> list[str]:
    """The mount options for one filesystem type: never writable, executable or set-id.

    FAT, exFAT and NTFS have no owners: their files are given to the service
    user, read-only (files 0440, folders 0550). ISO 9660 and UDF get the owner
    too. ext3/ext4 get ``norecovery`` so a dirty journal is not replayed (that
    would write to the medium).
    """
    options = list(REQUIRED_OPTIONS)
    if fstype in ("vfat", "exfat", "ntfs", "ntfs3"):
        options += [f"uid={uid}", f"gid={gid}", "fmask=0337", "dmask=0227"]
    elif fstype in ("iso9660", "udf"):
        options += [f"uid={uid}", f"gid={gid}"]
    elif fstype in ("ext3", "ext4"):
        options.append("norecovery")
    return options


# -- the host's mounts ---------------------------------------------------------------------------
#: the mount namespace of PID 1: the host's, which the services' own namespaces follow
HOST_MOUNT_NS = "/proc/1/ns/mnt"


def in_host_mounts() -> bool:
    """Whether this process sees the host's mounts. systemd runs even a unit's '+' steps in
    the unit's own mount namespace when it has one (``PrivateMounts=``, ``ProtectSystem=``
    …), and a stick mounted there is seen by no other process (found by booting the
    appliance image: the import and the provisioning saw an empty folder)."""
    try:
        return os.readlink("/proc/self/ns/mnt") == os.readlink(HOST_MOUNT_NS)
    except OSError:  # no PID 1 to compare with: this namespace is the only one we know
        return True


def host_command(argv: list[str]) -> list[str]:
    """``argv`` run in the host's mount namespace (``nsenter``), where it is not already."""
    return argv if in_host_mounts() else ["nsenter", f"--mount={HOST_MOUNT_NS}", "--", *argv]


def host_view(path: Path) -> Path:
    """``path`` as the host's mounts show it (through ``/proc/1/root`` from another one)."""
    return path if in_host_mounts() else Path("/proc/1/root") / path.relative_to("/")


def opened_medium(name: str, mount_point: Path) -> int:
    """The medium's mounted folder opened once, a descriptor to read it through; MediumError
    unless it is the filesystem of ``/dev/NAME``. The import folder belongs to the service
    user, who could otherwise put a folder of its own (or a link) where the medium was
    mounted, between the mount and a root step that reads it."""
    try:
        handle = os.open(host_view(mount_point), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise MediumError(f"{mount_point} cannot be opened as the medium's folder: {exc}") \
            from exc
    try:
        device = os.stat(host_view(Path("/dev") / name)).st_rdev
        if os.fstat(handle).st_dev != device:
            raise MediumError(f"{mount_point} is not the filesystem of /dev/{name}")
    except BaseException:
        os.close(handle)
        raise
    return handle


# -- /proc/self/mounts -------------------------------------------------------------------------
def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounted_options(mount_point: Path, mounts: Path | None = None) -> list[str] | None:
    """The options of the filesystem mounted at ``mount_point`` (the topmost), or None;
    ``mounts`` defaults to the host's table."""
    if mounts is None:
        mounts = Path("/proc/self/mounts") if in_host_mounts() else Path("/proc/1/mounts")
    found = None
    target = str(mount_point)
    for line in mounts.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 4 and _unescape(fields[1]) == target:
            found = fields[3].split(",")
    return found


# -- the steps ---------------------------------------------------------------------------------
def mount_medium(device: Path, mount_point: Path, fstype: str, uid: int, gid: int) -> list[str]:
    """Mount ``device`` read-only at ``mount_point`` (made here) and check the options took.

    Returns the options as the kernel reports them. MediumError when the mount
    fails or lacks any of ro, noexec, nosuid, nodev (then it is undone).
    """
    if mounted_options(mount_point) is not None:
        raise MediumError(f"{mount_point} is already a mount point")
    made = not mount_point.exists()
    if made:
        mount_point.mkdir(mode=0o750)
        os.chown(mount_point, uid, gid)
    elif any(host_view(mount_point).iterdir()):
        raise MediumError(f"{mount_point} exists and is not empty; refusing to mount over it")
    options = mount_options(fstype, uid, gid)
    result = subprocess.run(host_command(["mount", "-t", fstype, "-o", ",".join(options),
                                          str(device), str(mount_point)]),
                            capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        if made:
            mount_point.rmdir()
        raise MediumError(f"mount of {device} failed: {result.stderr.strip()}")
    actual = mounted_options(mount_point) or []
    missing = [o for o in REQUIRED_OPTIONS if o not in actual]
    if missing:
        unmount_medium(mount_point)
        raise MediumError(f"{device} mounted without {', '.join(missing)}; unmounted again")
    return actual


def unmount_medium(mount_point: Path, attempts: int = 10, pause: float = 1.0) -> bool:
    """Unmount ``mount_point`` and remove it; True when both went cleanly.

    A busy mount (the importer still reading a file) is tried ``attempts``
    times, then detached lazily. The folder is removed only when empty, so
    nothing but the mount point itself can ever be deleted.
    """
    clean = True
    if mounted_options(mount_point) is not None:
        for attempt in range(attempts):
            result = subprocess.run(host_command(["umount", str(mount_point)]),
                                    capture_output=True, text=True, timeout=120, check=False)
            if result.returncode == 0:
                break
            if attempt + 1 < attempts:
                time.sleep(pause)
        else:
            log.error("%s stays busy (%s); detaching it lazily", mount_point,
                      result.stderr.strip())
            subprocess.run(host_command(["umount", "--lazy", str(mount_point)]), check=False,
                           timeout=120)
            clean = False
    if mount_point.is_dir() and mounted_options(mount_point) is None:
        try:
            mount_point.rmdir()
        except OSError as exc:
            log.error("cannot remove the mount point %s: %s", mount_point, exc.strerror)
            clean = False
    return clean


@dataclass
class Progress:
    """How far the importer is with one medium."""

    done: bool
    message: str
    problem: str = ""


def import_progress(status: dict, folder: str, watch_dir: Path, since: float,
                    boot: str) -> Progress:
    """Judge one import status (``ingest/usb.py``) for the medium in ``folder``.

    Done once a scan that started at or after ``since`` (CLOCK_MONOTONIC, same
    boot) finished with nothing of the medium still settling or failing to be
    stored. Folders the importer could not read are reported as a problem.
    """
    if status.get("boot_id") != boot:
        return Progress(False, "no import scan since this boot yet")
    if Path(status.get("watch_dir", "")) != Path(watch_dir):
        return Progress(False, f"the importer watches {status.get('watch_dir')}, "
                               f"not {watch_dir}")
    if float(status.get("scan_started", -1)) < since:
        return Progress(False, "waiting for a scan that started after the mount")
    tally = status.get("folders", {}).get(folder, {})
    waiting, errors = int(tally.get("waiting", 0)), int(tally.get("errors", 0))
    if waiting or errors:
        return Progress(False, f"{waiting} file(s) settling, {errors} failed to be stored")
    unreadable = int(tally.get("unreadable", 0))
    problem = f"{unreadable} folder(s) on the medium could not be read" if unreadable else ""
    return Progress(True, f"{int(tally.get('taken', 0))} file(s) taken", problem)


def wait_for_import(status_path: Path, folder: str, watch_dir: Path, since: float,
                    timeout: float, poll: float = 1.0,
                    clock: Callable[[], float] = time.monotonic) -> Progress:
    """Poll the status file until the medium is imported or ``timeout`` seconds pass."""
    boot = boot_id()
    deadline = clock() + timeout
    progress = Progress(False, f"no import status at {status_path} (is clinibox running?)")
    while True:
        try:
            status = json.loads(status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            status = None
        if isinstance(status, dict):
            progress = import_progress(status, folder, watch_dir, since, boot)
            if progress.done:
                return progress
        if clock() >= deadline:
            return progress
        time.sleep(poll)


def mount_step(name: str, mount_point: Path, any_device: bool) -> None:
    """Check the device and mount it read-only at ``mount_point``; MediumError if refused."""
    if os.geteuid() != 0:
        raise MediumError("mounting needs root (the unit runs this step with '+')")
    device = Path("/dev") / name
    try:
        if not stat.S_ISBLK(device.stat().st_mode):
            raise MediumError(f"{device} is not a block device")
    except FileNotFoundError as exc:
        raise MediumError(f"{device} does not exist") from exc
    if not any_device and not is_removable(name):
        raise MediumError(f"{device} is neither on USB nor removable; refusing it "
                          "(--any-device overrides)")
    import_dir = mount_point.parent
    in_use = mounted_members(name, except_under=import_dir)
    if in_use:
        raise MediumError(f"its disk is already mounted at {', '.join(in_use)}")
    if not import_dir.is_dir():
        raise MediumError(f"the import folder {import_dir} does not exist")
    fstype = probe_fstype(device)
    if fstype not in ALLOWED_FSTYPES:
        raise MediumError(f"{device} holds {fstype}, not one of {', '.join(ALLOWED_FSTYPES)}")
    owner = import_dir.stat()
    options = mount_medium(device, mount_point, fstype, owner.st_uid, owner.st_gid)
    log.info("%s (%s) mounted at %s (%s)", device, fstype, mount_point, ",".join(options))
