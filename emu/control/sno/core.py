"""The SNO core daemon: ``python -m emu.control.sno.core CONFIG.json``, run inside a core's namespace.

spec: inter-sno-mobility §4.2 (a core per SNO: authentication, address
assignment, mobility anchoring; secure connectivity between cores over the
terrestrial Internet), §5.1 and §5.2 (the procedures, in
:mod:`emu.control.sno.logic`).

I/O around the pure state machine:

- users: UDP :7140 on every address (the discovery anycast included); the
  access link a message came in on is read from IP_PKTINFO;
- peer cores: TLS 1.3 with client certificates (:mod:`pki`), port 7141 on
  the core's public address; one outgoing connection per peer, reconnected
  when it drops, messages framed by the protocol header's length;
- terrestrial latency: where the kernel has no netem (``latency_mode:
  daemon``) every message to a peer core waits ``latency_ms`` before it is
  written, in order; with netem the kernel delays and this daemon does not;
- the kernel: ``ip -batch`` in this namespace (:mod:`kernel`);
- an admin socket (JSON lines on a Unix socket): ``status``, ``plan``
  (the association plan's next switch for a user), ``set``;
- a state file rewritten after every event, read back after a restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path

from emu.control.sno import kernel, pki, recovery
from emu.control.sno.config import load_core
from emu.control.sno.daemon import daemon_main, serve_admin
from emu.control.sno.actions import Kernel, Step, Timer, ToPeer, ToUser
from emu.control.sno.logic import CoreLogic
from emu.control.sno.steplog import StepLog
from emu.control.sno.wire import HEADER, PEER_PORT, USER_PORT, USER_SIDE, Attr, WireError, decode, encode
from emu.errors import InputError

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
RECONNECT_S = 0.1


class CoreDaemon:
    def __init__(self, conf):
        self.c = conf
        self.logic = CoreLogic(conf, time.time_ns)
        self.log = StepLog(conf.log, conf.name)
        self.queues: dict[str, asyncio.Queue] = {}
        self.connected: dict[str, bool] = {}
        self.sock: socket.socket | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ip = kernel.IpSession()  # one long-lived `ip -batch` in this namespace

    @property
    def delay_s(self) -> float:
        return self.c.latency_ms / 1000.0 if self.c.latency_mode == "daemon" else 0.0

    # ------------------------------------------------------------------------------ actions
    def _kernel(self, pending: list[Kernel]) -> None:
        """Consecutive kernel actions go to the kernel as one ``ip -batch`` (one process, not one each)."""
        if not pending:
            return
        lines = [ln for k in pending for ln in k.lines]
        t0 = time.monotonic_ns()
        errors = self.ip.apply(lines)
        self.log.write("-", "kernel", what=" + ".join(k.what for k in pending),
                       ms=round((time.monotonic_ns() - t0) / 1e6, 3), lines=len(lines),
                       errors=[f"{ln}: {e}" for ln, e in errors])
        pending.clear()

    def execute(self, acts: list) -> None:
        pending: list[Kernel] = []
        for a in acts:
            if isinstance(a, Kernel):
                pending.append(a)
                continue
            if not isinstance(a, Step):
                self._kernel(pending)  # a message never announces a change the kernel has not made yet
            if isinstance(a, Step):
                self.log.write(a.user, a.step, **a.info)
            elif isinstance(a, ToUser):
                if a.addr:
                    try:
                        self.sock.sendto(encode(a.msg, a.key), (a.addr, USER_PORT))
                    except OSError as exc:
                        self.log.write(a.msg.user, "send_failed", to=a.addr, error=str(exc))
            elif isinstance(a, ToPeer):
                self.queues[a.peer].put_nowait((time.monotonic() + self.delay_s, encode(a.msg), a.msg.type.name))
            elif isinstance(a, Timer):
                delay = max(0.0, (a.at_ns - time.monotonic_ns()) / 1e9)
                self.loop.call_later(delay, self._timer, a.token)
        self._kernel(pending)
        self._persist()

    def _timer(self, token) -> None:
        self.execute(self.logic.on_timer(token, time.monotonic_ns()))

    def _persist(self) -> None:
        if not self.c.state:
            return
        tmp = self.c.state + ".tmp"
        with open(tmp, "w") as f:
            json.dump(recovery.snapshot(self.logic), f)
        os.replace(tmp, self.c.state)

    # ------------------------------------------------------------------------------ users (UDP)
    def _on_udp(self) -> None:
        while True:
            try:
                data, anc, _flags, (src, _port) = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return
            ifname = "?"
            for level, kind, cdata in anc:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                    ifindex = struct.unpack_from("i", cdata)[0]
                    try:
                        ifname = socket.if_indextoname(ifindex)
                    except OSError:
                        ifname = str(ifindex)
            try:
                msg = decode(data)
            except WireError as exc:
                self.log.write("-", "malformed", src=src, error=str(exc))
                continue
            if msg.type not in USER_SIDE or "@" not in str(msg.get(Attr.USER, "")):
                self.log.write("-", "malformed", src=src, error=f"{msg.type.name} on the user port")
                continue
            self.execute(self.logic.on_user(msg, src, ifname, time.monotonic_ns()))

    # ------------------------------------------------------------------------------ peers (TLS)
    async def _read_frames(self, reader: asyncio.StreamReader):
        while True:
            head = await reader.readexactly(HEADER.size)
            length = struct.unpack_from("!H", head, 4)[0]
            rest = await reader.readexactly(max(0, length - HEADER.size))
            yield head + rest

    async def _on_peer_conn(self, reader, writer) -> None:
        peer = pki.peer_name(writer.get_extra_info("ssl_object"))
        if peer not in self.c.peers:
            self.log.write("-", "peer_refused", name=peer)
            writer.close()
            return
        self.log.write("-", "peer_connected", peer=peer, direction="in")
        try:
            async for frame in self._read_frames(reader):
                try:
                    msg = decode(frame)
                except WireError as exc:
                    self.log.write("-", "malformed", peer=peer, error=str(exc))
                    continue
                self.execute(self.logic.on_peer(peer, msg, time.monotonic_ns()))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _connect(self, peer: str, ctx):
        p = self.c.peers[peer]
        while True:
            try:
                return await asyncio.open_connection(p.public, PEER_PORT, ssl=ctx, server_hostname=peer)
            except (OSError, asyncio.TimeoutError) as exc:
                if self.connected.get(peer, True):
                    self.log.write("-", "peer_unreachable", peer=peer, error=str(exc))
                self.connected[peer] = False
                await asyncio.sleep(RECONNECT_S)

    async def _peer_sender(self, peer: str, ctx) -> None:
        """One connection to ``peer``; messages leave in order, each after its latency."""
        q = self.queues[peer]
        pending = None
        while True:
            reader, writer = await self._connect(peer, ctx)
            self.connected[peer] = True
            self.log.write("-", "peer_connected", peer=peer, direction="out")
            closed = asyncio.ensure_future(reader.read(1))  # the peer never writes here: any return is its end
            try:
                while True:
                    if pending is None:
                        getter = asyncio.ensure_future(q.get())
                        done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                        if getter not in done:
                            getter.cancel()
                            raise ConnectionError("peer closed the connection")
                        pending = getter.result()
                    due, data, _name = pending
                    wait = due - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    if closed.done():
                        raise ConnectionError("peer closed the connection")
                    writer.write(data)
                    await writer.drain()
                    pending = None
            except (ConnectionError, OSError) as exc:
                self.log.write("-", "peer_lost", peer=peer, error=str(exc), unsent=pending[2] if pending else None)
                closed.cancel()
                writer.close()

    # ------------------------------------------------------------------------------ admin
    async def _on_admin(self, reader, writer) -> None:
        await serve_admin(reader, writer, self.admin)

    def admin(self, req: dict) -> dict:
        op = req["op"]
        if op == "status":
            return {"ok": True, "name": self.c.name, "procedure": self.c.procedure,
                    "latency_ms": self.c.latency_ms, "latency_mode": self.c.latency_mode, "pid": os.getpid(),
                    "connected": self.connected, **recovery.snapshot(self.logic),
                    "pending": {u: v.state for u, v in self.logic.visitors.items()},
                    "tunnels": {p: sorted(us) for p, us in self.logic.tunnels.items()}}
        if op == "plan":
            self.execute(self.logic.on_plan(req["user"], req["target"], int(req["at_ns"]), time.monotonic_ns()))
            return {"ok": True}
        if op == "set":
            if "procedure" in req:
                if req["procedure"] not in ("baseline", "proactive"):
                    raise InputError(f"procedure: baseline or proactive (got {req['procedure']!r})")
                self.c.procedure = req["procedure"]
            if "latency_ms" in req:
                self.c.latency_ms = float(req["latency_ms"])
            return {"ok": True, "procedure": self.c.procedure, "latency_ms": self.c.latency_ms}
        raise KeyError(f"op: unknown (got {op!r})")

    # ------------------------------------------------------------------------------ main
    async def main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.log.write("-", "start", pid=os.getpid(), procedure=self.c.procedure, latency_ms=self.c.latency_ms,
                       latency_mode=self.c.latency_mode)
        snap = {}
        if self.c.state and Path(self.c.state).exists():  # read before anything rewrites it
            try:
                snap = json.loads(Path(self.c.state).read_text())
            except ValueError:
                self.log.write("-", "state_unreadable", path=self.c.state)
        self.execute(self.logic.start() + recovery.restore(self.logic, snap))
        self.log.write("-", "restored", own=len(snap.get("own", {})), visitors=len(snap.get("visitors", {})))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        self.sock.bind(("0.0.0.0", USER_PORT))
        self.sock.setblocking(False)
        self.loop.add_reader(self.sock.fileno(), self._on_udp)
        server = await asyncio.start_server(self._on_peer_conn, self.c.public, PEER_PORT,
                                            ssl=pki.server_context(self.c.pki), reuse_address=True)
        client_ctx = pki.client_context(self.c.pki)
        for peer in self.c.peers:
            self.queues[peer] = asyncio.Queue()
            asyncio.ensure_future(self._peer_sender(peer, client_ctx))
        admin = None
        if self.c.admin:
            Path(self.c.admin).unlink(missing_ok=True)
            admin = await asyncio.start_unix_server(self._on_admin, path=self.c.admin)
            os.chmod(self.c.admin, 0o600)
        stop = asyncio.Event()
        for s in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(s, stop.set)
        self.log.write("-", "ready")
        await stop.wait()
        server.close()
        if admin:
            admin.close()
        self.execute(recovery.teardown(self.logic))
        self.ip.close()
        if self.c.state:
            Path(self.c.state).unlink(missing_ok=True)
        self.log.write("-", "stopped")


def main(argv: list[str] | None = None) -> int:
    return daemon_main("core", load_core, CoreDaemon, argv)

if __name__ == "__main__":
    sys.exit(main())
