# Shared helpers for scripts/vm/*.sh (sourced, not run).
# REPO: the checkout; VMCACHE: git-ignored cache beside it; KVER: the stock kernel used.

VM_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$VM_DIR/../.." && pwd)"
VMCACHE="${LEOEMU_VMCACHE:-$REPO/.vmcache}"

vm_log() { echo "vm: $*" >&2; }
vm_die() { echo "vm: error: $*" >&2; exit "${2:-1}"; }

# The stock kernel to boot: $LEOEMU_VM_KERNEL (a version, e.g. 6.1.0-56-amd64)
# or the newest /boot/vmlinuz-* that has its modules installed.
vm_kernel_version() {
    if [ -n "${LEOEMU_VM_KERNEL:-}" ]; then
        echo "$LEOEMU_VM_KERNEL"
        return
    fi
    local v best=""
    for img in /boot/vmlinuz-*; do
        [ -e "$img" ] || continue
        v="${img#/boot/vmlinuz-}"
        [ -d "/lib/modules/$v/kernel" ] || continue
        if [ -z "$best" ] || [ "$(printf '%s\n%s\n' "$best" "$v" | sort -V | tail -n1)" = "$v" ]; then
            best="$v"
        fi
    done
    [ -n "$best" ] || return 1
    echo "$best"
}

# The interpreter the guest runs: $LEOEMU_VM_PYTHON, else the real path behind
# the host's python3 (a pyenv shim resolves to its version's binary). The
# guest sees the host's /, so the same site-packages come with it.
vm_python() {
    if [ -n "${LEOEMU_VM_PYTHON:-}" ]; then
        echo "$LEOEMU_VM_PYTHON"
        return
    fi
    python3 -c 'import sys; print(sys.executable)' 2>/dev/null
}
