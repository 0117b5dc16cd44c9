#!/usr/bin/env bash
# Build (once) the initramfs for the stock-kernel tier and print its path.
# Cached in .vmcache/ keyed by kernel version and the content of init and of
# this script: a change to either, or a new kernel, builds a new one.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KVER="$(vm_kernel_version)" || vm_die "no stock kernel found in /boot: run scripts/vm/setup.sh"
MODDIR="/lib/modules/$KVER"
[ -x /bin/busybox ] && /bin/busybox --list | grep -qx switch_root \
    || vm_die "/bin/busybox (busybox-static) missing: run scripts/vm/setup.sh"
command -v modprobe >/dev/null || vm_die "modprobe (kmod) missing: run scripts/vm/setup.sh"

KEY="$(cat "$VM_DIR/init" "$VM_DIR/build-initramfs.sh" | sha256sum | cut -c1-12)"
OUT="$VMCACHE/initramfs-$KVER-$KEY.cpio.gz"
if [ -s "$OUT" ] && [ "${1:-}" != "--force" ]; then
    echo "$OUT"
    exit 0
fi

mkdir -p "$VMCACHE"
WORK="$(mktemp -d "$VMCACHE/build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,dev,proc,sys,newroot}
cp /bin/busybox "$ROOT/bin/busybox"
cp "$VM_DIR/init" "$ROOT/init"
chmod 0755 "$ROOT/init" "$ROOT/bin/busybox"

# The modules needed to reach the 9p root, in load order, from modprobe's own
# dependency resolution; built-in ones print "builtin" and are skipped.
: >"$ROOT/modules.list"
for mod in virtio_pci 9pnet_virtio 9p; do
    modprobe -S "$KVER" --show-depends "$mod" | while read -r kind path _; do
        [ "$kind" = insmod ] || continue
        grep -qxF "$path" "$ROOT/modules.list" && continue
        case "$path" in
            *.ko) ;;
            *) vm_die "compressed module $path: teach build-initramfs.sh to decompress it" ;;
        esac
        mkdir -p "$ROOT$(dirname "$path")"
        cp "$path" "$ROOT$path"
        echo "$path" >>"$ROOT/modules.list"
    done
done
# A minimal /dev/console so the kernel's early printk and init's stdio work.
mknod -m 600 "$ROOT/dev/console" c 5 1 2>/dev/null || true

(cd "$ROOT" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$WORK/initramfs.cpio.gz"
# Old builds for this kernel are stale now.
rm -f "$VMCACHE"/initramfs-"$KVER"-*.cpio.gz
mv "$WORK/initramfs.cpio.gz" "$OUT"
vm_log "built $OUT ($(wc -l <"$ROOT/modules.list") modules, $(du -k "$OUT" | cut -f1) KiB)"
echo "$OUT"
