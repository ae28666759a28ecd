#!/bin/sh
# vmdb2 step (host side): GRUB for UEFI on the image's EFI system partition, without mounting
# it. vmdb2's own "grub: uefi" mounts the ESP, which needs the kernel's FAT driver: build
# machines (containers, CI) often lack it. So grub-mkstandalone (GRUB's own tool, in the
# image's chroot) makes one EFI program holding GRUB's modules (in its memdisk) and a first
# config that finds the root file system by its UUID and reads the grub.cfg grub-mkconfig
# wrote there, and mtools puts it at the removable-media path the firmware boots with no boot
# entry (EFI/BOOT/BOOTAA64.EFI): a box needs nothing stored in its firmware's NVRAM.
#   grub-efi.sh ROOT ESP_PARTITION ROOT_PARTITION EFI_TARGET EFI_NAME
set -eu
root=$1 esp=$2 root_part=$3 target=$4 name=$5
uuid=$(blkid -s UUID -o value "$root_part")
[ -n "$uuid" ] || { echo "grub-efi.sh: $root_part has no UUID" >&2; exit 1; }

for fs in dev sys proc; do
    mount --bind "/$fs" "$root/$fs"
done
trap 'for fs in proc sys dev; do umount "$root/$fs" || true; done' EXIT

# the kernel's command line: the board's screen (tty0) and its serial port, as on amd64;
# GRUB itself writes to the firmware's console, which UEFI shows on both
sed -i -e '/^GRUB_CMDLINE_LINUX_DEFAULT=/d' -e '/^GRUB_TERMINAL=/d' -e '/^GRUB_TIMEOUT=/d' \
    "$root/etc/default/grub"
cat >> "$root/etc/default/grub" <<CONFIG
GRUB_CMDLINE_LINUX_DEFAULT="net.ifnames=0 consoleblank=0 rw loglevel=3 console=tty0 console=ttyAMA0,115200n8 systemd.show_status=true"
GRUB_TERMINAL=console
GRUB_TIMEOUT=1
CONFIG
chroot "$root" grub-mkconfig -o /boot/grub/grub.cfg

# GRUB's prefix stays its own memdisk, where its modules are: the root file system holds
# none (no grub-install put them there)
cat > "$root/tmp/grub-early.cfg" <<CONFIG
search --no-floppy --fs-uuid --set=root $uuid
configfile (\$root)/boot/grub/grub.cfg
CONFIG
chroot "$root" grub-mkstandalone -O "$target" -o /tmp/grub.efi \
    --modules="part_gpt ext2 search_fs_uuid configfile normal linux" \
    "boot/grub/grub.cfg=/tmp/grub-early.cfg"
export MTOOLS_SKIP_CHECK=1
mmd -i "$esp" ::/EFI ::/EFI/BOOT
mcopy -i "$esp" "$root/tmp/grub.efi" "::/EFI/BOOT/$name"
mdir -i "$esp" ::/EFI/BOOT
rm -f "$root/tmp/grub.efi" "$root/tmp/grub-early.cfg"
