"""Link shaping with rtnetlink qdisc messages encoded by pyroute2: tbf rate, netem delay, htb.

Why netlink and not ``tc``: a ``tc`` process per interface costs
milliseconds (and more as namespaces grow, MEASURED.md), while a qdisc
message queued on the namespace's ``NetlinkBatch`` rides in the same write
as that namespace's links and routes.

The options come from pyroute2's own qdisc modules (``sched_tbf``,
``sched_netem``, ``sched_htb``), which compute parameters the way ``tc``
does: tbf with its rate table (TCA_TBF_RTAB, 32-bit bytes/s rates, i.e. up
to ~34 Gbit/s), netem with delays in kernel ticks. Encoding a qdisc with
pyroute2 costs ~0.3 ms, so bodies are memoised by their arguments: the 6,336
ISL ends of Starlink shell 1 share one (ifindex, rate) shape per direction.

Kernels without netem (this development kernel, for one) answer ENOENT
("Specified qdisc kind is unknown"); the DataplaneError carries that errno
and the caller decides how to degrade. On Debian's 6.1 under QEMU, netem
(10 ms each way -> 20.7 ms RTT), netem+tbf stacking and ipip were checked.
Replacing a root qdisc by one of another kind at the same handle fails with
EINVAL ("must match existing qdisc"): ``qdisc_del`` first.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE
from pyroute2.netlink.rtnl import RTM_DELQDISC, RTM_GETQDISC, RTM_NEWQDISC, TC_H_ROOT
from pyroute2.netlink.rtnl.tcmsg import sched_htb, sched_netem, sched_tbf, tcmsg

from emu.dataplane.netlink import NetlinkBatch
from emu.dataplane.nlmsg import decode, encode
from emu.errors import DataplaneError

_U32_MAX = 0xFFFFFFFF


def handle(major: int, minor: int = 0) -> int:
    """tc handle ``major:minor`` as the kernel's u32."""
    return (major << 16) | minor


def _verb_flags(verb: str) -> int:
    return {"add": NLM_F_CREATE | NLM_F_EXCL, "replace": NLM_F_CREATE | NLM_F_REPLACE,
            "change": 0}[verb]


