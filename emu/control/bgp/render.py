"""BIRD 2 configuration per role, rendered from a :class:`~.model.Router` (pure text, no I/O).

One protocol block per peering, named after the peer. spec: bgp-mobile-routing-atn
- §3 c-ASBR: full table from its s-ASBRs (eBGP) and its operator's other
  c-ASBRs (iBGP, ``next hop self``, reflector where configured), eBGP to other
  operators' cores; sends its s-ASBRs only ``::/0``; each MSP is a kernel
  ``unreachable`` route (ICMPv6 destination unreachable for an inactive MNP);
  every BGP route goes into the kernel FIB.
- §3 s-ASBR: announces the MNPs in its MNP file (one ``route`` line each,
  rewritten and re-read by ``birdc configure`` on attach/detach); accepts only
  ``::/0`` and installs it in the kernel.
- §6 timers: :class:`~.model.Timers` (hold, keepalive, BFD); BIRD has no MRAI
  (updates leave as soon as a route changes, i.e. MRAI 0).
"""

from __future__ import annotations

from .model import Peering, Router, Timers, protocol_name

MNP_FILE = "mnps.conf"  # beside the configuration; included by the s-ASBR's static protocol
KERNEL_SCAN_S = 600  # the kernel protocol's periodic full-table scan: rare, a 10^6-route table costs seconds
STUB_KERNEL_METRIC = 64  # the s-ASBR's BGP default route sits behind the data plane's own (metric < 64)


def _header(r: Router, log_path: str | None) -> list[str]:
    out = [f"# leo-emu BGP {r.role} ASBR {r.name} (AS {r.asn}); rendered, do not edit",
           f"router id {r.router_id};"]
    if log_path:
        out.append(f'log "{log_path}" {{ info, remote, warning, error, auth, fatal, bug }};')
    out += ["", "protocol device {", "  scan time 10;", "}"]
    return out


def _bfd(r: Router, t: Timers) -> list[str]:
    if not t.bfd:
        return []
    ms = t.bfd_interval_ms
    return ["", "protocol bfd {",
            '  interface "*" {',
            f"    min rx interval {ms} ms;", f"    min tx interval {ms} ms;",
            f"    idle tx interval {max(ms, 1000)} ms;", f"    multiplier {t.bfd_multiplier};",
            "  };", "}"]


def _timers(t: Timers) -> list[str]:
    lo, hi = t.error_wait_s
    out = [f"  hold time {t.hold_s};", f"  keepalive time {t.keepalive_s};",
           f"  connect retry time {t.connect_retry_s};", f"  connect delay time {t.connect_delay_s};",
           f"  error wait time {lo}, {hi};"]
    if t.bfd:
        out.append("  bfd on;")
    return out


def _bgp(r: Router, p: Peering, t: Timers, import_filter: str, export_filter: str, extra: list[str] = (),
         channel_extra: list[str] = ()) -> list[str]:
    return ["", f"protocol bgp {protocol_name(p.name)} {{",
            f'  description "{p.kind} peer {p.name}";',
            f"  local {p.local_addr} as {r.asn};",
            f"  neighbor {p.peer_addr} as {p.peer_asn};",
            "  direct;", *_timers(t), *extra,
            "  ipv6 {", f"    import {import_filter};", f"    export {export_filter};", *channel_extra, "  };", "}"]


def _prefix_set(msps: tuple[str, ...], longer_only: bool) -> str:
    """``[ fd00:a::/32{33,128}, ... ]``: the MNPs an MSP can hold (strictly longer), or the MSPs themselves."""
    items = []
    for m in msps:
        length = int(m.split("/")[1])
        items.append(f"{m}{{{length + 1},128}}" if longer_only else m)
    return "[ " + ", ".join(items) + " ]"


