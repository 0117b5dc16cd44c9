"""Is Mininet usable here: its Python package and its ``mnexec`` helper (pure; no root).

Mininet's nodes start their shells and their commands through ``mnexec``,
a small C helper that PyPI's ``mininet`` package does not ship: it comes from
Debian's ``mininet`` package (installed *without* recommends, so no Open
vSwitch: leo-emu's Mininet nodes are routers joined by veth, no switch).
``make install`` installs both (Makefile target ``install-mininet``).
"""

from __future__ import annotations

import importlib.util
import shutil

from emu.errors import EmuError

INSTALL_HINT = ("install it with `sudo make install-mininet` (= `apt-get install --no-install-recommends mininet` "
                "for mnexec, and `pip install mininet` for the Python package)")
# mnexec is used for every shell (-cd) and every popen (-da PID); bash and ip
# enter the namespace; iperf (v2) and telnet are what Mininet's iperf() runs.
TOOLS = ("mnexec", "ip", "bash")
OPTIONAL_TOOLS = ("iperf", "telnet", "xterm")


class MininetMissing(EmuError):
    """Mininet (package or ``mnexec``) is not installed: the command says how, nothing is started."""

    exit_code = 69  # EX_UNAVAILABLE


def status() -> dict:
    """What of Mininet is present: ``{"package": version|None, "mnexec": path|None, ...}``."""
    version = None
    if importlib.util.find_spec("mininet") is not None:
        try:
            from mininet.net import VERSION as version  # noqa: N811
        except Exception:  # a broken install counts as absent
            version = None
    out = {"package": version}
    for tool in TOOLS + OPTIONAL_TOOLS:
        out[tool] = shutil.which(tool)
    return out


def missing(st: dict | None = None) -> list[str]:
    """The required pieces that are absent, by name (``mininet`` = the Python package)."""
    st = status() if st is None else st
    gone = [] if st.get("package") else ["mininet (Python package)"]
    return gone + [t for t in TOOLS if not st.get(t)]


def require() -> None:
    """Raise :class:`MininetMissing` (one line, with the way to install it) unless Mininet is usable."""
    gone = missing()
    if gone:
        raise MininetMissing(f"mininet: {', '.join(gone)} not found; {INSTALL_HINT}")
