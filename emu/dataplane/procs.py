"""Processes inside a namespace: the namespace is entered in the *child* only.

``setns`` runs between fork and exec (through :mod:`emu.dataplane.netns`,
the one binding of it); the calling process never leaves its own namespace.
argv lists only, never a shell.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

from emu.dataplane import netns
from emu.errors import DataplaneError


class CommandNotFound(DataplaneError):
    """The program to run inside a namespace is not installed: exit code 127, as a shell says it."""

    exit_code = 127


def _enter(netns_name: str, die_with_parent: bool = False):
    """A ``preexec_fn`` that moves the *child* into the namespace (runs between fork and exec); with
    ``die_with_parent``, the child is also killed when the calling thread ends (:func:`netns.die_with_parent`)."""
    path = netns.path(netns_name)
    parent = os.getpid()

    def pre() -> None:
        if die_with_parent and not netns.die_with_parent(parent):
            os._exit(1)  # the caller is already gone: nobody would stop this child
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            netns._setns(fd, netns_name)  # the one setns binding
        finally:
            os.close(fd)

    return pre


def _check_netns(netns_name: str) -> None:
    if not netns.exists(netns_name):
        raise DataplaneError("enter netns", netns_name, None, "the namespace does not exist (is the run up?)")


def popen_in(netns_name: str, argv: list[str], die_with_parent: bool = False, **kw) -> subprocess.Popen:
    """``subprocess.Popen`` of ``argv`` inside a namespace, entered by the child only. ``die_with_parent``: the
    child gets SIGKILL when the calling thread ends, also by kill -9 (PR_SET_PDEATHSIG)."""
    _check_netns(netns_name)
    try:
        return subprocess.Popen(list(argv), preexec_fn=_enter(netns_name, die_with_parent), **kw)
    except FileNotFoundError as exc:
        raise CommandNotFound(f"run {argv[0]}", netns_name, exc.errno, f"{argv[0]}: command not found") from None
    except (OSError, subprocess.SubprocessError) as exc:
        raise DataplaneError(f"run {argv[0]}", netns_name, getattr(exc, "errno", None), str(exc)) from None


def run_in(netns_name: str, argv: list[str], timeout_s: float = 60.0, stdin: str | None = None,
           die_with_parent: bool = False) -> subprocess.CompletedProcess:
    """Run ``argv`` inside a namespace and capture its output (text); a timeout kills it and raises."""
    p = popen_in(netns_name, argv, die_with_parent, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(stdin, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop(p)
        raise DataplaneError(f"run {argv[0]}", netns_name, None, f"no result within {timeout_s:.0f} s") from None
    except BaseException:
        stop(p)
        raise
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def exec_in(netns_name: str, argv: list[str]) -> int:
    """Run ``argv`` inside a namespace with the caller's stdin/stdout/stderr; return its exit code.

    The child stays in the terminal's process group, so Ctrl-C reaches it;
    meanwhile this process ignores SIGINT/SIGQUIT and forwards SIGTERM/SIGHUP,
    and reports the child's status as a shell would (128 + signal).
    """
    p = popen_in(netns_name, argv)
    forwarded = {s: signal.signal(s, lambda signum, _f: p.send_signal(signum)) for s in (signal.SIGTERM, signal.SIGHUP)}
    ignored = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)}
    try:
        rc = p.wait()
    finally:
        for s, h in {**forwarded, **ignored}.items():
            signal.signal(s, h)
    return 128 - rc if rc < 0 else rc


def stop(p: subprocess.Popen, grace_s: float = 2.0) -> None:
    """Terminate, then kill, and always reap."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            p.terminate()
        try:
            p.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait()


def spawn_in(netns_name: str, argv: list[str], die_with_parent: bool = False) -> subprocess.Popen:
    """Start a long-running process inside a namespace (entered in the child only), in its own session."""
    return popen_in(netns_name, argv, die_with_parent, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True)


def interrupt_on(signals=(signal.SIGTERM, signal.SIGHUP)) -> None:
    """From now on ``signals`` raise KeyboardInterrupt in this process, as Ctrl-C does, so its ``finally``
    blocks tear down what it made. A child forked later (a multiprocessing worker) that gets one dies of it
    as by default, never running its parent's clean-up."""
    owner = os.getpid()

    def handler(signum, _frame) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt(f"signal {signum}")

    for s in signals:
        signal.signal(s, handler)
