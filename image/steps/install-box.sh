#!/bin/sh
# vmdb2 step (host side): install the box into the image's root from the offline bundle, as a
# technician's install.sh does it, with /proc in the chroot for systemd-sysusers and -tmpfiles.
#   install-box.sh ROOT BUNDLE EXTRAS
set -eu
root=$1 bundle=$2 extras=$3
rm -rf "$root/root/bundle"
cp -a "$bundle" "$root/root/bundle"
mount -t proc proc "$root/proc"
trap 'umount "$root/proc"' EXIT
chroot "$root" /root/bundle/install.sh --extras "$extras" --device none --no-enable
rm -rf "$root/root/bundle"
