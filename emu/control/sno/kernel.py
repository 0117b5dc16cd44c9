"""A core's kernel state: inter-core tunnels, per-user routes and rules, as ``ip -batch`` lines.

spec: inter-sno-mobility §5.1: "core B allocates a care-of address (CoA)
for the user and sets up a secure tunnel between the two core networks";
uplink "user -> core B -> tunnel -> core A -> destination"; downlink "core
A encapsulates each packet with a CoA associated with SNO B ... core B
decapsulates the packets and delivers them to the user".

Layout in a core's namespace (rendering is pure; :func:`apply` runs it):

- one VXLAN device per peer core, ``sno<peer index>``, point to point
  (``remote`` = the peer's public address), made when the first user needs
  it and deleted with the last. This kernel has no ipip/gre; VXLAN is
  probed (:func:`tunnel_kind`), never assumed;
- inside the tunnel the home core holds its *inner* address and the
  visited core the users' care-of addresses; static neighbour entries make
  the tunnel usable without ARP;
- access links (to the core's ground stations) and tunnel devices end in a
  ``blackhole`` rule (pref 32000): a user gets forwarding only through the
  per-user rules (pref 1000) that registration installs;
- home core, user at home: ``PREFIX via GS``; user away: ``PREFIX via CoA
  dev sno<k> onlink``; visited core: ``PREFIX via GS`` (downlink) and the
  user's uplink looked up in table ``100+k`` whose default route goes into
  the tunnel.

IPv6 (a user with an IPv6 prefix, a core with IPv6 access links): the same
routes and rules for the user's IPv6 prefix, through the same tunnel
devices. Inside a tunnel the IPv6 next hops are link-local twins of the
IPv4 inner address and CoA (:func:`ll6`: ``fe80::`` + the 32 bits), so
the protocol carries one CoA and both ends derive the other. An IPv6 line
is marked with :data:`V6` (``ip rule`` and ``route flush`` take their family
from ``ip -6``, which a batch line cannot say): :class:`IpSession` and
:func:`apply` run the marked lines in an ``ip -6 -batch`` after the others.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from dataclasses import dataclass

VXLAN_PORT = 4789
RULE_USER = 1000
RULE_BLACKHOLE = 32000
TABLE_BASE = 100
MTU = 1450  # 1500-byte terrestrial links minus VXLAN's 50 bytes

# An ``ip -force -batch`` error on a line that deletes or re-adds something is not a failure.
_BENIGN = ("File exists", "No such file or directory", "Cannot find device", "No such process",
           "Cannot assign requested address", "does not exist")


V6 = "-6 "  # marks a line for ``ip -6 -batch``


def six(lines: list[str]) -> list[str]:
    """The lines marked for ``ip -6`` (an IPv6 prefix's routes and rules)."""
    return [V6 + ln for ln in lines]


def ll6(addr4: str) -> str:
    """The IPv6 twin of an address inside an inter-core tunnel (inner address, CoA): ``fe80::`` and its 32 bits,
    e.g. 10.253.1.2 -> fe80::afd:102. One rule, so both ends agree without a protocol field."""
    return str(ipaddress.IPv6Address((0xFE80 << 112) | int(ipaddress.IPv4Address(addr4))))


def split_families(lines: list[str]) -> tuple[list[str], list[str]]:
    """(lines for ``ip``, lines for ``ip -6`` without their mark), each in its own order."""
    v4 = [ln for ln in lines if not ln.startswith(V6)]
    v6 = [ln[len(V6):] for ln in lines if ln.startswith(V6)]
    return v4, v6


def tunnel_name(peer_index: int) -> str:
    return f"sno{peer_index}"


def tunnel_mac(own_index: int, peer_index: int) -> str:
    """The MAC of core ``own_index``'s tunnel device toward ``peer_index`` (locally administered)."""
    return f"02:5e:00:00:{own_index & 0xFF:02x}:{peer_index & 0xFF:02x}"


def vni_for(a: int, b: int) -> int:
    """Both ends of a core pair's tunnel agree on this VNI without asking."""
    lo, hi = sorted((a, b))
    return 0x5E0000 + (lo & 0xFF) * 256 + (hi & 0xFF)


def table_for(peer_index: int) -> int:
    return TABLE_BASE + peer_index


def tunnel_kind(features) -> str:
    """The inter-core tunnel this kernel can make: VXLAN (probed by ``emu.dataplane.features``)."""
    if features.has("vxlan"):
        return "vxlan"
    from emu.errors import DataplaneError
    raise DataplaneError("inter-core tunnel", None, None,
                         "no VXLAN on this kernel (see `leo-emu doctor`): the inter-core tunnel cannot be made")


def _rule(verb: str, match: str, action: str, pref: int) -> str:
    return f"rule {verb} pref {pref} {match} {action}"


def _rule_replace(match: str, action: str, pref: int) -> list[str]:
    """``ip rule`` has no replace: delete (quietly, if absent), then add."""
    return [_rule("del", match, action, pref), _rule("add", match, action, pref)]


def base(anycast: str, access_ifs: list[str], guard6: list[str] = ()) -> list[str]:
    """A core at start: the discovery anycast address on lo; unregistered users get no forwarding. IPv6:
    sources in ``guard6`` (every operator's IPv6 user pool) arriving on an access link are dropped too
    (other IPv6 traffic from the GSs, e.g. the BGP overlay's, is not a user's and passes)."""
    lines = [f"addr replace {anycast}/32 dev lo"]
    for ifname in access_ifs:
        lines += _rule_replace(f"iif {ifname}", "blackhole", RULE_BLACKHOLE)
        for pool in guard6:
            lines += six(_rule_replace(f"from {pool} iif {ifname}", "blackhole", RULE_BLACKHOLE))
    return lines


def unbase(anycast: str, access_ifs: list[str], guard6: list[str] = ()) -> list[str]:
    """What :func:`base` made, removed (an orderly stop)."""
    lines = []
    for ifname in access_ifs:
        lines.append(_rule("del", f"iif {ifname}", "blackhole", RULE_BLACKHOLE))
        lines += six([_rule("del", f"from {pool} iif {ifname}", "blackhole", RULE_BLACKHOLE) for pool in guard6])
    return lines + [f"addr del {anycast}/32 dev lo"]


def tunnel_up(own_index: int, peer_index: int, local: str, remote: str, v6: bool = False) -> list[str]:
    name = tunnel_name(peer_index)
    return [f"link add name {name} address {tunnel_mac(own_index, peer_index)} mtu {MTU} type vxlan "
            f"id {vni_for(own_index, peer_index)} local {local} remote {remote} dstport {VXLAN_PORT} nolearning",
            f"link set {name} up",
            *_rule_replace(f"iif {name}", "blackhole", RULE_BLACKHOLE),
            *(six(_rule_replace(f"iif {name}", "blackhole", RULE_BLACKHOLE)) if v6 else [])]


def tunnel_down(peer_index: int, v6: bool = False) -> list[str]:
    name = tunnel_name(peer_index)
    down = [_rule("del", f"iif {name}", "blackhole", RULE_BLACKHOLE), f"route flush table {table_for(peer_index)}"]
    return [f"link del {name}", *down, *(six(down) if v6 else [])]


def tunnel_addr(peer_index: int, addr: str, verb: str = "replace") -> list[str]:
    """An address of ours inside the tunnel (inner address, CoA; IPv6: its :func:`ll6` twin, no DAD)."""
    if ":" in addr:
        return [f"addr {verb} {addr}/128 dev {tunnel_name(peer_index)}" + ("" if verb == "del" else " nodad")]
    return [f"addr {verb} {addr}/32 dev {tunnel_name(peer_index)}"]


def tunnel_neigh(peer_index: int, addr: str, mac: str) -> list[str]:
    return [f"neigh replace {addr} lladdr {mac} dev {tunnel_name(peer_index)} nud permanent"]


def route_via_gs(prefix: str, ifname: str, gs_addr: str) -> list[str]:
    return [f"route replace {prefix} via {gs_addr} dev {ifname}"]


def route_via_tunnel(prefix: str, peer_index: int, coa: str) -> list[str]:
    """Home core, user away: downlink encapsulated toward the user's care-of address."""
    return [f"route replace {prefix} via {coa} dev {tunnel_name(peer_index)} onlink"]


def route_del(prefix: str) -> list[str]:
    return [f"route del {prefix}"]


def visited_table(peer_index: int, inner: str) -> list[str]:
    """Visited core: uplink of the peer's users goes into the tunnel, to the home core's inner address."""
    dst = "::/0" if ":" in inner else "default"
    return [f"route replace {dst} via {inner} dev {tunnel_name(peer_index)} onlink table {table_for(peer_index)}"]


def allow(prefix: str, iif: str, table: int | str = "main", direction: str = "from") -> list[str]:
    """Forwarding for a registered user's prefix arriving on ``iif`` (an access link or a tunnel)."""
    return _rule_replace(f"{direction} {prefix} iif {iif}", f"lookup {table}", RULE_USER)


def disallow(prefix: str, iif: str, table: int | str = "main", direction: str = "from") -> list[str]:
    return [_rule("del", f"{direction} {prefix} iif {iif}", f"lookup {table}", RULE_USER)]


# ---------------------------------------------------------------------------------------------- kernel side
def benign(line: str, error: str) -> bool:
    """True for errors that only say "already so": deleting what is gone, adding what is there."""
    verb = line.split()[1] if len(line.split()) > 1 else ""
    return any(b in error for b in _BENIGN) and (verb in ("del", "flush") or "File exists" in error)


def parse_batch_errors(lines: list[str], stderr: str) -> list[tuple[str, str]]:
    """``ip -force -batch`` prints the kernel's message, then ``Command failed -:N``; pair them with lines."""
    out: list[tuple[str, str]] = []
    pending: list[str] = []
    for raw in stderr.splitlines():
        s = raw.strip()
        if s.startswith("Command failed -:"):
            try:
                n = int(s.rsplit(":", 1)[1])
            except ValueError:
                continue
            line = lines[n - 1] if 0 < n <= len(lines) else "?"
            err = "; ".join(pending) or "failed"
            pending = []
            if not benign(line, err):
                out.append((line, err))
        elif s:
            pending.append(s)
    return out


def apply(lines: list[str], timeout_s: float = 30.0, argv: tuple[str, ...] = ("ip",)) -> list[tuple[str, str]]:
    """Run the lines with a one-off ``ip -batch`` (the :data:`V6` ones with ``ip -6 -batch`` after); the
    failures that matter. Never raises: a kernel that does not answer (rtnl held elsewhere for ``timeout_s``)
    is reported against every line."""
    v4, v6 = split_families(lines)
    if v6:
        return _apply(v4, timeout_s, argv) + [(V6 + ln, e) for ln, e in _apply(v6, timeout_s, (*argv, "-6"))]
    return _apply(v4, timeout_s, argv)


def _apply(lines: list[str], timeout_s: float, argv: tuple[str, ...]) -> list[tuple[str, str]]:
    if not lines:
        return []
    try:
        p = subprocess.run([*argv, "-force", "-batch", "-"], input="".join(ln + "\n" for ln in lines),
                           capture_output=True, text=True, timeout=timeout_s, check=False)
    except (subprocess.TimeoutExpired, OSError) as exc:
        return [(ln, f"not done: {exc}") for ln in lines]
    return parse_batch_errors(lines, p.stderr)


class IpSession:
    """One long-lived ``ip -force -batch -``: a batch costs a pipe write, not a process start.

    iproute2 runs each line as it arrives and reports a failed line on stderr
    (unbuffered) as ``Command failed -:N``, N counting from the session's
    start. After each batch a sentinel line that must fail (``link show dev``
    of a name nobody uses) marks the end: its report means every line before
    it is done. If the process dies or stalls, the batch is run one-off.
    """

    SENTINEL = "snosentinel0"

    def __init__(self, argv: tuple[str, ...] = ("ip",)):
        self.base = tuple(argv)
        self.argv = list(argv) + ["-force", "-batch", "-"]
        self.p: subprocess.Popen | None = None
        self.count = 0
        self._six: IpSession | None = None  # the ``ip -6`` session for :data:`V6` lines, made on first use

    def _start(self) -> None:
        self.p = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, bufsize=0)
        self.count = 0
        self._buf = b""

    def _lines_until(self, done: str, timeout_s: float) -> list[str]:
        """stderr lines up to ``done`` (raw reads: a buffered reader would hide lines from select)."""
        import select
        import time
        fd = self.p.stderr.fileno()
        end = time.monotonic() + timeout_s
        out: list[str] = []
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                text = line.decode(errors="replace").strip()
                if text == done:
                    return out
                out.append(text)
            left = end - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("ip -batch gave no answer")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise BrokenPipeError("ip -batch ended")
            self._buf += chunk

    def apply(self, lines: list[str], timeout_s: float = 30.0) -> list[tuple[str, str]]:
        """Run the lines (the :data:`V6` ones in a second, ``ip -6`` session after the others)."""
        v4, v6 = split_families(lines)
        errors = self._apply(v4, timeout_s)
        if v6:
            if self._six is None:
                self._six = IpSession((*self.base, "-6"))
            errors += [(V6 + ln, e) for ln, e in self._six._apply(v6, timeout_s)]
        return errors

    def _apply(self, lines: list[str], timeout_s: float) -> list[tuple[str, str]]:
        if not lines:
            return []
        if self.p is None or self.p.poll() is not None:
            self._start()
        first = self.count + 1
        batch = list(lines) + [f"link show dev {self.SENTINEL}"]
        self.count += len(batch)
        try:
            os.write(self.p.stdin.fileno(), "".join(ln + "\n" for ln in batch).encode())
            errs = self._lines_until(f"Command failed -:{self.count}", timeout_s)
        except (OSError, TimeoutError) as exc:
            self.close()  # the lines may or may not have been done: run them again (they are idempotent)
            if isinstance(exc, TimeoutError):
                return [(ln, "not done: the kernel did not answer in time") for ln in lines]
            return _apply(lines, timeout_s, self.base)
        # renumber the session's line numbers to this batch's, then pair them as a one-off batch would
        out = []
        for t in errs:
            if t.startswith("Command failed -:"):
                try:
                    t = f"Command failed -:{int(t.rsplit(':', 1)[1]) - first + 1}"
                except ValueError:
                    pass
            out.append(t)
        return parse_batch_errors(lines, "\n".join(out))

    def close(self) -> None:
        if self._six is not None:
            self._six.close()
            self._six = None
        if self.p is not None:
            try:
                self.p.kill()
                self.p.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self.p = None


def valid_prefix(text: str) -> str:
    return str(ipaddress.IPv4Network(text))


@dataclass(frozen=True)
class Op:
    """One kernel change a procedure asks for: ``what`` names it in the step log, ``lines`` do it."""

    what: str
    lines: tuple[str, ...]
