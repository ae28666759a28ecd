#!/bin/sh
# vmdb2 step (host side): grub-mkconfig names the root file system by its UUID only when
# /dev/disk/by-uuid holds it; udev makes those links on a workstation, not in a container,
# so the build makes them for the image's partitions.
#   uuid-links.sh LOOP_DEVICE
set -eu
mkdir -p /dev/disk/by-uuid
for part in "$1"p*; do
    uuid=$(blkid -s UUID -o value "$part" || true)
    if [ -n "$uuid" ]; then ln -sfn "$part" "/dev/disk/by-uuid/$uuid"; fi
done
