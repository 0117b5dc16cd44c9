"""What the SNO core and agent daemons share: the entry point and the admin socket (spec: inter-sno-mobility §5).

``python -m emu.control.sno.core|agent CONFIG.json`` waits until the supervisor
has journaled the process (:func:`emu.control.supervise.wait_journaled`), reads
its configuration (a bad one is one line, exit 2) and runs the daemon. The
admin socket speaks JSON lines: one request object per line, one answer per line.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Callable

from emu.control.supervise import wait_journaled
from emu.errors import InputError


def daemon_main(role: str, load, daemon, argv: list[str] | None) -> int:
    """``python -m emu.control.sno.ROLE CONFIG.json``: wait until the supervisor has journaled this process,
    read the configuration with ``load`` (a bad one: one line, exit 2), run ``daemon(conf).main()``."""
    args = sys.argv[1:] if argv is None else argv
    if not wait_journaled():
        print(f"sno {role}: not journaled by the supervisor within 5 s; not starting", file=sys.stderr)
        return 1
    if len(args) != 1:
        print(f"usage: python -m emu.control.sno.{role} CONFIG.json", file=sys.stderr)
        return 2
    try:
        conf = load(args[0])
    except InputError as exc:
        print(f"sno {role}: {exc}", file=sys.stderr)
        return 2
    asyncio.run(daemon(conf).main())
    return 0


async def serve_admin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      handle: Callable[[dict], dict]) -> None:
    """Answer each JSON line with ``handle(request)``; a bad request is ``{"ok": false, "error": ...}``."""
    try:
        while line := await reader.readline():
            try:
                out = handle(json.loads(line))
            except (ValueError, KeyError, TypeError, InputError) as exc:
                out = {"ok": False, "error": str(exc)}
            writer.write((json.dumps(out) + "\n").encode())
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
