#!/usr/bin/env bash
# Print the path of an uncompressed vmlinux (ELF) for the stock kernel, cached
# in .vmcache/. QEMU boots such an ELF directly through its PVH entry point,
# skipping the in-guest decompression of the bzImage (xz under TCG: ~2.5 s).
# The logic is the kernel's scripts/extract-vmlinux: find the compressed
# payload's magic inside the bzImage and decompress from there.
# Prints nothing and exits 1 when it cannot (vm-run.sh then boots the bzImage).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KVER="$(vm_kernel_version)" || vm_die "no stock kernel found in /boot: run scripts/vm/setup.sh"
IMG="/boot/vmlinuz-$KVER"
OUT="$VMCACHE/vmlinux-$KVER"
if [ -s "$OUT" ] && [ "$OUT" -nt "$IMG" ]; then
    echo "$OUT"
    exit 0
fi
grep -qx 'CONFIG_PVH=y' "/boot/config-$KVER" 2>/dev/null || { vm_log "kernel $KVER has no PVH entry"; exit 1; }
mkdir -p "$VMCACHE"
TMP="$(mktemp "$VMCACHE/vmlinux.XXXXXX")"
trap 'rm -f "$TMP"' EXIT

is_elf() { [ "$(head -c4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ]; }

try() {  # try MAGIC DECOMPRESSOR...
    local magic="$1"; shift
    command -v "$1" >/dev/null || return 1
    local pos
    for pos in $(LC_ALL=C grep -abo "$magic" "$IMG" 2>/dev/null | cut -d: -f1); do
        # Trailing bytes after the stream make the decompressor complain: ignore.
        tail -c +"$((pos + 1))" "$IMG" | "$@" >"$TMP" 2>/dev/null || true
        if [ -s "$TMP" ] && is_elf "$TMP"; then return 0; fi
    done
    return 1
}

if try $'\xfd7zXZ\x00' xz -dc || try $'\x28\xb5\x2f\xfd' zstd -dc || try $'\x1f\x8b\x08' gzip -dc \
    || try $'\x02\x21\x4c\x18' lz4 -dc; then
    mv "$TMP" "$OUT"
    trap - EXIT
    vm_log "extracted $OUT ($(du -m "$OUT" | cut -f1) MiB)"
    echo "$OUT"
    exit 0
fi
vm_log "could not extract vmlinux from $IMG"
exit 1
