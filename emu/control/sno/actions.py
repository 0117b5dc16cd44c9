"""What the pure state machines ask their daemon to do, in order (spec: inter-sno-mobility §5.1, §5.2).

:mod:`logic` (a core) and :mod:`agent_logic` (a terminal) return lists of
these; :mod:`core` and :mod:`agent` carry them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emu.control.sno.wire import Message


@dataclass(frozen=True)
class ToUser:
    addr: str
    msg: Message
    key: bytes | None = None  # tag the message (AUTH) with this key


@dataclass(frozen=True)
class ToCore:
    """Agent -> the core at the far end of its current link (the discovery anycast)."""

    msg: Message


@dataclass(frozen=True)
class ToPeer:
    peer: str
    msg: Message


@dataclass(frozen=True)
class Kernel:
    what: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Timer:
    at_ns: int
    token: tuple


@dataclass(frozen=True)
class Step:
    """One timestamped procedure step for the JSON-lines log."""

    user: str
    step: str
    info: dict = field(default_factory=dict)
