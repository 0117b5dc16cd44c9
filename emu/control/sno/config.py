"""Configuration of the SNO daemons: one JSON file per daemon, written by :mod:`launch`.

A core's file holds its users' keys (only the home core has them: spec
inter-sno-mobility §4.2, the core keeps "user authentication"), so the file
is written mode 0600 in the run directory. Loading validates every field
and names the one that is wrong.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from emu.errors import InputError

PROCEDURES = ("baseline", "proactive")
LATENCY_MODES = ("daemon", "netem")
ANYCAST = "10.255.0.1"  # every core answers core discovery here (spec §5.1 "broadcasts a core discovery message")


def _need(d: dict, key: str, where: str):
    if key not in d:
        raise InputError(f"{where}.{key}: missing (got none)")
    return d[key]


def _parsed(v, where: str, kind, what: str) -> str:
    """``v`` read as ``kind`` (an ipaddress class) in its normal text form; one line naming ``where`` if not."""
    try:
        return str(kind(v))
    except (ValueError, TypeError):
        raise InputError(f"{where}: not an {what} (got {v!r})") from None


def _addr(v, where: str) -> str:
    return _parsed(v, where, ipaddress.IPv4Address, "IPv4 address")


def _net(v, where: str) -> str:
    return _parsed(v, where, ipaddress.IPv4Network, "IPv4 prefix")


def _net6(v, where: str) -> str:
    return _parsed(v, where, ipaddress.IPv6Network, "IPv6 prefix")


def _addr6(v, where: str) -> str:
    return _parsed(v, where, ipaddress.IPv6Address, "IPv6 address")


def _key(v, where: str) -> bytes:
    try:
        b = bytes.fromhex(v)
    except (ValueError, TypeError):
        raise InputError(f"{where}: not a hex key (got {v!r})") from None
    if len(b) < 16:
        raise InputError(f"{where}: key shorter than 16 bytes (got {len(b)} bytes)")
    return b


def _choice(v, allowed, where: str) -> str:
    if v not in allowed:
        raise InputError(f"{where}: must be one of {', '.join(allowed)} (got {v!r})")
    return v


def _ms(v, where: str) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 or v > 60_000:
        raise InputError(f"{where}: must be a number of milliseconds in 0..60000 (got {v!r})")
    return float(v)


@dataclass(frozen=True)
class Peer:
    name: str
    index: int
    realm: str
    public: str


@dataclass(frozen=True)
class HomeUser:
    prefix: str
    key: bytes = field(repr=False)
    prefix6: str = ""                 # its IPv6 home prefix ("" none): follows the user like ``prefix``


@dataclass
class CoreConf:
    name: str
    index: int
    realm: str
    public: str                       # tunnel endpoint and TLS address
    tunnel_pool: str                  # .1 = this core's inner address; CoAs from .2 on
    access: dict[str, str]            # access link (to a GS) -> the GS's address on it
    peers: dict[str, Peer]
    users: dict[str, HomeUser]        # this core's own users (the only place their keys live)
    procedure: str = "baseline"
    latency_ms: float = 0.0           # terrestrial one-way latency between cores
    latency_mode: str = "daemon"      # "netem": the kernel delays; "daemon": this daemon delays its peer messages
    notice_ms: float = 20.0           # proactive: HANDOVER_START this long before the planned switch
    prepare_wait_ms: float = 500.0    # a proactive DISCOVER waits this long for PREPARE before falling back
    anycast: str = ANYCAST
    log: str = ""
    state: str = ""
    admin: str = ""
    pki: dict = field(default_factory=dict)  # ca, cert, key paths
    access6: dict[str, str] = field(default_factory=dict)  # IPv6: access link -> the GS's IPv6 address ({} none)
    guard6: list[str] = field(default_factory=list)  # IPv6 sources forwarded only once registered (user pools)

    def peer_by_realm(self, realm: str) -> Peer | None:
        return next((p for p in self.peers.values() if p.realm == realm), None)

    @property
    def inner(self) -> str:
        return str(ipaddress.IPv4Network(self.tunnel_pool).network_address + 1)


@dataclass
class AgentConf:
    name: str
    user: str
    key: bytes = field(repr=False)
    uplinks: list[str] = field(default_factory=list)
    retransmit_ms: float = 300.0
    anycast: str = ANYCAST
    table: int = 254                  # the routing table whose default route names the uplink in use
    log: str = ""
    admin: str = ""


def load_core(path: str | Path) -> CoreConf:
    d = _load(path)
    w = "core"
    peers = {}
    for name, p in _need(d, "peers", w).items():
        peers[name] = Peer(name, int(_need(p, "index", f"{w}.peers.{name}")),
                           str(_need(p, "realm", f"{w}.peers.{name}")),
                           _addr(_need(p, "public", f"{w}.peers.{name}"), f"{w}.peers.{name}.public"))
    users = {}
    for u, x in _need(d, "users", w).items():
        users[u] = HomeUser(_net(_need(x, "prefix", f"{w}.users.{u}"), f"{w}.users.{u}.prefix"),
                            _key(_need(x, "key", f"{w}.users.{u}"), f"{w}.users.{u}.key"),
                            _net6(x["prefix6"], f"{w}.users.{u}.prefix6") if x.get("prefix6") else "")
    access = {str(k): _addr(v, f"{w}.access.{k}") for k, v in _need(d, "access", w).items()}
    access6 = {str(k): _addr6(v, f"{w}.access6.{k}") for k, v in (d.get("access6") or {}).items()}
    if access6 and set(access6) != set(access):
        odd = sorted(set(access6) ^ set(access))[0]
        raise InputError(f"{w}.access6: must name the same access links as access (got {odd!r} in one only)")
    return CoreConf(
        name=str(_need(d, "name", w)), index=int(_need(d, "index", w)), realm=str(_need(d, "realm", w)),
        public=_addr(_need(d, "public", w), f"{w}.public"),
        tunnel_pool=_net(_need(d, "tunnel_pool", w), f"{w}.tunnel_pool"),
        access=access, peers=peers, users=users,
        procedure=_choice(d.get("procedure", "baseline"), PROCEDURES, f"{w}.procedure"),
        latency_ms=_ms(d.get("latency_ms", 0.0), f"{w}.latency_ms"),
        latency_mode=_choice(d.get("latency_mode", "daemon"), LATENCY_MODES, f"{w}.latency_mode"),
        notice_ms=_ms(d.get("notice_ms", 20.0), f"{w}.notice_ms"),
        prepare_wait_ms=_ms(d.get("prepare_wait_ms", 500.0), f"{w}.prepare_wait_ms"),
        anycast=_addr(d.get("anycast", ANYCAST), f"{w}.anycast"),
        log=str(d.get("log", "")), state=str(d.get("state", "")), admin=str(d.get("admin", "")),
        pki=dict(d.get("pki", {})), access6=access6,
        guard6=[_net6(x, f"{w}.guard6.{i}") for i, x in enumerate(d.get("guard6") or [])])


def load_agent(path: str | Path) -> AgentConf:
    d = _load(path)
    w = "agent"
    user = str(_need(d, "user", w))
    if "@" not in user:
        raise InputError(f"{w}.user: must be name@realm, the realm naming the home SNO (got {user!r})")
    return AgentConf(name=str(_need(d, "name", w)), user=user, key=_key(_need(d, "key", w), f"{w}.key"),
                     uplinks=[str(x) for x in d.get("uplinks", [])],
                     retransmit_ms=_ms(d.get("retransmit_ms", 300.0), f"{w}.retransmit_ms"),
                     anycast=_addr(d.get("anycast", ANYCAST), f"{w}.anycast"),
                     table=_table(d.get("table", 254), f"{w}.table"),
                     log=str(d.get("log", "")), admin=str(d.get("admin", "")))


def _table(v, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 255:
        raise InputError(f"{where}: must be a routing table number in 1..255 (got {v!r})")
    return v


def _load(path) -> dict:
    try:
        d = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InputError(f"config: cannot read {path} (got {exc.strerror})") from None
    except ValueError as exc:
        raise InputError(f"config: not JSON: {path} (got {exc})") from None
    if not isinstance(d, dict):
        raise InputError(f"config: must be a JSON object (got {type(d).__name__})")
    return d


def dump(conf) -> dict:
    """The JSON form of a CoreConf / AgentConf (keys as hex), as :func:`load_core` / :func:`load_agent` read it."""
    d = asdict(conf)
    if isinstance(conf, CoreConf):
        d["users"] = {u: {"prefix": x.prefix, "key": x.key.hex(), **({"prefix6": x.prefix6} if x.prefix6 else {})}
                      for u, x in conf.users.items()}
    else:
        d["key"] = conf.key.hex()
    return d


def write(path: Path, conf) -> None:
    """Write a daemon's configuration, readable by root only (it holds keys)."""
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.chmod(0o600)
    tmp.write_text(json.dumps(dump(conf), indent=1, sort_keys=True))
    tmp.replace(path)

