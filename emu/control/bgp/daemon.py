"""One BIRD process inside a namespace: check its configuration, start it (journaled), stop it.

A configuration is checked with ``bird -p -c FILE`` before every start and
every reload: a bad one raises :class:`BirdConfigError` naming the router and
BIRD's own complaint, and nothing is started. The control socket lives in the
router's directory (one per namespace), so ``birdc -s DIR/bird.ctl`` reaches it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from emu.dataplane import procs
from emu.dataplane.state import Run
from emu.errors import DataplaneError, InputError

from . import birdc

BIRD = "bird"
SOCKET_PATH_MAX = 107  # sun_path


class BirdConfigError(InputError):
    """BIRD refused a configuration: exit 2, the router and BIRD's message in one line."""


@dataclass
class Bird:
    """A BIRD daemon for one router: files under ``workdir``, process in ``netns``."""

    name: str
    netns: str
    workdir: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)
    starts: int = 0

    @property
    def config_path(self) -> Path:
        return self.workdir / "bird.conf"

    @property
    def mnp_path(self) -> Path:
        return self.workdir / "mnps.conf"

    @property
    def socket_path(self) -> str:
        return str(self.workdir / "bird.ctl")

    @property
    def log_path(self) -> Path:
        return self.workdir / "bird.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ------------------------------------------------------------------ files
    def write(self, config: str, mnps: str | None = None) -> None:
        """Write the configuration (and the MNP file) atomically; check it; raise on a bad one."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if len(self.socket_path) > SOCKET_PATH_MAX:
            raise InputError(f"bgp workdir: control socket path longer than {SOCKET_PATH_MAX} bytes "
                             f"(got {self.socket_path!r})")
        if mnps is not None:
            _atomic_write(self.mnp_path, mnps)
        _atomic_write(self.config_path, config)
        check_config(self.config_path, self.name)

    def write_mnps(self, mnps: str, check: bool = True) -> str | None:
        """Replace the MNP file (the old text is returned); the caller then reloads (:meth:`reload`). Checked
        through the whole config unless ``check`` is False (a running BIRD refuses a bad file on
        ``configure`` and keeps the old configuration: :meth:`move_mnps`)."""
        old = self.mnp_path.read_text() if self.mnp_path.exists() else None
        _atomic_write(self.mnp_path, mnps)
        if not check:
            return old
        try:
            check_config(self.config_path, self.name)
        except BirdConfigError:
            if old is not None:
                _atomic_write(self.mnp_path, old)
            raise
        return old

    def move_mnps(self, mnps: str) -> None:
        """The hot path of an MNP move: write the MNP file and ``configure`` the running daemon, no ``bird -p``
        (a process start, tens of ms on a loaded machine). BIRD parses the new configuration before it
        switches: a refusal leaves it running the old one; the old file is put back and the refusal raised
        as :class:`BirdConfigError`. A daemon not running (being restarted) gets the checked path."""
        if not self.running():
            self.write_mnps(mnps)
            return
        old = self.write_mnps(mnps, check=False)
        try:
            birdc.configure(self.socket_path)
        except DataplaneError as exc:
            if old is not None:
                _atomic_write(self.mnp_path, old)
            raise BirdConfigError(f"bgp config of {self.name}: bird refused the MNP file: {exc}") from None

    # ------------------------------------------------------------------ process
    def start(self, run: Run | None, wait_s: float = 10.0) -> None:
        """Start ``bird -f`` in the namespace (config checked first), journal its pid, wait for its socket."""
        self.spawn(run)
        self.wait_ready(wait_s)

    def spawn(self, run: Run | None) -> None:
        """Start the process (config checked first) and journal its pid; :meth:`wait_ready` waits for it."""
        check_config(self.config_path, self.name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        err = open(self.workdir / "bird.stderr", "ab")
        try:
            self.proc = procs.popen_in(self.netns, [BIRD, "-f", "-c", str(self.config_path), "-s", self.socket_path],
                                       stdin=subprocess.DEVNULL, stdout=err, stderr=err, close_fds=True,
                                       start_new_session=True)
        except procs.CommandNotFound:
            raise DataplaneError("start bird", self.netns, 127, "bird not installed (apt-get install bird2)") from None
        finally:
            err.close()
        self.starts += 1
        if run is not None:
            run.record_pid(self.proc.pid, f"bird {self.name} in {self.netns}")

    def wait_ready(self, wait_s: float) -> None:
        end = time.monotonic() + wait_s
        while True:
            if self.proc.poll() is not None:
                tail = (self.workdir / "bird.stderr").read_text(errors="replace").strip().splitlines()[-1:] or [""]
                raise DataplaneError(f"start bird {self.name}", self.netns, None,
                                     f"exited with status {self.proc.returncode}: {tail[0][:200]}")
            if os.path.exists(self.socket_path):
                try:
                    birdc.birdc(self.socket_path, "show", "status", timeout_s=5)
                    return
                except DataplaneError:
                    pass
            if time.monotonic() > end:
                raise DataplaneError(f"start bird {self.name}", self.netns, None,
                                     f"control socket {self.socket_path} not answering after {wait_s:.0f} s")
            time.sleep(0.05)

    def reload(self, check: bool = True) -> None:
        """Re-read the configuration (checked first, unless the caller just did) without restarting sessions
        whose configuration did not change."""
        if check:
            check_config(self.config_path, self.name)
        birdc.configure(self.socket_path)

    def stop(self, grace_s: float = 3.0) -> None:
        """SIGTERM (BIRD withdraws its kernel routes on a clean shutdown), then SIGKILL; always reaped."""
        p, self.proc = self.proc, None
        if p is not None:
            procs.stop(p, grace_s)

    def kill(self) -> None:
        """SIGKILL, as a crash would (the keeper notices and restarts; tests of restart use it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()


def check_config(path: Path | str, router: str) -> None:
    """``bird -p -c FILE``: parse only. Raise :class:`BirdConfigError` with BIRD's message on a bad file."""
    try:
        p = subprocess.run([BIRD, "-p", "-c", str(path)], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise DataplaneError("check bird config", None, 127, "bird not installed (apt-get install bird2)") from None
    if p.returncode != 0:
        msg = (p.stderr or p.stdout).strip().splitlines()
        why = msg[-1] if msg else f"exit status {p.returncode}"
        raise BirdConfigError(f"bgp config of {router}: bird refused it: {why}")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
