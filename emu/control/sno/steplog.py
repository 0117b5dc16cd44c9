"""Procedure steps as JSON lines, each stamped with CLOCK_MONOTONIC ns (one clock for every namespace)."""

from __future__ import annotations

import json
import sys
import time


class StepLog:
    def __init__(self, path: str, node: str):
        self.node = node
        self._f = open(path, "a", buffering=1) if path else sys.stdout

    def write(self, user: str, step: str, **info) -> None:
        rec = {"t_ns": time.monotonic_ns(), "node": self.node, "user": user, "step": step, **info}
        self._f.write(json.dumps(rec, default=str) + "\n")


def read(path: str) -> list[dict]:
    """Every record of a step log (a line cut short by a kill is skipped)."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
    except OSError:
        return []
    return out