def default_burst(rate_bps: int) -> int:
    """A bucket of 4 ms at ``rate_bps`` but at least 64 KiB: one GSO segment
    of a veth must fit, or tbf has to split it and throughput suffers."""
    return max(rate_bps // 8 // 250, 64 * 1024)


def _qdisc_body(kind: str, ifindex: int, qdisc_handle: int, parent: int, options: dict | None) -> bytes:
    attrs = [("TCA_KIND", kind)] + ([("TCA_OPTIONS", options)] if options is not None else [])
    return encode(tcmsg, {"family": socket.AF_UNSPEC, "index": ifindex, "handle": qdisc_handle, "parent": parent},
                  attrs)


@functools.lru_cache(maxsize=4096)
def tbf_body(ifindex: int, rate_bps: int, burst: int | None = None, limit: int | None = None,
             latency_us: int = 50_000, parent: int = TC_H_ROOT, qdisc_handle: int = handle(1)) -> bytes:
    """The RTM_NEWQDISC body of a tbf: ``rate_bps`` bits/s, ``burst`` bytes,
    ``limit`` bytes of queue (default: what ``latency_us`` drains, plus burst).
    pyroute2's tbf module computes the parameters and the rate table as ``tc`` does."""
    rate = rate_bps // 8
    if rate > _U32_MAX:
        raise DataplaneError("qdisc tbf", None, 22, f"rate {rate_bps} bit/s above tbf's 32-bit bytes/s field")
    burst = burst or default_burst(rate_bps)
    kw = {"rate": rate, "burst": burst}
    kw.update({"limit": limit} if limit is not None else {"latency": f"{latency_us}us"})
    return _qdisc_body("tbf", ifindex, qdisc_handle, parent, sched_tbf.get_parameters(kw))


@functools.lru_cache(maxsize=65536)
def netem_body(ifindex: int, delay_us: int, jitter_us: int = 0, loss_pct: float = 0.0, limit_pkts: int = 1000,
               parent: int = TC_H_ROOT, qdisc_handle: int = handle(1)) -> bytes:
    """The RTM_NEWQDISC body of a netem (delay and jitter in us, random loss in %), by pyroute2's netem module."""
    opts = sched_netem.get_parameters({"delay": delay_us, "jitter": jitter_us, "loss": loss_pct,
                                       "limit": limit_pkts})
    return _qdisc_body("netem", ifindex, qdisc_handle, parent, opts)


def tbf(batch: NetlinkBatch, ifindex: int, rate_bps: int, *, burst: int | None = None,
        limit: int | None = None, latency_us: int = 50_000, parent: int = TC_H_ROOT,
        qdisc_handle: int = handle(1), verb: str = "replace") -> int:
    """Queue a tbf qdisc on ``ifindex`` (see :func:`tbf_body`)."""
    body = tbf_body(ifindex, rate_bps, burst, limit, latency_us, parent, qdisc_handle)
    return batch.queue(RTM_NEWQDISC, _verb_flags(verb), body, "qdisc tbf", f"ifindex {ifindex} rate {rate_bps}bit")


def netem(batch: NetlinkBatch, ifindex: int, delay_us: int, *, jitter_us: int = 0,
          loss_pct: float = 0.0, limit_pkts: int = 1000, parent: int = TC_H_ROOT,
          qdisc_handle: int = handle(1), verb: str = "replace") -> int:
    """Queue a netem qdisc (delay, jitter, random loss)."""
    body = netem_body(ifindex, delay_us, jitter_us, loss_pct, limit_pkts, parent, qdisc_handle)
    return batch.queue(RTM_NEWQDISC, _verb_flags(verb), body, "qdisc netem", f"ifindex {ifindex} delay {delay_us}us")


def htb(batch: NetlinkBatch, ifindex: int, *, default_class: int = 0, parent: int = TC_H_ROOT,
        qdisc_handle: int = handle(1), verb: str = "replace") -> int:
    """Queue an htb root qdisc (classes are added by the caller's own policy)."""
    body = _qdisc_body("htb", ifindex, qdisc_handle, parent, sched_htb.get_parameters({"default": default_class}))
    return batch.queue(RTM_NEWQDISC, _verb_flags(verb), body, "qdisc htb", f"ifindex {ifindex}")


def qdisc_del(batch: NetlinkBatch, ifindex: int, parent: int = TC_H_ROOT) -> int:
    """Queue removal of the qdisc at ``parent`` (the root by default)."""
    body = encode(tcmsg, {"family": socket.AF_UNSPEC, "index": ifindex, "parent": parent}, [])
    return batch.queue(RTM_DELQDISC, 0, body, "qdisc del", f"ifindex {ifindex}")


def qdiscs(batch: NetlinkBatch) -> list[dict]:
    """Every qdisc in the batch's namespace: index, kind, handle, parent, options (decoded by pyroute2)."""
    out = []
    for _, p in batch.dump(RTM_GETQDISC, encode(tcmsg, {"family": socket.AF_UNSPEC}, [])):
        m = decode(tcmsg, p)
        opts = m.get("TCA_OPTIONS")
        out.append({"index": m["index"], "kind": m.get("TCA_KIND"), "handle": m["handle"], "parent": m["parent"],
                    "options": opts})
    return out


class LinkShape(NamedTuple):
    """Shaping of one interface: rate (bits/s, None = unshaped) and one-way delay (us)."""

    netns: str
    ifindex: int
    rate_bps: int | None = None
    delay_us: int = 0
    burst: int | None = None


def queue_shapes(shapes: Iterable[LinkShape], batches: Mapping[str, NetlinkBatch]) -> set[str]:
    """Queue many shapes across many namespaces on their batches (a fabric's ``nl``: one write per namespace
    when it flushes them); returns the namespaces written.

    Rate only: tbf at the root. Delay only: netem at the root. Both: netem
    at the root (handle 1:) with tbf as its child (10:), the usual stacking.
    """
    touched = set()
    for s in shapes:
        b = batches[s.netns]
        if s.delay_us:
            netem(b, s.ifindex, s.delay_us)
            if s.rate_bps:
                tbf(b, s.ifindex, s.rate_bps, burst=s.burst, parent=handle(1, 1), qdisc_handle=handle(10))
        elif s.rate_bps:
            tbf(b, s.ifindex, s.rate_bps, burst=s.burst)
        touched.add(s.netns)
    return touched


def shape_many(shapes: Iterable[LinkShape], batches: Mapping[str, NetlinkBatch]) -> int:
    """:func:`queue_shapes`, then each namespace's batch sent; returns messages sent."""
    return sum(batches[n].send().sent for n in queue_shapes(shapes, batches))
