#!/usr/bin/env bash
# Run one command inside Debian's stock kernel under QEMU (TCG) and return its
# exit code. The guest sees the host's / read-only (the same checkout, the same
# Python and site-packages), writable tmpfs on /tmp /run /var/tmp, and a
# results directory ($LEOEMU_VM_OUT inside, printed here) that survives the VM.
# A checkout (or Python) that lives under /tmp, /run, /var/tmp or /dev/shm is
# shared separately and mounted back over the guest's tmpfs, at the same path.
#
#   scripts/vm/vm-run.sh [--timeout SECONDS] [--cwd DIR] [--] CMD [ARG...]
#
# The serial console streams to this terminal. Exit codes: the command's own;
# 124 the VM timed out; 125 the VM stopped without a result (panic, bad init);
# 77 missing setup.
#
# Environment: LEOEMU_VM_TIMEOUT (default 1200 s), LEOEMU_VM_MEM (2G),
# LEOEMU_VM_SMP (2), LEOEMU_VM_KERNEL (a version under /boot),
# LEOEMU_VM_PYTHON (interpreter whose bin/ leads PATH in the guest),
# LEOEMU_VM_KEEP_RUNS (result directories kept, default 5).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TIMEOUT="${LEOEMU_VM_TIMEOUT:-1200}"
CWD="$REPO"
while [ $# -gt 0 ]; do
    case "$1" in
        --timeout) TIMEOUT="$2"; shift 2 ;;
        --cwd) CWD="$2"; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || vm_die "usage: vm-run.sh [--timeout S] [--cwd DIR] [--] CMD [ARG...]" 2

command -v qemu-system-x86_64 >/dev/null || vm_die "qemu-system-x86_64 missing: run scripts/vm/setup.sh" 77
KVER="$(vm_kernel_version)" || vm_die "no stock kernel in /boot: run scripts/vm/setup.sh" 77
KERNEL="/boot/vmlinuz-$KVER"
[ -r "$KERNEL" ] || vm_die "cannot read $KERNEL" 77
INITRD="$("$VM_DIR/build-initramfs.sh")"
# Boot the uncompressed ELF (PVH) when it can be had: ~2.5 s faster under TCG.
if VMLINUX="$("$VM_DIR/extract-vmlinux.sh")"; then KERNEL="$VMLINUX"; fi
# qboot starts faster than SeaBIOS and prints nothing on the serial line.
FIRMWARE=()
for rom in /usr/share/qemu/qboot.rom /usr/share/seabios/qboot.rom; do
    if [ -r "$rom" ]; then FIRMWARE=(-bios "$rom"); break; fi
done

# The guest's interpreter: the host's real python (not a pyenv shim).
PY="$(vm_python || true)"
GUEST_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
[ -n "$PY" ] && GUEST_PATH="$(dirname "$PY"):$GUEST_PATH"

