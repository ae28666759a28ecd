"""The appliance image (``make image``): how long it takes to build, how big it is to carry and
to write, and how long its first boot takes until the box answers C-ECHO.

References in the same run: the offline bundle the image is built from (what a technician
carried before the image), and a second boot of the same disk (no first-boot work). The
build is timed with Debian's packages already in the image cache (the usual rebuild) and,
with ``--cold``, from an empty cache too. Needs root and the packages of
``scripts/debian-packages.sh image``; boots amd64 with KVM where /dev/kvm allows it, and
arm64 always emulated (QEMU's TCG: the figures of an ARM board are not these)::

    python -m bench.appliance_image [--arch amd64|arm64] [--cold]

Not in ``run_all``: it takes minutes and root.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree

from bench.common import REPO, figure, machine, save
from tests.image.qemu_box import BootedBox, built_image, c_echo, kvm_usable

CACHE = Path("/var/cache/clinibox-image")


def _build(arch: str) -> float:
    started = time.monotonic()
    subprocess.run([str(REPO / "image" / "build.sh"), "--arch", arch], check=True, cwd=REPO)
    return time.monotonic() - started


def _mib(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 1)


def _written_mib(bmap: Path) -> float:
    """The MiB ``bmaptool copy`` writes: the mapped blocks of the block map."""
    root = ElementTree.parse(bmap).getroot()
    blocks = int(root.findtext("MappedBlocksCount", "").strip())
    size = int(root.findtext("BlockSize", "").strip())
    return round(blocks * size / 2**20, 1)


def _boot_to_echo(box: BootedBox, timeout: float = 3600) -> float:
    box.start()
    return round(box.wait_for(lambda: c_echo(box.dicom_port), "C-ECHO answer", timeout), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", action="store_true",
                        help="also build once from an empty image cache (downloads Debian)")
    parser.add_argument("--arch", default="amd64", choices=["amd64", "arm64"])
    args = parser.parse_args()
    details: dict = {"machine": machine(), "arch": args.arch,
                     "kvm": args.arch == "amd64" and kvm_usable()}
    figures: dict = {}
    if args.cold:
        shutil.rmtree(CACHE, ignore_errors=True)
        details["build_cold_s"] = round(_build(args.arch), 1)
    details["build_warm_s"] = round(_build(args.arch), 1)
    image = built_image(args.arch)
    bundle = Path(tempfile.mkdtemp()) / "bundle"
    platform = (["--platform", "manylinux_2_36_aarch64", "--python-version", "3.11"]
                if args.arch == "arm64" else [])
    subprocess.run([str(REPO / "scripts" / "build-wheelhouse.sh"), "--extras", "live,ocr",
                    "--out", str(bundle), *platform], check=True, cwd=REPO, capture_output=True)
    bundle_mib = _mib(bundle.with_name("bundle.tar.gz"))
    details.update(image_mib=_mib(image), written_mib=_written_mib(Path(f"{image}.bmap")),
                   compressed_mib=_mib(Path(f"{image}.zst")), bundle_mib=bundle_mib)
    with tempfile.TemporaryDirectory() as folder:
        box = BootedBox(image, Path(folder), arch=args.arch)
        try:
            details["first_boot_to_echo_s"] = _boot_to_echo(box)
            box.stop()
            details["second_boot_to_echo_s"] = _boot_to_echo(box)
        finally:
            box.stop()
    figures["first_boot_to_echo"] = figure(details["first_boot_to_echo_s"], "s",
                                           "second boot of the same disk")
    figures["second_boot_to_echo"] = figure(details["second_boot_to_echo_s"], "s")
    if args.cold:
        figures["build_cold"] = figure(details["build_cold_s"], "s", "build with Debian cached")
    figures["build_warm"] = figure(details["build_warm_s"], "s")
    figures["image_compressed"] = figure(details["compressed_mib"], "MiB",
                                         "the offline bundle (.tar.gz)")
    figures["image_written"] = figure(details["written_mib"], "MiB", "the raw image")
    figures["image_raw"] = figure(details["image_mib"], "MiB")
    figures["offline_bundle"] = figure(bundle_mib, "MiB")
    save(f"appliance_image_{args.arch}", details, figures,
         notes=f"KVM: {details['kvm']}; the image's Debian from deb.debian.org")


if __name__ == "__main__":
    main()
