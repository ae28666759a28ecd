#!/bin/sh
# vmdb2 step (host side), the last: the compiler out, the package lists and caches gone, the
# box's units enabled (install.sh ran with --no-enable: no systemd runs in the chroot), the
# box's name and resolver; nothing of one box is left in the image.
#   finish.sh ROOT
set -eu
chroot "$1" /bin/sh -eu <<'STEPS'
apt-get purge -y -q g++ g++-12 cpp cpp-12 gcc-12 libdcmtk-dev libstdc++-12-dev
apt-get autoremove -y -q
apt-get clean
rm -rf /var/lib/apt/lists/*
systemctl enable clinibox.service clinibox-web.service clinibox-retention.timer \
    clinibox-software-update.path clinibox-software-assess.service clinibox-clock.path \
    clinibox-firstboot.service clinibox-console.timer systemd-networkd.service \
    systemd-resolved.service systemd-timesyncd.service
systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer
# per box, made at the first boot: the machine id (systemd), nothing else is kept
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
echo clinibox > /etc/hostname
mkdir -p /etc/issue.d
# root logs in at the box's own screen only (no SSH server): with no password the first
# time, and must set one at once
passwd -d root
chage -d 0 root
ln -sf /run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
STEPS
