"""Measured RTTs to overlay on the planned delay (``leo-emu plot PLAN rtt --results FILE``).

Two inputs, both placing each sample on the plan's clock (seconds since the
scenario epoch, the x axis of the plot):

- CSV with a header holding ``src,dst,time_s,rtt_ms`` (other columns ignored):
  one echo reply per row, e.g. from a prober.
- JSON: a list of records, or one record per line (JSON lines). A record is
  either a sample ``{"src", "dst", "time_s", "rtt_ms"}`` or the output of
  ``leo-emu ping SRC DST --format json`` (``src``, ``dst``, ``slice``,
  ``rtt_avg_ms``): placed at the middle of its slice. Several ``--format
  json`` outputs appended to one file are read one after another.

Bad input: one :class:`emu.errors.InputError` naming the line and the field.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from emu.errors import InputError


def _num(v, where: str, field: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise InputError(f"--results: {where}: {field} must be a number (got {v!r})") from None
    if not math.isfinite(x):
        raise InputError(f"--results: {where}: {field} must be finite (got {v!r})")
    return x


def _record(rec, where: str, slice_s: float) -> dict | None:
    if not isinstance(rec, dict):
        raise InputError(f"--results: {where}: expected an object (got {type(rec).__name__})")
    for f in ("src", "dst"):
        if not isinstance(rec.get(f), str):
            raise InputError(f"--results: {where}: {f} must be a node name (got {rec.get(f)!r})")
    if "time_s" in rec:
        t, rtt = _num(rec["time_s"], where, "time_s"), _num(rec.get("rtt_ms"), where, "rtt_ms")
    elif "slice" in rec:
        if rec.get("rtt_avg_ms") is None:  # a ping that got no reply: nothing to plot
            return None
        t = (_num(rec["slice"], where, "slice") + 0.5) * slice_s
        rtt = _num(rec["rtt_avg_ms"], where, "rtt_avg_ms")
    else:
        raise InputError(f"--results: {where}: needs time_s and rtt_ms, or slice and rtt_avg_ms (got {sorted(rec)})")
    return {"src": rec["src"], "dst": rec["dst"], "time_s": t, "rtt_ms": rtt}


def load_results(path: str | Path, slice_s: float) -> list[dict]:
    """Samples ``{"src", "dst", "time_s", "rtt_ms"}`` from a CSV or JSON(-lines) file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise InputError(f"--results: cannot read ({exc.strerror}) (got {str(path)!r})") from None
    out: list[dict] = []
    if p.suffix.lower() == ".csv":
        rows = csv.DictReader(text.splitlines())
        missing = {"src", "dst", "time_s", "rtt_ms"} - set(rows.fieldnames or [])
        if missing:
            raise InputError(f"--results: CSV header lacks {', '.join(sorted(missing))} (got {rows.fieldnames})")
        for i, row in enumerate(rows, start=2):
            r = _record(row, f"line {i}", slice_s)
            if r:
                out.append(r)
        return out
    records = _json_values(text, path)
    for i, rec in enumerate(records, start=1):
        r = _record(rec, f"record {i}", slice_s)
        if r:
            out.append(r)
    return out


def _json_values(text: str, path) -> list:
    """Every JSON value in ``text``, one after another (a list, JSON lines, or concatenated ``--format json``
    outputs); a top-level list is flattened."""
    dec, pos, out = json.JSONDecoder(), 0, []
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return out
        try:
            val, pos = dec.raw_decode(text, pos)
        except ValueError as exc:
            raise InputError(f"--results: not JSON ({exc}) (got {str(path)!r})") from None
        out += val if isinstance(val, list) else [val]
