#!/usr/bin/env bash
# The stock-kernel tier (`make test-kernel`): boot Debian's stock kernel under
# QEMU and run the tests marked stock_kernel inside it, against this checkout.
#
#   scripts/vm/run-tests.sh [PYTEST ARGS...]
#
# Extra arguments go to pytest (e.g. -k netem, -x, more test paths). The exit
# code is pytest's; "no tests collected" (pytest's 5) is a failure here, since
# this tier must run something. Results (junit XML) land in
# .vmcache/runs/<run>/out/. LEOEMU_VM_TIMEOUT bounds the VM (default 1200 s).
#
# Inside the VM pytest runs with -p no:cacheprovider (the checkout is
# read-only there) and -p no:hypothesispytest: importing hypothesis at plugin
# load costs ~10 s under TCG; @given tests still run without the plugin.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

t0=$(date +%s%N)
mkdir -p "$VMCACHE"
vm_log "checking the QEMU tier's packages (scripts/vm/setup.sh, log in $VMCACHE/setup.log)"
"$VM_DIR/setup.sh" >"$VMCACHE/setup.log" 2>&1 || {
    cat "$VMCACHE/setup.log" >&2
    vm_die "setup failed (log above, also in $VMCACHE/setup.log)" 77
}
"$VM_DIR/build-initramfs.sh" >/dev/null
"$VM_DIR/extract-vmlinux.sh" >/dev/null || true

tests=()
args=()
for a in "$@"; do
    case "$a" in
        tests/*|./tests/*) tests+=("$a") ;;
        *) args+=("$a") ;;
    esac
done
[ ${#tests[@]} -gt 0 ] || tests=(tests/stock_kernel)

PY="$(vm_python)" || vm_die "no python3 on PATH (set LEOEMU_VM_PYTHON)" 77
(cd "$REPO" && "$PY" -c 'import pytest, emu') 2>/dev/null \
    || vm_die "$PY cannot import pytest and emu: install the project (pip install -e '.[test]') or set LEOEMU_VM_PYTHON" 77

# The plan the delay tests run on, made here: inside the VM the planner's numba kernels would compile under
# TCG (minutes; the host's compiled cache is for the host's CPU and the checkout is read-only there).
export LEOEMU_VM_PLAN_DEFAULT90="$VMCACHE/plan-default-90.db"
(cd "$REPO" && "$PY" - "$LEOEMU_VM_PLAN_DEFAULT90" >/dev/null <<'PYEOF'
import sys
from emu.cli.plan_cmds import build_plan
build_plan("topologies/default.yaml", sys.argv[1], 90, fmt="json")
PYEOF
) || vm_die "planning topologies/default.yaml for the VM failed" 1

set +e
"$VM_DIR/vm-run.sh" --cwd "$REPO" -- \
    "$PY" -m pytest -m stock_kernel -q -p no:cacheprovider -p no:hypothesispytest \
        --rootdir "$REPO" \
        --junitxml=/run/leoemu/out/junit.xml ${args[@]+"${args[@]}"} "${tests[@]}"
rc=$?
set -e
secs=$(( ($(date +%s%N) - t0) / 1000000 ))
case "$rc" in
    0) vm_log "stock-kernel tier passed in $((secs / 1000)).$(printf %03d $((secs % 1000))) s" ;;
    5) vm_log "FAILED: pytest collected no stock_kernel tests (exit 5); this tier must run something"; rc=1 ;;
    124) vm_log "FAILED: the VM timed out" ;;
    125) vm_log "FAILED: the VM stopped without a result" ;;
    *) vm_log "FAILED: pytest exit $rc" ;;
esac
exit "$rc"
