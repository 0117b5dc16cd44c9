"""Named network namespaces, created and entered in-process.

Why not ``ip netns add`` / ``ip netns exec``: one process per namespace costs
1.6 ms at 100 namespaces and 3.9 ms at 1,600 (MEASURED.md), and sysctls via
``netns exec`` dominated an ``ip -batch`` build. Here a namespace is made the
way iproute2 makes it, but without a process: ``unshare(CLONE_NEWNET)`` moves
the *calling thread* into a fresh namespace, the thread's namespace file is
bind-mounted onto ``/run/netns/NAME`` (so ``ip -n NAME`` and every other tool
see it), and the thread ``setns``'s back to where it was. Network namespace
membership is per thread, so other Python threads are never affected.

Everything here is keyed by name; names are plain file names under
``/run/netns``. This module never opens a socket and never changes the
namespace the calling thread started in except inside ``inside()`` and for the
few microseconds ``create_many`` spends in each new namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno as E
import json
import os
import signal
import threading
from collections.abc import Iterable, Iterator, Mapping

from emu.errors import DataplaneError

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 0x100000
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
_SELF_NS = "/proc/thread-self/ns/net"

# What a namespace that forwards needs, set at creation (``create_many``) so
# interfaces made later inherit the ``default`` values:
# - forwarding on, both families;
# - rp_filter off: UCMP / asymmetric paths must not be dropped; a new
#   namespace copies the host's IPv4 ``all``/``default`` values otherwise;
# - no IPv6 DAD at all: IFA_F_NODAD covers the global addresses we add, but
#   a router resolves a *forwarded* packet's next hop with a neighbour
#   solicitation sourced from its link-local address, and the kernel sends
#   none while that address is still tentative: forwarded IPv6 stalls ~2 s
#   after every link comes up.
ROUTER_SYSCTLS: dict[str, int] = {
    "net.ipv4.ip_forward": 1,
    "net.ipv6.conf.all.forwarding": 1,
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
    "net.ipv6.conf.all.accept_dad": 0,
    "net.ipv6.conf.default.accept_dad": 0,
}

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]

_run_dir_lock = threading.Lock()
_run_dir_ready = False


def validate_name(name: str) -> str:
    """Return ``name`` if it can be a namespace file name, else raise.

    ``ip netns`` accepts the same set: non-empty, no ``/``, not ``.``/``..``,
    at most 255 bytes (NAME_MAX).
    """
    if (not isinstance(name, str) or not name or "/" in name or "\0" in name
            or name in (".", "..") or len(name.encode()) > 255):
        raise DataplaneError("validate netns name", None, E.EINVAL, f"bad namespace name {name!r}")
    return name


def path(name: str) -> str:
    """The bind-mount file that keeps namespace ``name`` alive."""
    return f"{NETNS_RUN_DIR}/{validate_name(name)}"


def _fail(op: str, name: str | None, detail: str = "") -> DataplaneError:
    err = ctypes.get_errno()
    return DataplaneError(op, name, err, detail or os.strerror(err))


def _setns(fd: int, name: str | None) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise _fail("setns", name)


def _ensure_run_dir() -> None:
    """Make ``/run/netns`` a shared mount point, exactly as iproute2 does.

    Shared propagation lets an unmount done in one mount namespace reach the
    copies in others, so a deleted namespace is really freed even if some
    process has unshared its mount namespace meanwhile. Done once per process.
    """
    global _run_dir_ready
    with _run_dir_lock:
        if _run_dir_ready:
            return
        os.makedirs(NETNS_RUN_DIR, mode=0o755, exist_ok=True)
        d = NETNS_RUN_DIR.encode()
        made = False
        while _libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
            if ctypes.get_errno() != E.EINVAL or made:
                raise _fail("make /run/netns shared", None)
            # Not a mount point yet: bind it onto itself, then retry.
            if _libc.mount(d, d, b"none", MS_BIND | MS_REC, None) != 0:
                raise _fail("bind-mount /run/netns", None)
            made = True
        _run_dir_ready = True


def exists(name: str) -> bool:
    """True if ``/run/netns/NAME`` exists (mounted or a leftover file)."""
    return os.path.exists(path(name))


def list_names(prefix: str = "") -> list[str]:
    """Names under ``/run/netns`` that start with ``prefix``, sorted."""
    try:
        return sorted(n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def create(name: str, sysctls: Mapping[str, object] | None = None) -> None:
    """Create one named namespace; see ``create_many``."""
    create_many([name], sysctls)


def create_many(names: Iterable[str], sysctls: Mapping[str, object] | None = None) -> None:
    """Create every namespace in ``names`` (EEXIST if one already exists).

    ``sysctls`` (e.g. ``{"net.ipv4.ip_forward": 1}``) are written while the
    thread is already inside each new namespace, which saves a ``setns`` per
    namespace compared with ``set_sysctls_many`` afterwards. Set
    ``net.ipv4.conf.default.*`` here to affect interfaces created later.

    The thread goes from one fresh namespace straight into the next
    (``unshare`` does not care where it starts) and returns to its original
    namespace once, at the end, also on error. On error every namespace made
    by this call is removed again, then the error is raised.

    Cost (1,600 namespaces, this VM): ~0.3 ms unshare, ~0.25 ms for the file
    on /run (ext4 here; tmpfs elsewhere is faster), and the sysctls. The
    first sysctl under each of ``net/ipv4`` and ``net/ipv6`` in a new
    namespace costs O(existing namespaces): the kernel's dcache keeps one
    ``ipv4`` entry per namespace under the shared ``/proc/sys/net`` and a
    miss compares against all of them (~0.25 ms each at 1,600). Later keys
    under the same directory are cheap, so group keys by directory freely.
    """
    names = [validate_name(n) for n in names]
    if not names:
        return
    _ensure_run_dir()
    items = [(_key_path(k), str(v).encode()) for k, v in (sysctls or {}).items()]
    made: list[str] = []
    home = os.open(_SELF_NS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for name in names:
            p = f"{NETNS_RUN_DIR}/{name}"
            try:
                os.close(os.open(p, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
            except OSError as exc:
                raise DataplaneError("create netns file", name, exc.errno, exc.strerror or "") from exc
            made.append(name)
            if _libc.unshare(CLONE_NEWNET) != 0:
                raise _fail("unshare(CLONE_NEWNET)", name)
            if _libc.mount(_SELF_NS.encode(), p.encode(), b"none", MS_BIND, None) != 0:
                raise _fail("bind-mount netns", name)
            for key, value in items:
                _write_sysctl(key, value, name)
    except BaseException:
        _setns(home, None)
        os.close(home)
        home = -1
        delete_many(made)
        raise
    finally:
        if home >= 0:
            _setns(home, None)
            os.close(home)


class Creation:
    """:func:`create_many` of many names in a forked child, while the caller goes on (:func:`create_behind`).

    Making a namespace is kernel work (``unshare``, the bind mount, the sysctls: the child's CPU, not ours), so
    the caller's Python work of the same phase -- the first slice's messages, encoded into a recorder
    (:mod:`emu.dataplane.ahead`) -- runs beside it on the other core. The child only makes namespaces: it writes
    how many are done after each chunk, or its error, to a pipe, and exits; the caller's own namespace and
    threads are never touched. :meth:`wait` reports progress, reaps the child and raises its error.
    """

    def __init__(self, names: list[str], sysctls: Mapping[str, object] | None, chunk: int):
        self.names, self.sysctls, self.chunk = names, sysctls, chunk
        self.pid: int | None = None
        self._r = -1
        if threading.active_count() > 1 or len(os.sched_getaffinity(0)) < 2:
            return  # another thread may hold a lock the child would need; or no second CPU to gain: in wait()
        r, w = os.pipe()
        parent = os.getpid()
        stop = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # no Python handler may run in the child before its try
        try:
            pid = os.fork()
        except OSError:  # no memory or process slot for a child: made in wait(), in this thread
            os.close(r)
            os.close(w)
            return
        finally:
            if os.getpid() == parent:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, stop)
        if pid == 0:  # the child: make the namespaces, say how far it got, exit without Python's clean-up
            code = 2
            try:
                try:
                    for sig in stop:  # killed by them, never running the caller's handlers
                        signal.signal(sig, signal.SIG_DFL)
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, stop)
                    # dies with the caller (a killed `up`): nothing is made after `down` has read the journal
                    if not die_with_parent(parent):
                        raise SystemExit
                    os.close(r)
                    for done in self._chunks():
                        os.write(w, b"%d\n" % done)
                    code = 0
                except BaseException as exc:  # noqa: BLE001 -- create_many removed what it made of its chunk
                    code = 1 if isinstance(exc, DataplaneError) else 2
                    err = exc if code == 1 else DataplaneError("create namespaces", None, getattr(exc, "errno", None),
                                                                repr(exc))
                    with contextlib.suppress(OSError):
                        os.write(w, b"E" + json.dumps([err.op, err.netns, err.errno, err.detail]).encode() + b"\n")
            finally:
                os._exit(code)  # never back into the caller's code
        os.close(w)
        self.pid, self._r = pid, r

    def wait(self, progress=None) -> None:
        """Until every namespace exists; ``progress(done, total)`` after each chunk. Raises the child's error
        (what it made of the failing chunk is removed again, as by :func:`create_many`). Interrupted (Ctrl-C,
        an error of ``progress``), it stops the child first (:meth:`abort`)."""
        total = len(self.names)
        if self.pid is None:
            for done in self._chunks():
                if progress:
                    progress(done, total)
            return
        error = None
        try:
            with os.fdopen(self._r, "rb") as pipe:
                self._r = -1
                for line in pipe:
                    if line.startswith(b"E"):
                        error = DataplaneError(*json.loads(line[1:]))
                    elif progress:
                        progress(int(line), total)
            _pid, status = os.waitpid(self.pid, 0)
        except BaseException:
            self.abort()
            raise
        self.pid = None
        if error is not None:
            raise error
        if status != 0:
            code = os.waitstatus_to_exitcode(status)
            raise DataplaneError("create namespaces", None, None, "the creating child " + (
                f"was killed by signal {-code}" if code < 0 else f"ended with status {code}"))

    def _chunks(self) -> Iterator[int]:
        """Make the namespaces chunk by chunk (in the child, or here without one); after each, how many exist."""
        for i in range(0, len(self.names), self.chunk):
            create_many(self.names[i:i + self.chunk], self.sysctls)
            yield min(i + self.chunk, len(self.names))

    def abort(self) -> None:
        """Stop making namespaces now: the child is killed and reaped (what it made is in the caller's journal;
        a namespace it was making may be a bare file, which :func:`delete_many` removes too). Nothing is made
        after this returns; without a child, nothing was made at all."""
        if self._r >= 0:
            os.close(self._r)
            self._r = -1
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = None


def die_with_parent(parent: int) -> bool:
    """In a freshly forked child: be killed (SIGKILL) when the thread that forked it ends (PR_SET_PDEATHSIG,
    kept across exec); False if ``parent`` is already gone (the child was re-parented before the call), in which
    case the child should exit at once. The kernel watches the forking *thread*: fork from a thread that lives
    as long as the child should."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    return os.getppid() == parent


def create_behind(names: Iterable[str], sysctls: Mapping[str, object] | None = None, chunk: int = 200) -> Creation:
    """Start making ``names`` (as :func:`create_many`, ``chunk`` at a time) in a forked child; the caller
    goes on and calls :meth:`Creation.wait` (or :meth:`Creation.abort`). Where the process has other threads
    or one CPU, nothing is forked and ``wait`` makes them itself."""
    return Creation([validate_name(n) for n in names], sysctls, chunk)


def delete(name: str) -> bool:
    """Remove namespace ``name``; False if it was already gone (idempotent)."""
    return delete_many([name]) == 1


def delete_many(names: Iterable[str]) -> int:
    """Unmount (lazily, MNT_DETACH) and unlink each name; return how many existed.

    The kernel frees a namespace when its last reference goes: the bind
    mount, open fds (``open_fd``), sockets opened inside it and processes in
    it. Interfaces inside are destroyed with it, which is far cheaper than
    deleting links one by one (~20 ms each, MEASURED.md). A name that is
    already gone is not an error.
    """
    removed = 0
    for name in names:
        p = path(name)
        bp = p.encode()
        if _libc.umount2(bp, MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err not in (E.EINVAL, E.ENOENT):  # EINVAL: file exists but is not mounted
                raise DataplaneError("umount netns", name, err, os.strerror(err))
        try:
            os.unlink(p)
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise DataplaneError("unlink netns file", name, exc.errno, exc.strerror or "") from exc
    return removed


def open_fd(name: str) -> int:
    """An O_CLOEXEC fd on namespace ``name`` (for setns or IFLA_NET_NS_FD). Caller closes it."""
    try:
        return os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise DataplaneError("open netns", name, exc.errno, exc.strerror or "") from exc


@contextlib.contextmanager
def inside(name: str) -> Iterator[None]:
    """Run the ``with`` body with the calling thread in namespace ``name``.

    Sockets created in the body belong to ``name`` for their whole life, and
    ``/proc/sys/net`` opened in the body shows ``name``'s sysctls. The thread
    always goes back to the namespace it was in, whatever the body raises;
    if even that fails the process is in an unknown state, and the error
    says so.
    """
    home = os.open(_SELF_NS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # Entering happens inside the try: a signal landing right after the
        # switch must still find the way back (going "back" from home is a no-op).
        target = open_fd(name)
        try:
            _setns(target, name)
        finally:
            os.close(target)
        yield
    finally:
        try:
            if _libc.setns(home, CLONE_NEWNET) != 0:
                raise _fail("setns back to original namespace", name, "thread left in foreign netns")
        finally:
            os.close(home)


def _write_sysctl(key_path: str, value: bytes, name: str | None) -> None:
    try:
        fd = os.open(f"/proc/sys/{key_path}", os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise DataplaneError(f"open sysctl {key_path}", name, exc.errno, exc.strerror or "") from exc
    try:
        os.write(fd, value)
    except OSError as exc:
        raise DataplaneError(f"write sysctl {key_path}={value.decode()}", name, exc.errno,
                             exc.strerror or "") from exc
    finally:
        os.close(fd)


def _key_path(key: str) -> str:
    """``net.ipv4.ip_forward`` -> ``net/ipv4/ip_forward``; a key with ``/`` is taken as a path
    (needed when an interface name in the key contains a dot)."""
    return key if "/" in key else key.replace(".", "/")


def set_sysctl(name: str, key: str, value: object) -> None:
    """Write one sysctl inside namespace ``name`` (never in the caller's namespace)."""
    set_sysctls_many([name], {key: value})


def get_sysctl(name: str, key: str) -> str:
    """Read one sysctl as seen from inside namespace ``name``."""
    with inside(name):
        with open(f"/proc/sys/{_key_path(key)}") as f:
            return f.read().strip()


def set_sysctls_many(names: Iterable[str], settings: Mapping[str, object]) -> None:
    """Write every ``settings`` key in every namespace: one ``setns`` pair per namespace.

    /proc/sys/net resolves to the namespace of the thread that *opens* the
    file, which is why the open happens inside.
    """
    items = [(_key_path(k), str(v).encode()) for k, v in settings.items()]
    home = os.open(_SELF_NS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for name in names:
            fd = open_fd(name)
            try:
                _setns(fd, name)
            finally:
                os.close(fd)
            for key, value in items:
                _write_sysctl(key, value, name)
    finally:
        _setns(home, None)
        os.close(home)
