"""A timestamped ICMP echo prober whose socket lives in a node's namespace.

Used to measure loss per slice during accelerated runs: every probe's send
time, sequence number and RTT are kept, so losses can be matched with slice
boundaries. The socket is opened inside the namespace by one thread
(``netns.inside``) and then used from anywhere: a socket keeps the namespace
it was created in. No per-packet Python on the forwarding path: this is only
the end host.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field

from emu.dataplane import netns


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


@dataclass
class ProbeResult:
    sent_at: list[float] = field(default_factory=list)  # unix time per sequence number
    rtt_ms: dict[int, float] = field(default_factory=dict)  # seq -> rtt

    @property
    def sent(self) -> int:
        return len(self.sent_at)

    @property
    def received(self) -> int:
        return len(self.rtt_ms)

    def lost_seqs(self) -> list[int]:
        return [i for i in range(self.sent) if i not in self.rtt_ms]


def ping_series(netns_name: str, dst: str, count: int, interval_s: float = 0.01, timeout_s: float = 1.0,
                ident: int | None = None) -> ProbeResult:
    """Send ``count`` echo requests every ``interval_s`` from ``netns_name`` to ``dst``."""
    with netns.inside(netns_name):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = (os.getpid() if ident is None else ident) & 0xFFFF
    res = ProbeResult()
    payload = b"leo-emu-probe"
    t0 = time.monotonic()
    wall0 = time.time()
    try:
        sock.setblocking(False)
        seq = 0
        end = t0 + count * interval_s + timeout_s
        while True:
            now = time.monotonic()
            if seq < count and now >= t0 + seq * interval_s:
                hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq & 0xFFFF)
                pkt = struct.pack("!BBHHH", 8, 0, _checksum(hdr + payload), ident, seq & 0xFFFF) + payload
                try:
                    sock.sendto(pkt, (dst, 0))
                except OSError:
                    pass  # e.g. no route right now: counts as lost
                res.sent_at.append(wall0 + (now - t0))
                seq += 1
                continue
            if now > end or (seq >= count and res.received >= count):
                break
            nxt = t0 + seq * interval_s if seq < count else end
            r, _, _ = select.select([sock], [], [], max(0.0, min(nxt - now, 0.05)))
            if not r:
                continue
            while True:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                ihl = (data[0] & 0x0F) * 4
                typ, _code, _ck, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                if typ == 0 and rid == ident and rseq < len(res.sent_at) and rseq not in res.rtt_ms:
                    # seq wraps at 65536: only first-lap sequence numbers are matched
                    res.rtt_ms[rseq] = (time.time() - res.sent_at[rseq]) * 1e3
    finally:
        sock.close()
    return res
