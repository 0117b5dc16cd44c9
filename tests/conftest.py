"""Test-session settings shared by every tier.

The ground-control signing key (emu.plan.trust) lives in a throw-away folder for the
session, never in the machine's /var/lib/leo-emu; subprocesses (``leo-emu up``) inherit it.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_MADE: list[str] = []


def pytest_configure(config) -> None:
    if not os.environ.get("LEOEMU_GC_KEY"):
        d = tempfile.mkdtemp(prefix="leoemu-gc-")
        _MADE.append(d)
        os.environ["LEOEMU_GC_KEY"] = os.path.join(d, "ground-control.key")


def pytest_unconfigure(config) -> None:
    for d in _MADE:
        shutil.rmtree(d, ignore_errors=True)
