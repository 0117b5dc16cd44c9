"""BGP convergence of an MNP move, from the c-ASBRs' kernel route events (pure: text in, numbers out).

spec: bgp-mobile-routing-atn §4 (the new s-ASBR announces, the old one
withdraws), §6 (timers). Convergence of one move = from the new s-ASBR's
announcement (``moves.jsonl``: ``called_at``, before ``bird -p`` and
``birdc configure``) to the moment the MNP's route is in *every* c-ASBR's
kernel FIB via the next hop that leads to the new GS (``overlay.json``:
``expected_via``). The events come from netlink (``ip -ts -6 monitor route``
inside each core namespace), never from /proc/net/ipv6_route.

A c-ASBR whose route already had that next hop before the announcement
(e.g. another operator's core, whose next hop is the owner's core either
way) counts from its first event for the MNP after the announcement if
there is one (BIRD replaces the route: new AS path), else as unchanged.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from datetime import datetime

_LINE = re.compile(r"^\[(?P<ts>[0-9T:.\-]+)\]\s+(?P<deleted>Deleted\s+)?(?P<body>.*)$")
_VIA = re.compile(r"\bvia\s+(?P<via>\S+)")


@dataclass(frozen=True)
class RouteEvent:
    t: float  # wall-clock seconds (the monitor's local time)
    dst: str
    via: str | None
    deleted: bool


def parse_monitor(text: str) -> list[RouteEvent]:
    """``ip -ts -6 monitor route`` lines -> events (other lines ignored)."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        body = m["body"].split()
        if not body:
            continue
        dst = body[0]
        if dst in ("unreachable", "blackhole", "prohibit", "local", "multicast") and len(body) > 1:
            dst = body[1]
        v = _VIA.search(m["body"])
        ts = datetime.fromisoformat(m["ts"]).timestamp()
        out.append(RouteEvent(ts, dst, v["via"] if v else None, bool(m["deleted"])))
    return out


def move_convergence(move: dict, events: dict[str, list[RouteEvent]], expected: dict[str, str],
                     until: float | None = None) -> dict:
    """One move's convergence: ``{"s": max over c-ASBRs or None, "per_core": {core: s or "unchanged" or None}}``.

    ``events``: per c-ASBR, its kernel route events; ``expected``: per c-ASBR, the next hop toward the new GS;
    ``until``: ignore events from then on (the MNP's next move). None = never converged within the window."""
    t0 = move["called_at"]
    per: dict[str, float | str | None] = {}
    for core, via in expected.items():
        evs = [e for e in events.get(core, []) if e.dst == move["mnp"] and (until is None or e.t < until)]
        before = [e for e in evs if e.t < t0]
        after = [e for e in evs if e.t >= t0 and not e.deleted and e.via == via]
        if after:
            per[core] = round(after[0].t - t0, 6)
        elif before and not before[-1].deleted and before[-1].via == via:
            per[core] = "unchanged"
        else:
            per[core] = None
    times = [v for v in per.values() if isinstance(v, float)]
    ok = all(v is not None for v in per.values())
    return {"s": (max(times) if times else 0.0) if ok else None, "per_core": per}


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "median_ms": None, "p90_ms": None, "max_ms": None}
    v = sorted(values)
    p90 = v[min(len(v) - 1, int(round(0.9 * (len(v) - 1))))]
    return {"n": len(v), "median_ms": round(statistics.median(v) * 1e3, 1), "p90_ms": round(p90 * 1e3, 1),
            "max_ms": round(v[-1] * 1e3, 1)}


_PING = re.compile(r"^\[(?P<t>\d+\.\d+)\]\s+\d+ bytes from .*icmp_seq=(?P<seq>\d+)")


def parse_ping_replies(text: str) -> list[tuple[float, int]]:
    """``ping -D`` output -> (reply time, icmp_seq) of every echo reply."""
    out = []
    for line in text.splitlines():
        m = _PING.match(line.strip())
        if m:
            out.append((float(m["t"]), int(m["seq"])))
    return out


def interruption(replies: list[tuple[float, int]], t0: float, before_s: float, after_s: float,
                 interval_s: float) -> dict | None:
    """The longest silence of a probe flow around a move at ``t0``: the largest gap between consecutive replies
    whose span meets [t0 - before_s, t0 + after_s], less one interval; and the sequence numbers missing there.
    None without replies on both sides of the window (the flow was not running)."""
    times = sorted(replies)
    lo, hi = t0 - before_s, t0 + after_s
    prev = [r for r in times if r[0] < lo]
    inside = [r for r in times if lo <= r[0] <= hi]
    nxt = [r for r in times if r[0] > hi]
    if not prev or not nxt:
        return None
    seq = [prev[-1]] + inside + [nxt[0]]
    gap = max(b[0] - a[0] for a, b in zip(seq, seq[1:]))
    got = {s for _t, s in seq}
    lost = sum(1 for s in range(seq[0][1], seq[-1][1] + 1) if s not in got)
    return {"gap_ms": round(max(0.0, gap - interval_s) * 1e3, 1), "lost": lost}
