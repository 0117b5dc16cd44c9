"""A UDP probe stream for handover experiments: ``python -m emu.control.sno.probe echo|send ...``.

``echo ADDR PORT`` (IPv4 or IPv6) reflects every datagram to its sender (run it in the
Internet's namespace). ``send ADDR PORT --interval-ms 10`` sends one
datagram per interval, on a fixed schedule whatever comes back, each
carrying its sequence number and send time, until SIGINT/SIGTERM or
``--seconds``; then prints one JSON object: ``sent`` and ``replies``
([seq, t_send_ns, t_recv_ns], CLOCK_MONOTONIC, the clock the daemons' step
logs use). iputils ping slows down while nothing answers, which would hide
the very gap a handover makes; this stream does not.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import socket
import struct
import sys
import time

_PKT = struct.Struct("!IQ")


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


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


def send(addr: str, port: int, interval_ms: float, seconds: float) -> int:
    s = socket.socket(_family(addr), socket.SOCK_DGRAM)
    s.setblocking(False)
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
                s.sendto(_PKT.pack(seq, now) + bytes(32), (addr, port))
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
                    data = s.recv(2048)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # an ICMP error from an earlier send
                    errors += 1
                    continue
                if len(data) >= _PKT.size:
                    n, t_send = _PKT.unpack_from(data)
                    replies.append([n, t_send, time.monotonic_ns()])
    # a last moment for replies still in flight
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        r, _, _ = select.select([s], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        try:
            data = s.recv(2048)
        except OSError:
            continue
        if len(data) >= _PKT.size:
            n, t_send = _PKT.unpack_from(data)
            replies.append([n, t_send, time.monotonic_ns()])
    print(json.dumps({"sent": seq, "send_errors": errors, "interval_ms": interval_ms, "replies": replies}))
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
    a = ap.parse_args(argv)
    if a.mode == "echo":
        return echo(a.addr, a.port)
    return send(a.addr, a.port, a.interval_ms, a.seconds)


if __name__ == "__main__":
    sys.exit(main())