def render_core(r: Router, timers: Timers, log_path: str | None = None, kernel_table: int = 254,
                stub_tables: bool = True) -> str:
    """A c-ASBR (spec §3): full MNP table into the kernel FIB, MSPs unreachable, only ::/0 to stubs.

    ``stub_tables``: each s-ASBR session on a table of its own (its MNPs and ::/0), piped into master6
    (MNPs only; nothing back). A route then meets the other sessions only as the pipes' ``export none``
    (no filter run) instead of every session's export filter: 10^6 routes x 100 sessions of filter runs
    are half the c-ASBR's RIB CPU (docs/bgp.md, Scale)."""
    assert r.role == "core"
    mnp_set = _prefix_set(r.all_msps, longer_only=True)
    out = _header(r, log_path)
    out += ["", f"define MNPS = {mnp_set};", f"define MSPS = {_prefix_set(r.all_msps, longer_only=False)};"]
    out += ["", "# the MSPs: ICMPv6 unreachable for every MNP no s-ASBR announces (spec §3)",
            "protocol static msp {", "  ipv6;", *[f"  route {m} unreachable;" for m in r.msps], "}",
            *([] if stub_tables else
              ["", "# the default route the s-ASBRs get (never installed here)",
               "protocol static default_for_stubs {", "  ipv6;", "  route ::/0 blackhole;", "}"]),
            "", "protocol kernel kernel6 {",
            f"  kernel table {kernel_table};", f"  scan time {KERNEL_SCAN_S};",
            "  ipv6 {", "    import none;",
            '    export where source = RTS_BGP || proto = "msp";', "  };", "}"]
    out += _bfd(r, timers)
    for p in r.peerings:
        if p.kind == "stub" and stub_tables:
            t = "t_" + protocol_name(p.name)
            out += ["", f"# s-ASBR {p.name}: its MNPs and the default route it gets (never installed here)",
                    f"ipv6 table {t};",
                    f"protocol static d_{protocol_name(p.name)} {{", f"  ipv6 {{ table {t}; }};",
                    "  route ::/0 blackhole;", "}",
                    f"protocol pipe p_{protocol_name(p.name)} {{", "  table master6;", f"  peer table {t};",
                    "  import where net ~ MNPS;", "  export none;", "}"]
            out += _bgp(r, p, timers, "where net ~ MNPS", "where net = ::/0 && source = RTS_STATIC",
                        channel_extra=[f"    table {t};"])
        elif p.kind == "stub":
            # accept only MNPs (strictly inside a known MSP); send only the default route
            # the export filter runs for every route of the table on every s-ASBR session (10^6 x 100 at the
            # spec's scale): a net compare, not `proto = "default_for_stubs"` (a strcmp: 15 % of the c-ASBR's CPU)
            out += _bgp(r, p, timers, "where net ~ MNPS", "where net = ::/0 && source = RTS_STATIC")
        elif p.kind == "ibgp":
            out += _bgp(r, p, timers, "where net ~ MNPS || net ~ MSPS",
                        "where source = RTS_BGP && (net ~ MNPS || net ~ MSPS)",
                        ["  rr client;"] if p.rr_client else [], ["    next hop self;"])
        elif p.kind == "ebgp":
            out += _bgp(r, p, timers, "where net ~ MNPS || net ~ MSPS",
                        'where (source = RTS_BGP && net ~ MNPS) || proto = "msp"')
        else:
            raise ValueError(f"a c-ASBR has no {p.kind!r} peering ({p.name})")
    return "\n".join(out) + "\n"


def render_stub(r: Router, timers: Timers, log_path: str | None = None, kernel_table: int | None = 254,
                mnp_file: str = MNP_FILE) -> str:
    """An s-ASBR (spec §3): announces the MNPs of ``mnp_file``; accepts and installs only ::/0.

    ``kernel_table`` None: no kernel protocol (a bench's feeding s-ASBRs: BIRD's kernel protocol subscribes
    to the kernel's route notifications, and every route the c-ASBR installs is then broadcast past each
    such socket of the machine -- a cost of 100 speakers on one kernel, not of the c-ASBR)."""
    assert r.role == "stub"
    out = _header(r, log_path)
    out += ["", "# the MNPs of the user terminals attached through this ground station now",
            "protocol static mnps {", "  ipv6;", f'  include "{mnp_file}";', "}"]
    if kernel_table is not None:
        out += ["", "protocol kernel kernel6 {",
                f"  kernel table {kernel_table};", f"  metric {STUB_KERNEL_METRIC};",
                "  ipv6 {", "    import none;", "    export where source = RTS_BGP;", "  };", "}"]
    out += _bfd(r, timers)
    for p in r.peerings:
        if p.kind != "core":
            raise ValueError(f"an s-ASBR has no {p.kind!r} peering ({p.name})")
        out += _bgp(r, p, timers, "where net = ::/0", 'where proto = "mnps"')
    return "\n".join(out) + "\n"


def render_mnps(mnps: list[str] | tuple[str, ...], distinct_attributes: bool = False, med_base: int = 1) -> str:
    """The s-ASBR's MNP file: one ``route`` per MNP (held in BIRD only; the data plane routes to the user).

    ``distinct_attributes`` gives every route its own MED (``med_base`` + index),
    so no two MNPs can share an UPDATE: the worst case of one prefix per UPDATE
    (spec §3 scaling); a new ``med_base`` re-announces every MNP.
    """
    if distinct_attributes:
        return "".join(f"route {m} blackhole {{ bgp_med = {med_base + i}; }};\n" for i, m in enumerate(mnps))
    return "".join(f"route {m} blackhole;\n" for m in mnps)


def render(r: Router, timers: Timers, log_path: str | None = None, kernel_table: int = 254) -> str:
    return (render_core if r.role == "core" else render_stub)(r, timers, log_path, kernel_table)