# The guest mounts its own tmpfs on /tmp, /run, /var/tmp and /dev/shm, which
# hides whatever the host keeps there. A checkout, working directory or Python
# installation under one of them is shared with the guest as its own read-only
# 9p device and mounted back at the same path (before cmd.sh changes directory).
shadowed() {
    case "$1" in
        /tmp|/tmp/*|/run|/run/*|/var/tmp|/var/tmp/*|/dev/shm|/dev/shm/*) return 0 ;;
        *) return 1 ;;
    esac
}
EXTRA=()
add_extra() {
    local d p
    d="$(realpath -e "$1" 2>/dev/null)" || return 0
    shadowed "$d" || return 0
    for p in ${EXTRA[@]+"${EXTRA[@]}"}; do
        case "$d" in "$p"|"$p"/*) return 0 ;; esac
    done
    EXTRA+=("$d")
}
PY_DIRS=()
if [ -n "$PY" ]; then
    mapfile -t PY_DIRS < <("$PY" -c 'import site, sys; print(sys.prefix); print(*site.getsitepackages(), sep="\n")' \
        2>/dev/null || true)
fi
# shortest first, so a folder inside another shared one is not shared twice
while IFS= read -r d; do
    [ -n "$d" ] && add_extra "$d"
done < <(printf '%s\n' "$REPO" "$CWD" ${PY_DIRS[@]+"${PY_DIRS[@]}"} | awk '{ print length "\t" $0 }' | sort -n | cut -f2-)
EXTRA_QEMU=()
for i in "${!EXTRA[@]}"; do
    EXTRA_QEMU+=(-fsdev "local,id=extra$i,path=${EXTRA[$i]},security_model=none,readonly=on,multidevs=remap"
                 -device "virtio-9p-pci,fsdev=extra$i,mount_tag=extra$i")
done

# One results directory per run, shared writable with the guest.
mkdir -p "$VMCACHE/runs"
OUTDIR="$(mktemp -d "$VMCACHE/runs/$(date +%Y%m%d-%H%M%S)-XXXX")"
ls -1dt "$VMCACHE"/runs/*/ 2>/dev/null | tail -n +"$(( ${LEOEMU_VM_KEEP_RUNS:-5} + 1 ))" | xargs -r rm -rf
mkdir -p "$OUTDIR/out"
cp "$VM_DIR/stage2.sh" "$OUTDIR/stage2.sh"
# POSIX single quoting (cmd.sh runs under the guest's /bin/sh, not bash:
# printf %q may emit $'...' which dash does not read).
sq() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }
{
    echo "# written by vm-run.sh"
    echo "export PATH=$(sq "$GUEST_PATH")"
    echo "export HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8 TERM=${TERM:-dumb}"
    echo "export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1"
    echo "export HYPOTHESIS_STORAGE_DIRECTORY=/tmp/hypothesis"
    echo "export LEOEMU_VM=1 LEOEMU_VM_OUT=/run/leoemu/out"
    [ -n "${CI:-}" ] && echo "export CI=$(sq "$CI")"
    [ -n "${LEOEMU_VM_PLAN_DEFAULT90:-}" ] && echo "export LEOEMU_VM_PLAN_DEFAULT90=$(sq "$LEOEMU_VM_PLAN_DEFAULT90")"
    for i in "${!EXTRA[@]}"; do
        echo "mkdir -p $(sq "${EXTRA[$i]}") && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro,cache=loose extra$i $(sq "${EXTRA[$i]}") || { echo 'vm: cannot mount '$(sq "${EXTRA[$i]}"); exit 126; }"
    done
    echo "cd $(sq "$CWD") || { echo 'vm: cannot cd to '$(sq "$CWD"); exit 126; }"
    printf 'exec'; for a in "$@"; do printf ' %s' "$(sq "$a")"; done; printf '\n'
} >"$OUTDIR/cmd.sh"

APPEND="console=ttyS0 quiet loglevel=3 panic=1 mitigations=off nokaslr leoemu.vm=1"
vm_log "booting $KVER ($(basename "$KERNEL"), TCG, ${LEOEMU_VM_SMP:-2} CPUs, ${LEOEMU_VM_MEM:-2G}), timeout ${TIMEOUT}s: $*"
start_ns=$(date +%s%N)
set +e
# stdin from /dev/null: QEMU leaves the terminal alone; --foreground keeps
# Ctrl-C working. -no-reboot turns a guest panic (panic=1) into an exit.
timeout --foreground -k 10 "$TIMEOUT" \
    qemu-system-x86_64 -accel tcg -cpu max -m "${LEOEMU_VM_MEM:-2G}" -smp "${LEOEMU_VM_SMP:-2}" \
        -nographic -no-reboot -nodefaults -serial stdio -monitor none \
        ${FIRMWARE[@]+"${FIRMWARE[@]}"} \
        -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" \
        -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap \
        -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
        -fsdev local,id=xfer,path="$OUTDIR",security_model=none,multidevs=remap \
        -device virtio-9p-pci,fsdev=xfer,mount_tag=xfer \
        ${EXTRA_QEMU[@]+"${EXTRA_QEMU[@]}"} \
        </dev/null
qrc=$?
echo
set -e
elapsed_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
elapsed="$((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000)))"

if [ -s "$OUTDIR/rc" ]; then
    rc="$(cat "$OUTDIR/rc")"
    root="$(cat "$OUTDIR/stage2_seconds" 2>/dev/null || echo '?')"
    boot="$(cat "$OUTDIR/boot_seconds" 2>/dev/null || echo '?')"
    vm_log "command exited $rc; kernel start to host root ${root}s, to command ${boot}s (after module preload); QEMU total ${elapsed}s; results in $OUTDIR/out"
    exit "$rc"
fi
if [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then
    vm_log "timed out after ${TIMEOUT}s (no result); partial results in $OUTDIR"
    exit 124
fi
vm_log "the VM stopped without a result (qemu exit $qrc; kernel panic or init failure?)"
exit 125
