#!/usr/bin/env bash
# Build the clinibox appliance image (`make image ARCH=amd64|arm64`), as root, on Debian with
# vmdb2 (scripts/debian-packages.txt, section [image]). Network: Debian's archive and the
# package index (the offline bundle), or their caches.
#
#   image/build.sh [--arch amd64|arm64] [--out DIR] [--cache DIR] [--extras live,ocr,records]
#
# Result in DIR (default build/image/):
#   clinibox-<version>-<arch>.img       the raw disk image (sparse)
#   clinibox-<version>-<arch>.img.zst   compressed, for publishing
#   clinibox-<version>-<arch>.img.bmap  its block map: bmaptool writes only the used blocks
#   SHA256SUMS                          of the three
# The image is built onto a loop device by vmdb2 from image/<arch>.vmdb; Debian's packages
# are cached as a tarball in the cache folder (default /var/cache/clinibox-image), so a rebuild
# installs only the box again.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd -P)
ARCH=amd64
OUT=$REPO/build/image
CACHE=/var/cache/clinibox-image
EXTRAS=live,ocr,records
RELEASE=bookworm
MIRROR=${CLINIBOX_IMAGE_MIRROR:-http://deb.debian.org/debian}
ROOT_MIB=3072      # Debian and two application trees
DATA_MIB=512       # the data partition as built; it fills the disk at first boot

say() { printf 'image/build.sh: %s\n' "$*"; }
die() { printf 'image/build.sh: error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --arch) ARCH=${2:?--arch needs amd64 or arm64}; shift 2 ;;
        --out) OUT=${2:?--out needs a folder}; shift 2 ;;
        --cache) CACHE=${2:?--cache needs a folder}; shift 2 ;;
        --extras) EXTRAS=${2?}; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
                   exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

case "$ARCH" in
    amd64) KERNEL=linux-image-amd64; ROOT_START=3 ;;
    arm64) KERNEL=linux-image-arm64; ROOT_START=129 ;;
    *) die "--arch: amd64 or arm64, not $ARCH" ;;
esac
[ "$(id -u)" = 0 ] || die "building an image needs root (loop devices, mounts, chroot)"
missing=()
for tool in vmdb2 debootstrap parted losetup mkfs.ext4 zerofree bmaptool zstd; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
[ "${#missing[@]}" = 0 ] || die "missing ${missing[*]}: apt-get install \$(scripts/debian-packages.sh image)"
if [ "$ARCH" = arm64 ] && [ "$(dpkg --print-architecture)" != arm64 ]; then
    # the image's programs run in the chroot through QEMU's user emulation (binfmt_misc):
    # registered here if it is not yet (a container may need binfmt_misc mounted first)
    binfmt=/proc/sys/fs/binfmt_misc
    [ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || true
    [ -e "$binfmt/qemu-aarch64" ] || update-binfmts --enable qemu-aarch64 2>/dev/null || true
    grep -qx enabled "$binfmt/qemu-aarch64" 2>/dev/null \
        || die "ARM64 programs cannot run here: apt-get install qemu-user-static binfmt-support," \
               "then update-binfmts --enable qemu-aarch64 (a container needs binfmt_misc" \
               "mounted on $binfmt by its host)"
fi

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml" | head -n 1)
NAME=clinibox-$VERSION-$ARCH
mkdir -p "$OUT" "$CACHE"
OUT=$(cd "$OUT" && pwd -P)
WORK=$(mktemp -d)
LOOP=""
# the partitions parted announced stay with the loop device after it is detached, unless
# they are taken away first (partx), and a later user of that loop device would see them
detach() {
    partx -d "$1" 2>/dev/null || true
    losetup -d "$1"
}
cleanup() {
    if [ -n "$LOOP" ]; then detach "$LOOP" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

started=$(date +%s)
# 1. the offline bundle with the image's extras, for the box's CPU (the wheels the Debian
#    release's Python takes: 3.11 on bookworm)
BUNDLE=$WORK/clinibox-$VERSION-offline
platform=()
if [ "$ARCH" = arm64 ]; then
    platform=(--platform manylinux_2_36_aarch64 --python-version 3.11)   # Debian 12: glibc 2.36
fi
PYTHON=$REPO/.venv/bin/python
[ -x "$PYTHON" ] || PYTHON=$(command -v python3.11 || command -v python3)
"$REPO/scripts/build-wheelhouse.sh" --python "$PYTHON" --out "$BUNDLE" \
    ${EXTRAS:+--extras "$EXTRAS"} "${platform[@]}" > "$WORK/bundle.log" 2>&1 \
    || { cat "$WORK/bundle.log" >&2; die "building the offline bundle failed"; }
rm -f "$BUNDLE.tar.gz"

# 2. the disk, attached as a loop device: parted announces each new partition to the kernel
#    (BLKPG), so vmdb2 needs no device mapper
IMG=$OUT/$NAME.img
rm -f "$IMG" "$IMG.zst" "$IMG.bmap" "$OUT/$NAME.log"
truncate -s $(( (ROOT_START + ROOT_MIB + DATA_MIB + 1) ))M "$IMG"
LOOP=$(losetup --find --show "$IMG") \
    || die "no loop device for $IMG: the build needs loop devices" \
           "(a container started without /dev/loop-control cannot build the image)"
say "building $NAME on $LOOP"
# the cached Debian is named after the steps that make it: a changed package list makes anew
packages=$(sed -n '/^  - debootstrap:/,/^  - cache-rootfs:/p' "$REPO/image/$ARCH.vmdb" \
    | sha256sum | cut -c1-12)
vmdb2 --image "$LOOP" --rootfs-tarball "$CACHE/debian-$RELEASE-$ARCH-$packages.tar.zst" \
    --log "$OUT/$NAME.log" \
    --variable "arch=$ARCH" --variable "release=$RELEASE" --variable "mirror=$MIRROR" \
    --variable "kernel=$KERNEL" --variable "bundle=$BUNDLE" \
    --variable "overlay=$REPO/image/overlay" --variable "steps=$REPO/image/steps" \
    --variable "extras=$EXTRAS" \
    --variable "root_mib=$ROOT_MIB" --variable "root_start=$ROOT_START" \
    --variable "root_end=$(( ROOT_START + ROOT_MIB ))" \
    "$REPO/image/$ARCH.vmdb" \
    || die "vmdb2 failed: $OUT/$NAME.log"
detach "$LOOP"
LOOP=""
built=$(date +%s)
# the offline bundle the image holds, kept beside it: a software release for these boxes is
# cut from a bundle of the same dependencies (clinibox software pack, docs/technician/flash.md)
rm -rf "${OUT:?}/$NAME-offline"
mv "$BUNDLE" "$OUT/$NAME-offline"

# 3. the block map, the compressed image and the checksums
bmaptool -q create -o "$IMG.bmap" "$IMG"
zstd -q -T0 -10 -f "$IMG" -o "$IMG.zst"
(cd "$OUT" && sha256sum "$NAME.img" "$NAME.img.zst" "$NAME.img.bmap" > SHA256SUMS)
finished=$(date +%s)
say "$IMG: $(du -m --apparent-size "$IMG" | cut -f1) MiB, $(du -m "$IMG" | cut -f1) MiB written," \
    "$(du -m "$IMG.zst" | cut -f1) MiB compressed; build $(( built - started )) s," \
    "compression $(( finished - built )) s"
