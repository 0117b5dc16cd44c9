"""Challenge-response authentication by the home core, session keys and replay windows (pure).

spec: inter-sno-mobility §4.2 ("the SNO core network continues to handle
... user authentication"), §5.1 (core B forwards the identifier to core A,
"allowing core A to authenticate the user"), §5.2 ("proactive auth(ID)").

The per-user key K never leaves the home core. For each authentication the
home core issues a one-time *vector*, as a 3GPP home network does for a
serving network: a random challenge RAND, the expected response
XRES = HMAC-SHA256(K, "sno-res" | RAND | user | serving core) and a session
key KS = HMAC-SHA256(K, "sno-ks" | RAND). The serving core (the home core
itself, or a visited core that received the vector over the authenticated
inter-core channel) sends RAND to the user and compares the user's RES with
XRES. A vector is bound to one serving core, is single-use and expires.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import deque
from dataclasses import dataclass

RAND_LEN = 16
KEY_LEN = 32
VECTOR_TTL_NS = 30_000_000_000


def tag(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 tag of ``data``."""
    return hmac.new(key, data, hashlib.sha256).digest()


def check_tag(key: bytes, data: bytes, got: bytes) -> bool:
    return hmac.compare_digest(tag(key, data), got)


def response(key: bytes, rand: bytes, user: str, serving: str) -> bytes:
    """RES (user side) = XRES (home side): HMAC-SHA256(K, "sno-res" | RAND | user | 0 | serving core)."""
    return tag(key, b"sno-res\0" + rand + user.encode() + b"\0" + serving.encode())


def session_key(key: bytes, rand: bytes) -> bytes:
    """KS: tags REGISTERED, so the user knows the serving core got its vector from the home core."""
    return tag(key, b"sno-ks\0" + rand)


@dataclass(frozen=True)
class Vector:
    """One authentication vector for ``user`` at ``serving`` (single use, void after ``expires_ns``)."""

    user: str
    serving: str
    rand: bytes
    xres: bytes
    ks: bytes
    expires_ns: int


class HomeKeys:
    """The home core's per-user keys and the vectors derived from them. Only the home core holds one."""

    def __init__(self, keys: dict[str, bytes]):
        self._keys = dict(keys)

    def knows(self, user: str) -> bool:
        return user in self._keys

    def issue(self, user: str, serving: str, now_ns: int, ttl_ns: int = VECTOR_TTL_NS,
              rand: bytes | None = None) -> Vector:
        key = self._keys[user]
        rand = rand if rand is not None else secrets.token_bytes(RAND_LEN)
        return Vector(user, serving, rand, response(key, rand, user, serving), session_key(key, rand),
                      now_ns + ttl_ns)

    def user_key(self, user: str) -> bytes:
        """For tagging HANDOVER_START, which only the home core may send."""
        return self._keys[user]


class VectorStore:
    """The serving core's vectors, each usable once; RANDs already used are remembered until they expire."""

    def __init__(self) -> None:
        self._pending: dict[str, Vector] = {}
        self._used: dict[bytes, int] = {}  # rand -> expiry

    def put(self, v: Vector) -> None:
        self._pending[v.user] = v

    def pending(self, user: str) -> Vector | None:
        return self._pending.get(user)

    def drop(self, user: str) -> None:
        self._pending.pop(user, None)

    def check(self, user: str, rand: bytes, res: bytes, now_ns: int) -> tuple[str, Vector | None]:
        """``("ok", vector)`` or ``(reason, None)``: replay, no-vector, expired, wrong-response.

        Any answer but "no-vector" consumes the vector: one attempt per challenge.
        """
        self._forget(now_ns)
        if rand in self._used:
            return "replay", None
        v = self._pending.get(user)
        if v is None or v.rand != rand:
            return "no-vector", None
        del self._pending[user]
        self._used[rand] = v.expires_ns
        if now_ns > v.expires_ns:
            return "expired", None
        if not hmac.compare_digest(v.xres, res):
            return "wrong-response", None
        return "ok", v

    def _forget(self, now_ns: int) -> None:
        for r in [r for r, exp in self._used.items() if exp < now_ns]:
            del self._used[r]


class ReplayWindow:
    """Reject a message id seen before, or older than ``span`` below the highest seen.

    Senders use increasing ids (:func:`next_id`: CLOCK_REALTIME ns, strictly
    increasing), so a restarted sender starts above its old ids and a
    receiver needs no shared state with it. Like IPsec's anti-replay window,
    but over a span of ids instead of a bitmap of 64.
    """

    def __init__(self, span: int = 30_000_000_000, limit: int = 4096):
        self.span = span
        self.highest = -1
        self.floor = -1  # ids at or below are too old: the span's lower edge, or the last id evicted by ``limit``
        self._seen: set[int] = set()
        self._order: deque[int] = deque()
        self._limit = limit

    def check(self, msg_id: int) -> str | None:
        """None if fresh (and now seen), else the reason: "duplicate" or "too-old"."""
        if msg_id <= self.floor:
            return "too-old"
        if msg_id in self._seen:
            return "duplicate"
        self._seen.add(msg_id)
        self._order.append(msg_id)
        self.highest = max(self.highest, msg_id)
        self.floor = max(self.floor, self.highest - self.span)
        while self._order and (self._order[0] <= self.floor or len(self._order) > self._limit):
            old = self._order.popleft()
            self._seen.discard(old)
            self.floor = max(self.floor, old)
        return None


class IdSource:
    """Strictly increasing message ids from a clock (ns); a restarted sender starts above its past ids."""

    def __init__(self, clock) -> None:
        self._clock = clock
        self._last = 0

    def __call__(self) -> int:
        self._last = max(self._last + 1, int(self._clock()))
        return self._last
