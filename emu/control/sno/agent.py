"""The user-terminal agent: ``python -m emu.control.sno.agent CONFIG.json``, run inside a UT's namespace.

spec: inter-sno-mobility §5.1 ("once the new link becomes operational, the
user broadcasts a core discovery message containing its unique
identifier"). The agent learns link changes from the kernel, not from the
emulator: it listens to rtnetlink (links and IPv4 routes) and takes the
uplink to be the interface of the main table's default route, among its
configured uplinks. A new uplink is a new link; no default route means no
link. Core discovery goes to the discovery anycast address, which every
core holds and every ground station routes to its own core.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

from emu.control.sno.agent_logic import AgentLogic
from emu.control.sno.config import load_agent
from emu.control.sno.daemon import daemon_main, serve_admin
from emu.control.sno.actions import Step, Timer, ToCore
from emu.control.sno.steplog import StepLog
from emu.control.sno.uplink import UplinkWatch
from emu.control.sno.wire import USER_PORT, USER_SIDE, WireError, decode, encode


class AgentDaemon:
    def __init__(self, conf):
        self.c = conf
        self.logic = AgentLogic(conf.user, conf.key, conf.retransmit_ms, time.time_ns)
        self.log = StepLog(conf.log, conf.name)
        self.sock: socket.socket | None = None
        self.loop = None
        self.watch: UplinkWatch | None = None

    def execute(self, acts: list) -> None:
        for a in acts:
            if isinstance(a, Step):
                self.log.write(a.user, a.step, **a.info)
            elif isinstance(a, ToCore):
                try:
                    self.sock.sendto(encode(a.msg), (self.c.anycast, USER_PORT))
                except OSError as exc:  # no route yet: the retransmission timer tries again
                    self.log.write(self.c.user, "send_failed", error=str(exc), msg=a.msg.type.name)
            elif isinstance(a, Timer):
                self.loop.call_later(max(0.0, (a.at_ns - time.monotonic_ns()) / 1e9), self._timer, a.token)

    def _timer(self, token) -> None:
        self.execute(self.logic.on_timer(token, time.monotonic_ns()))

    def _on_netlink(self) -> None:
        self.watch.drain()  # events only wake us; the state is read back whole
        self.execute(self.logic.on_link(self.watch.current(), time.monotonic_ns()))

    def _on_udp(self) -> None:
        while True:
            try:
                data, (src, port) = self.sock.recvfrom(4096)
            except BlockingIOError:
                return
            try:
                msg = decode(data)
            except WireError as exc:
                self.log.write(self.c.user, "malformed", src=src, error=str(exc))
                continue
            if msg.type not in USER_SIDE:
                continue
            self.execute(self.logic.on_msg(msg, time.monotonic_ns()))

    async def _on_admin(self, reader, writer) -> None:
        await serve_admin(reader, writer, self.admin)

    def admin(self, req: dict) -> dict:
        if req.get("op") == "relink":  # a new access link on the same uplink (a new GS, same core)
            now = time.monotonic_ns()
            self.execute(self.logic.on_link(None, now) + self.logic.on_link(self.watch.current(), now))
        if req.get("op") in ("status", "relink"):
            return {"ok": True, "pid": os.getpid(), **self.logic.status()}
        return {"ok": False, "error": f"op: unknown (got {req.get('op')!r})"}

    async def main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.log.write(self.c.user, "start", pid=os.getpid(), uplinks=self.c.uplinks)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", USER_PORT))
        self.sock.setblocking(False)
        self.loop.add_reader(self.sock.fileno(), self._on_udp)
        self.watch = UplinkWatch(self.c.uplinks, self.c.table)
        self.loop.add_reader(self.watch.fd, self._on_netlink)
        admin = None
        if self.c.admin:
            Path(self.c.admin).unlink(missing_ok=True)
            admin = await asyncio.start_unix_server(self._on_admin, path=self.c.admin)
            os.chmod(self.c.admin, 0o600)
        self.execute(self.logic.on_link(self.watch.current(), time.monotonic_ns()))
        stop = asyncio.Event()
        for s in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(s, stop.set)
        await stop.wait()
        if admin:
            admin.close()
        self.log.write(self.c.user, "stopped")


def main(argv: list[str] | None = None) -> int:
    return daemon_main("agent", load_agent, AgentDaemon, argv)

if __name__ == "__main__":
    sys.exit(main())
