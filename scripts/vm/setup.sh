#!/usr/bin/env bash
# Install what the stock-kernel tier (QEMU) needs: idempotent, non-interactive, as root.
#
#   qemu-system-x86   the emulator (TCG: the stock kernel cannot use KVM here)
#   linux-image-amd64 Debian's stock kernel + its modules under /lib/modules
#   busybox-static    a static shell and tools for the initramfs
#   kmod              modinfo/depmod/modprobe (module dependency resolution)
#   zstd xz-utils     decompress .ko.zst/.ko.xz modules if the kernel ships them
#   cpio              pack the initramfs
#   iproute2 iputils-ping  the tests' tools (normally there already)
set -euo pipefail

PKGS=(qemu-system-x86 linux-image-amd64 busybox-static kmod zstd xz-utils cpio iproute2 iputils-ping)

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
# linux-image-amd64 is a metapackage: also require an actual kernel image on disk.
if ! ls /boot/vmlinuz-* >/dev/null 2>&1; then
    [[ " ${missing[*]-} " == *" linux-image-amd64 "* ]] || missing+=(linux-image-amd64)
fi

if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: all present (${PKGS[*]})"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install: ${missing[*]}" >&2
    exit 77
fi

export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have no package lists (or stale ones): update first.
# On a machine where apt already knows every package, skip the network round.
need_update=0
for p in "${missing[@]}"; do
    if ! apt-cache show "$p" >/dev/null 2>&1; then need_update=1; break; fi
done
if [ "$need_update" -eq 1 ]; then
    echo "setup: apt-get update"
    apt-get update -q
fi
echo "setup: installing ${missing[*]}"
# --reinstall is not used; the kernel's postinst may try to run
# update-initramfs / grub: neither is needed here, and a failing hook must not
# leave the kernel unusable, so tolerate it and check the image afterwards.
if ! apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}"; then
    echo "setup: apt-get install reported an error; checking what landed" >&2
fi
ls /boot/vmlinuz-* >/dev/null 2>&1 || { echo "setup: no /boot/vmlinuz-* after install" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { echo "setup: qemu-system-x86_64 missing after install" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "setup: /bin/busybox missing after install" >&2; exit 1; }
echo "setup: done"
