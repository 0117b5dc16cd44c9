"""A probe stream for handover experiments: ``python -m emu.control.sno.probe echo|send ...``.

``echo ADDR PORT`` (IPv4 or IPv6) reflects every datagram to its sender (run it in the
Internet's namespace). ``send ADDR PORT --interval-ms 10`` sends one
datagram per interval, on a fixed schedule whatever comes back, each
carrying its sequence number and send time, until SIGINT/SIGTERM or
``--seconds``; then prints one JSON object: ``probe``, ``sent`` and ``replies``
([seq, t_send_ns, t_recv_ns], CLOCK_MONOTONIC, the clock the daemons' step
logs use). iputils ping slows down while nothing answers, which would hide
the very gap a handover makes; this stream does not.

``--size-bytes N`` sets every datagram's (echo request's) payload to N bytes
(default 44: the 12 of sequence number and send time, zero-padded).

``send ADDR 0 --icmp`` sends ICMP (ICMPv6) echo requests on the same fixed
schedule instead (a raw socket: root; the destination's kernel answers, no
echo needed), the sequence number and send time in the payload, replies
matched by the echo identifier: what ``ping`` measures, without its
slowing down.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import struct
import sys
import time

_PKT = struct.Struct("!IQ")
SIZE_BYTES = _PKT.size + 32  # the default payload
_ICMP = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
ECHO_REQUEST = {socket.AF_INET: 8, socket.AF_INET6: 128}
ECHO_REPLY = {socket.AF_INET: 0, socket.AF_INET6: 129}


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data`` (ICMPv4; the kernel fills ICMPv6's)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(family: int, ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP / ICMPv6 echo request carrying ``payload`` (the probe's sequence number and send time)."""
    head = _ICMP.pack(ECHO_REQUEST[family], 0, 0, ident, seq & 0xFFFF)
    csum = checksum(head + payload) if family == socket.AF_INET else 0
    return _ICMP.pack(ECHO_REQUEST[family], 0, csum, ident, seq & 0xFFFF) + payload


def echo_reply_payload(family: int, ident: int, data: bytes) -> bytes | None:
    """The payload of an echo reply to us (``ident``) as a raw socket reads it (IPv4: after the IP header),
    or None for any other packet."""
    if family == socket.AF_INET:
        if len(data) < 20:
            return None
        data = data[(data[0] & 0x0F) * 4:]
    if len(data) < _ICMP.size:
        return None
    typ, _code, _csum, got, _seq = _ICMP.unpack_from(data)
    return data[_ICMP.size:] if typ == ECHO_REPLY[family] and got == ident else None


class _Stream:
    """The socket a stream sends on: UDP datagrams, or ICMP echo requests (``icmp``)."""

    def __init__(self, addr: str, port: int, icmp: bool):
        self.family, self.dst, self.icmp = _family(addr), (addr, port), icmp
        if icmp:
            proto = socket.IPPROTO_ICMPV6 if self.family == socket.AF_INET6 else socket.IPPROTO_ICMP
            self.sock = socket.socket(self.family, socket.SOCK_RAW, proto)
            self.ident = os.getpid() & 0xFFFF
            self.dst = (addr, 0)
        else:
            self.sock = socket.socket(self.family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def send(self, seq: int, payload: bytes) -> None:
        self.sock.sendto(echo_request(self.family, self.ident, seq, payload) if self.icmp else payload, self.dst)

    def recv(self) -> bytes | None:
        data = self.sock.recv(2048)
        return echo_reply_payload(self.family, self.ident, data) if self.icmp else data


def echo(addr: str, port: int) -> int:
    s = socket.socket(_family(addr), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        data, src = s.recvfrom(2048)
        try:
            s.sendto(data, src)
        except OSError:
            continue


def send(addr: str, port: int, interval_ms: float, seconds: float, icmp: bool = False,
         size_bytes: int = SIZE_BYTES) -> int:
    st = _Stream(addr, port, icmp)
    pad = bytes(size_bytes - _PKT.size)
    s = st.sock
    stop = {"now": False}

    def on_signal(*_):
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print("probe started", file=sys.stderr, flush=True)  # signals are handled from here on
    step = int(interval_ms * 1e6)
    t0 = time.monotonic_ns()
    end = t0 + int(seconds * 1e9) if seconds > 0 else None
    seq = 0
    sent: dict[int, int] = {}
    replies: list[list[int]] = []
    errors = 0
    next_ns = t0
    while not stop["now"]:
        now = time.monotonic_ns()
        if end is not None and now >= end:
            break
        if now >= next_ns:
            try:
                st.send(seq, _PKT.pack(seq, now) + pad)
            except OSError:
                errors += 1
            sent[seq] = now
            seq += 1
            next_ns += step
            continue
        try:
            r, _, _ = select.select([s], [], [], (next_ns - now) / 1e9)
        except InterruptedError:
            continue
        if r:
            while True:
                try:
                    data = st.recv()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # an ICMP error from an earlier send
                    errors += 1
                    continue
                if data is not None and len(data) >= _PKT.size:
                    n, t_send = _PKT.unpack_from(data)
                    replies.append([n, t_send, time.monotonic_ns()])
    # a last moment for replies still in flight
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        r, _, _ = select.select([s], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        try:
            data = st.recv()
        except OSError:
            continue
        if data is not None and len(data) >= _PKT.size:
            n, t_send = _PKT.unpack_from(data)
            replies.append([n, t_send, time.monotonic_ns()])
    print(json.dumps({"probe": "icmp" if icmp else "udp", "sent": seq, "send_errors": errors,
                      "interval_ms": interval_ms, "size_bytes": size_bytes, "replies": replies}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emu.control.sno.probe")
    sub = ap.add_subparsers(dest="mode", required=True)
    e = sub.add_parser("echo")
    e.add_argument("addr")
    e.add_argument("port", type=int)
    s = sub.add_parser("send")
    s.add_argument("addr")
    s.add_argument("port", type=int)
    s.add_argument("--interval-ms", type=float, default=10.0)
    s.add_argument("--seconds", type=float, default=0.0)
    s.add_argument("--icmp", action="store_true", help="ICMP echo requests instead of UDP (PORT is ignored)")
    s.add_argument("--size-bytes", type=int, default=SIZE_BYTES, help=f"payload bytes (>= {_PKT.size})")
    a = ap.parse_args(argv)
    if a.mode == "send" and not _PKT.size <= a.size_bytes <= 1472:
        ap.error(f"--size-bytes: must be {_PKT.size}..1472 (got {a.size_bytes})")
    if a.mode == "echo":
        return echo(a.addr, a.port)
    return send(a.addr, a.port, a.interval_ms, a.seconds, a.icmp, a.size_bytes)


if __name__ == "__main__":
    sys.exit(main())
