"""The appliance image booted under QEMU, as a technician's machine boots it from its disk.

The image stays as built: the machine boots a copy-on-write overlay of it, larger than the
image, so the first boot's growth of the data partition is seen. A second disk on the
emulated USB bus stands for the technician's stick. User-mode networking forwards the box's
DICOM port and viewer port to loopback ports of the host, and the box reaches the host's
loopback at 10.0.2.2. Everything the serial console prints is kept in ``console.log``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from tests.ports import free_ports

#: the host's loopback as the box sees it (QEMU's user-mode network)
HOST_FROM_BOX = "10.0.2.2"
REPO = Path(__file__).resolve().parents[2]
#: Debian's EDK2 UEFI firmware for QEMU's ARM board (qemu-efi-aarch64)
AAVMF = Path("/usr/share/AAVMF")


def built_image(arch: str = "amd64") -> Path:
    """Where ``image/build.sh`` leaves the raw image of this version for ``arch``."""
    return REPO / "build" / "image" / f"clinibox-{metadata.version('clinibox')}-{arch}.img"


def c_echo(port: int, ae_title: str = "CLINIBOX") -> bool:
    """Whether the box answers dcmtk's ``echoscu`` on the forwarded DICOM port."""
    echo = subprocess.run(["echoscu", "-to", "10", "-ta", "10", "-aec", ae_title,
                           "127.0.0.1", str(port)], capture_output=True, timeout=60,
                          env={**os.environ, "TCP_NODELAY": "1"})
    return echo.returncode == 0


def kvm_usable() -> bool:
    """Whether to run the machine under KVM: only when asked (``CLINIBOX_QEMU_KVM=1``) and
    /dev/kvm is there. The CI machines report KVM, but it is nested and offers the guest no
    CPU feature past SSE2 (QEMU refuses ``-cpu qemu64,enforce`` there for its SSE3, and a
    guest kernel on ``-cpu host`` hangs at its first instructions): less than the box's
    numpy needs. So QEMU emulates the CPU (TCG, one thread per virtual CPU) unless told
    otherwise."""
    return os.environ.get("CLINIBOX_QEMU_KVM") == "1" and os.access("/dev/kvm",
                                                                    os.R_OK | os.W_OK)


def make_stick(path: Path, files: list[Path], size_mib: int = 32) -> Path:
    """A FAT USB stick image holding ``files`` at its top (mkfs.vfat and mcopy: no mount)."""
    path.unlink(missing_ok=True)
    subprocess.run(["mkfs.vfat", "-n", "CLINIBOX", "-C", str(path), str(size_mib * 1024)],
                   check=True, capture_output=True, timeout=60)
    for file in files:
        subprocess.run(["mcopy", "-i", str(path), str(file), "::/"], check=True,
                       capture_output=True, timeout=60)
    return path


@dataclass
class BootedBox:
    """A QEMU machine booting the image: its forwarded ports and its console's log."""

    image: Path
    folder: Path
    arch: str = "amd64"
    stick: Path | None = None
    disk_gib: int = 12
    memory_mib: int = 2048
    #: where the machine's battery-backed clock starts (``-rtc base=``), None: the host's time
    clock_start: str | None = None
    dicom_port: int = 0
    web_port: int = 0
    started: float = 0.0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def console_log(self) -> Path:
        """What the serial console printed (the kernel, systemd, the login banner)."""
        return self.folder / "console.log"

    def console(self) -> str:
        """The console's text so far."""
        try:
            return self.console_log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        """Boot: the first time from a new overlay disk, later from the same disk again (a
        second boot, after :meth:`stop`); the console's log starts anew."""
        overlay = self.folder / "disk.qcow2"
        if not overlay.exists():
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.image),
                            "-F", "raw", str(overlay), f"{self.disk_gib}G"],
                           check=True, capture_output=True, timeout=60)
        self.console_log.unlink(missing_ok=True)
        self.dicom_port, self.web_port = free_ports(2)
        forwards = (f"hostfwd=tcp:127.0.0.1:{self.dicom_port}-:11112,"
                    f"hostfwd=tcp:127.0.0.1:{self.web_port}-:8080")
        command = [*self._machine(), "-m", str(self.memory_mib), "-smp", "2", "-display", "none",
                   "-serial", f"file:{self.console_log}", "-monitor", "none",
                   "-drive", f"file={overlay},format=qcow2,if=virtio",
                   "-netdev", f"user,id=lan,{forwards}",
                   "-device", "virtio-net-pci,netdev=lan",
                   "-device", "qemu-xhci,id=usb"]
        if self.clock_start is not None:
            command += ["-rtc", f"base={self.clock_start}"]
        if self.stick is not None:
            command += ["-drive", f"if=none,id=stick,format=raw,file={self.stick}",
                        "-device", "usb-storage,bus=usb.0,drive=stick,removable=on"]
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=(self.folder / "qemu.stderr").open("wb"))

    def _machine(self) -> list[str]:
        """QEMU's machine for the image's CPU: a PC (q35, BIOS) for amd64; for arm64 the
        generic ARM board ``virt`` with EDK2's UEFI firmware (Debian's AAVMF), its variables
        in a copy of their own, and always emulated here (TCG)."""
        if self.arch == "amd64":
            return [shutil.which("qemu-system-x86_64") or "qemu-system-x86_64",
                    "-machine", "q35",
                    "-accel", "kvm" if kvm_usable() else "tcg,thread=multi",
                    # arch-capabilities off: a nested KVM (a cloud VM) refuses that MSR
                    "-cpu", "host,-arch-capabilities" if kvm_usable() else "max"]
        variables = self.folder / "efi-vars.fd"
        if not variables.exists():
            shutil.copyfile(AAVMF / "AAVMF_VARS.fd", variables)
        return [shutil.which("qemu-system-aarch64") or "qemu-system-aarch64",
                "-machine", "virt", "-accel", "tcg,thread=multi", "-cpu", "cortex-a72",
                "-drive", f"if=pflash,format=raw,readonly=on,file={AAVMF / 'AAVMF_CODE.fd'}",
                "-drive", f"if=pflash,format=raw,file={variables}"]

    def wait_for(self, check, what: str, timeout: float) -> float:
        """Poll ``check()`` until it is true; the seconds since boot. AssertionError with the
        console's tail when the machine stops or the time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"QEMU stopped ({self.process.returncode}) before {what}:\n"
                                     f"{(self.folder / 'qemu.stderr').read_text()}\n"
                                     f"{self.console()[-4000:]}")
            if check():
                return time.monotonic() - self.started
            time.sleep(1.0)
        raise AssertionError(f"no {what} after {timeout:.0f} s; the console's end:\n"
                             f"{self.console()[-6000:]}")

    def stop(self) -> None:
        """Power the machine off (as pulling the plug: the box must survive it)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
