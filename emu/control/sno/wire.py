"""The registration protocol's messages and their binary encoding (pure, no I/O).

spec: inter-sno-mobility §5.1 (core discovery carrying the user's
identifier, authentication by the home core, care-of address, inter-core
tunnel, registration done) and §5.2 / Figure 5 (handover start,
disconnection ACK, proactive auth(ID), CoA/tunnel request, tunnel ACK).
The byte layout is documented in ``docs/sno-protocol.md``; this module is
its only implementation.

A message is a 16-byte header followed by TLV attributes::

    0      2    3    4         6         8                16
    +------+----+----+---------+---------+----------------+
    | "SN" | v1 |type| length  |reserved |  msg_id (u64)  |  then TLVs: type u8 | len u16 | value
    +------+----+----+---------+---------+----------------+

``length`` counts the whole message. An ``AUTH`` attribute (an HMAC-SHA256
tag) may close the message: it covers every byte before it, header
included, so the header's length already counts the tag.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass, field

from emu.errors import InputError

MAGIC = b"SN"
VERSION = 1
HEADER = struct.Struct("!2sBBHHQ")
TLV = struct.Struct("!BH")
MAX_LEN = 0xFFFF
TAG_LEN = 32
USER_PORT = 7140  # UDP, user terminal <-> core
PEER_PORT = 7141  # TCP + TLS, core <-> core


class WireError(InputError):
    """A message that cannot be decoded: names the field and the value."""

    def __init__(self, field_name: str, value: object, why: str):
        self.field = field_name
        self.value = value
        super().__init__(f"{field_name}: {why} (got {value!r})")


class Msg(enum.IntEnum):
    # user terminal <-> core (UDP)
    DISCOVER = 1          # user -> any core (anycast): "core discovery" with the user's identifier
    CHALLENGE = 2         # core -> user: a RAND issued by the user's home core
    RESPONSE = 3          # user -> core: RES = HMAC(K_user, RAND, ...)
    REGISTERED = 4        # core -> user: "registration done", tagged with the session key
    REJECT = 5            # core -> user
    HANDOVER_START = 6    # home core -> user: Figure 5 "core disconnect / handover start", tagged with K_user
    DISCONNECT_ACK = 7    # user -> home core: Figure 5 "disconnection ACK"
    # core <-> core (TLS)
    AUTH_REQ = 16         # visited -> home: the user's identifier (§5.1 "forwards the identifier to core A")
    AUTH_VECTOR = 17      # home -> visited: RAND, XRES, session key, the user's home prefix
    AUTH_FAIL = 18        # home -> visited: unknown user
    PREPARE = 19          # home -> target: Figure 5 "proactive auth(ID)" (an AUTH_VECTOR nobody asked for)
    TUNNEL_REQ = 20       # visited -> home: Figure 5 "CoA, Tunnel Req"
    TUNNEL_ACK = 21       # home -> visited: Figure 5 "Tunnel ACK"
    RELEASE = 22          # home -> old visited core: the user left, drop its state
    AUTH_RESULT = 23      # visited -> home: the response checked (informational, off the critical path)


class Attr(enum.IntEnum):
    USER = 1       # str: the user's identifier, name@realm (the realm names the home SNO)
    CORE = 2       # str: the sending or serving core
    TARGET = 3     # str: the core the user moves to
    RAND = 5       # 16 bytes
    RES = 6        # 32 bytes
    XRES = 7       # 32 bytes
    KS = 8         # 32 bytes: session key for this RAND
    PREFIX = 9     # IPv4 network: the user's home prefix (its addresses never change)
    COA = 10       # IPv4: care-of address allocated by the visited core
    ENDPOINT = 11  # IPv4: a core's tunnel endpoint (its public address)
    INNER = 12     # IPv4: the home core's address inside the tunnel
    VNI = 13       # u32
    LLADDR = 14    # 6 bytes: the MAC of a core's tunnel device
    REASON = 15    # str
    AUTH = 16      # 32 bytes: HMAC-SHA256 over everything before it
    EXPIRES = 17   # u64: ns (CLOCK_MONOTONIC) after which a RAND is void
    AT = 18        # u64: the planned link switch (CLOCK_MONOTONIC ns)
    OK = 19        # u8: 1 success, 0 failure
    PREFIX6 = 20   # IPv6 network: the user's IPv6 home prefix, where it has one (never changes either)


def _s(v: bytes) -> str:
    return v.decode("utf-8")


_STR = ("str", lambda v: v.encode("utf-8"), _s, 1, 255)
_KINDS: dict[Attr, tuple] = {
    Attr.USER: _STR, Attr.CORE: _STR, Attr.TARGET: _STR, Attr.REASON: _STR,
    Attr.RAND: ("bytes", bytes, bytes, 16, 16),
    Attr.RES: ("bytes", bytes, bytes, TAG_LEN, TAG_LEN),
    Attr.XRES: ("bytes", bytes, bytes, TAG_LEN, TAG_LEN),
    Attr.KS: ("bytes", bytes, bytes, TAG_LEN, TAG_LEN),
    Attr.AUTH: ("bytes", bytes, bytes, TAG_LEN, TAG_LEN),
    Attr.LLADDR: ("bytes", bytes, bytes, 6, 6),
    Attr.PREFIX: ("net", lambda v: v.network_address.packed + bytes([v.prefixlen]),
                  lambda b: ipaddress.IPv4Network((ipaddress.IPv4Address(b[:4]), b[4])), 5, 5),
    Attr.PREFIX6: ("net6", lambda v: v.network_address.packed + bytes([v.prefixlen]),
                   lambda b: ipaddress.IPv6Network((ipaddress.IPv6Address(b[:16]), b[16])), 17, 17),
    Attr.COA: ("addr", lambda v: v.packed, ipaddress.IPv4Address, 4, 4),
    Attr.ENDPOINT: ("addr", lambda v: v.packed, ipaddress.IPv4Address, 4, 4),
    Attr.INNER: ("addr", lambda v: v.packed, ipaddress.IPv4Address, 4, 4),
    Attr.VNI: ("u32", lambda v: struct.pack("!I", v), lambda b: struct.unpack("!I", b)[0], 4, 4),
    Attr.EXPIRES: ("u64", lambda v: struct.pack("!Q", v), lambda b: struct.unpack("!Q", b)[0], 8, 8),
    Attr.AT: ("u64", lambda v: struct.pack("!Q", v), lambda b: struct.unpack("!Q", b)[0], 8, 8),
    Attr.OK: ("u8", lambda v: bytes([v]), lambda b: b[0], 1, 1),
}

# What each message must and may carry (AUTH is listed where it is mandatory).
_A = Attr
SCHEMA: dict[Msg, tuple[frozenset, frozenset]] = {
    Msg.DISCOVER: (frozenset({_A.USER}), frozenset({_A.RAND, _A.RES, _A.TARGET})),
    Msg.CHALLENGE: (frozenset({_A.USER, _A.CORE, _A.RAND}), frozenset()),
    Msg.RESPONSE: (frozenset({_A.USER, _A.RAND, _A.RES}), frozenset()),
    Msg.REGISTERED: (frozenset({_A.USER, _A.CORE, _A.RAND, _A.PREFIX, _A.AUTH}), frozenset({_A.COA, _A.PREFIX6})),
    Msg.REJECT: (frozenset({_A.USER, _A.CORE, _A.REASON}), frozenset()),
    Msg.HANDOVER_START: (frozenset({_A.USER, _A.CORE, _A.TARGET, _A.RAND, _A.AT, _A.AUTH}), frozenset()),
    Msg.DISCONNECT_ACK: (frozenset({_A.USER, _A.TARGET}), frozenset()),
    Msg.AUTH_REQ: (frozenset({_A.USER, _A.CORE}), frozenset()),
    Msg.AUTH_VECTOR: (frozenset({_A.USER, _A.CORE, _A.RAND, _A.XRES, _A.KS, _A.PREFIX, _A.EXPIRES}),
                      frozenset({_A.PREFIX6})),
    Msg.AUTH_FAIL: (frozenset({_A.USER, _A.CORE, _A.REASON}), frozenset()),
    Msg.PREPARE: (frozenset({_A.USER, _A.CORE, _A.RAND, _A.XRES, _A.KS, _A.PREFIX, _A.EXPIRES, _A.AT}),
                  frozenset({_A.PREFIX6})),
    Msg.TUNNEL_REQ: (frozenset({_A.USER, _A.CORE, _A.COA, _A.ENDPOINT, _A.VNI, _A.LLADDR}), frozenset()),
    Msg.TUNNEL_ACK: (frozenset({_A.USER, _A.CORE, _A.INNER, _A.ENDPOINT, _A.VNI, _A.LLADDR}), frozenset()),
    Msg.RELEASE: (frozenset({_A.USER, _A.CORE}), frozenset()),
    Msg.AUTH_RESULT: (frozenset({_A.USER, _A.CORE, _A.OK}), frozenset({_A.REASON})),
}
USER_SIDE = frozenset({Msg.DISCOVER, Msg.CHALLENGE, Msg.RESPONSE, Msg.REGISTERED, Msg.REJECT,
                       Msg.HANDOVER_START, Msg.DISCONNECT_ACK})


@dataclass
class Message:
    """One protocol message. ``signed`` (decode only) is the byte range an AUTH tag covers."""

    type: Msg
    msg_id: int
    attrs: dict[Attr, object] = field(default_factory=dict)
    signed: bytes = field(default=b"", repr=False, compare=False)

    def __getitem__(self, a: Attr):
        return self.attrs[a]

    def get(self, a: Attr, default=None):
        return self.attrs.get(a, default)

    @property
    def user(self) -> str:
        return self.attrs[Attr.USER]


def _check_schema(msg_type: Msg, present: set[Attr], signing: bool) -> None:
    need, may = SCHEMA[msg_type]
    have = set(present) | ({Attr.AUTH} if signing else set())
    missing = sorted(need - have)
    if missing:
        raise WireError(f"{msg_type.name}.{missing[0].name}", None, "required attribute missing")
    extra = sorted(have - need - may)
    if extra:
        raise WireError(f"{msg_type.name}.{extra[0].name}", None, "attribute not allowed in this message")


def encode(msg: Message, key: bytes | None = None, tagger=None) -> bytes:
    """Bytes of ``msg``; with ``key``, closed by an AUTH tag (``tagger(key, data)`` computes it).

    Attributes go out in ascending type order, so an encoding is canonical.
    """
    if not 0 <= msg.msg_id < 1 << 64:
        raise WireError("msg_id", msg.msg_id, "must be an unsigned 64-bit integer")
    attrs = {a: v for a, v in msg.attrs.items() if a != Attr.AUTH}
    _check_schema(Msg(msg.type), set(attrs), key is not None)
    body = bytearray()
    for a in sorted(attrs):
        kind, enc, _dec, lo, hi = _KINDS[a]
        try:
            raw = enc(attrs[a])
        except (AttributeError, TypeError, ValueError, struct.error, OverflowError) as exc:
            raise WireError(a.name, attrs[a], f"cannot encode as {kind}: {exc}") from None
        if not lo <= len(raw) <= hi:
            raise WireError(a.name, attrs[a], f"encoded length {len(raw)} outside {lo}..{hi}")
        body += TLV.pack(a, len(raw)) + raw
    total = HEADER.size + len(body) + (TLV.size + TAG_LEN if key is not None else 0)
    if total > MAX_LEN:
        raise WireError("length", total, f"message longer than {MAX_LEN} bytes")
    data = HEADER.pack(MAGIC, VERSION, int(msg.type), total, 0, msg.msg_id) + bytes(body)
    if key is not None:
        if tagger is None:
            from emu.control.sno.auth import tag as tagger
        data += TLV.pack(Attr.AUTH, TAG_LEN) + tagger(key, data)
    return data


def decode(data: bytes) -> Message:
    """Parse and validate one message; WireError names the first thing wrong."""
    if len(data) < HEADER.size:
        raise WireError("header", len(data), f"message shorter than the {HEADER.size}-byte header")
    magic, version, mtype, length, _res, msg_id = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireError("magic", magic, "not an SNO protocol message")
    if version != VERSION:
        raise WireError("version", version, f"unsupported version (this is {VERSION})")
    try:
        mt = Msg(mtype)
    except ValueError:
        raise WireError("type", mtype, "unknown message type") from None
    if length != len(data):
        raise WireError("length", length, f"header length differs from the {len(data)} bytes received")
    attrs: dict[Attr, object] = {}
    signed = b""
    off = HEADER.size
    while off < len(data):
        if off + TLV.size > len(data):
            raise WireError("attribute", off, "truncated attribute header")
        atype, alen = TLV.unpack_from(data, off)
        start = off + TLV.size
        if start + alen > len(data):
            raise WireError("attribute", atype, "attribute runs past the end of the message")
        try:
            a = Attr(atype)
        except ValueError:
            raise WireError("attribute", atype, "unknown attribute type") from None
        if a in attrs:
            raise WireError(a.name, None, "attribute repeated")
        kind, _enc, dec, lo, hi = _KINDS[a]
        if not lo <= alen <= hi:
            raise WireError(a.name, alen, f"length outside {lo}..{hi}")
        raw = data[start:start + alen]
        try:
            value = dec(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise WireError(a.name, raw, f"not a valid {kind}: {exc}") from None
        if a == Attr.AUTH:
            if start + alen != len(data):
                raise WireError("AUTH", None, "the tag must close the message")
            signed = data[:off]
        attrs[a] = value
        off = start + alen
    _check_schema(mt, set(attrs), False)
    return Message(mt, msg_id, attrs, signed)
