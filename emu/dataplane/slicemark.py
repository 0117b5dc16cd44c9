"""The slice switch by packet mark: fixed ``fwmark`` rules, the mark set by nftables, armed ahead of time.

spec: grc-based-routing §Time Slice Transition (the switch from table k to
table k+1 at the boundary). Two costs this removes from the boundary:

- every IPv6 rule added or deleted bumps the namespace's IPv6 route
  generation (``rt_genid_bump_ipv6``), which walks every node of every IPv6
  table of the namespace under the routing lock: ~140 us per rule with three
  tables of ~150 routes, ~650 us with 1,000 -- ~90 % of a Starlink shell 1
  boundary when IPv6 rotated rules;
- any per-namespace write at the boundary at all: even at ~25 us a
  namespace, 1,584 satellites take ~40 ms per family, one after the other.

How it works, per satellite namespace (both families):

- fixed rules, made once: for each of the three rotating tables t, mark M(t)
  looks up table t, then (retained) the table before it in the rotation
  (:func:`fixed_rules`). Lookups without a mark -- a researcher's ``ip route
  get``, the first lookup of a packet the satellite itself sends -- keep
  IPv4's rotating rules, now matching only unmarked lookups (``fwmark
  0/0xffffffff``: a marked packet neither of its tables routes must not fall
  through to older tables) and changed off the boundary, in the cleanup (an
  IPv4 rule change costs ~15 us); IPv6 has one rule instead that sends unmarked
  lookups from ``lo`` to a table whose only route is ``::/0 dev lo``
  (:data:`LOCAL_OUT_TABLE`): the socket's first lookup succeeds, and the
  output chain below re-routes the packet with its mark;
- a table ``inet leoemu_slice`` with two chains, ``pre`` (filter, prerouting)
  and ``out`` (route, output: a changed mark re-routes), each holding
  ``meta mark set M(k-1)`` followed by ``meta time >= T meta mark set M(k)``:
  once slice k's table is filled, the applier *arms* the switch with the
  boundary's wall-clock time T (:func:`arm_messages`), and the kernel itself
  moves every satellite to table k at T, all at the same instant, with no
  write at the boundary. Without a time (a caller that drives boundaries
  itself) the switch writes ``meta mark set M(k)`` (:func:`switch_messages`);
- each write is one nftables transaction: atomic for the namespace's packets.

The ground side (every UT and GS, :func:`ground_rules`) is armed the same way, in the same transaction
per namespace: its default routes of slice t (IPv4 ``0/0`` and IPv6 the GRC /96, toward the serving
satellite or unreachable) sit in table(t) of the same rotation, filled in slice t's preparation, and its
main table holds no default any more. Fixed rules look them up under mark M(t): in IPv4 after main
(:data:`GROUND_PREF4`: the default never shadows a more specific main route -- the LAN, the tunnels, the
core link), in IPv6 before main but only ``to`` the GRC /96 (:data:`GROUND_PREF6`: main may hold a ``::/0``,
the BGP overlay's, that must not shadow the GRC space). One table per mark, no retained fallback: a
ground table always holds its default, unicast or unreachable, and a lookup that meets an unreachable
route ends there. Unmarked lookups on a ground node (``ip route get`` without ``mark``, the first
lookup of a packet the node itself sends, before the output chain marks and re-routes it) go to a
fixed table, :data:`GROUND_UNMARKED_TABLE`, which the cleanup after each boundary points at the new
satellite (the old ground link is retained for that slice, so the unmarked answer stays usable in
between). Packets a ground node forwards (a device's, a core's) are marked in prerouting; a tunnel's
outer packet keeps its inner packet's mark and the tunnel's route lookup uses it (VXLAN and ipip skip
their route cache for a marked packet), so it leaves by slice k's satellite from T on.

``net.ipv{4,6}.fwmark_reflect`` are on, so echo replies and ICMP errors carry
the mark of the packet they answer. ``ip -6 route get`` on a satellite must
say ``mark M`` (``leo-emu status --fib`` reads the mark in force from the
chain: :meth:`NftSockets.marks`).

All messages are encoded by pyroute2 (``nftsocket`` message classes); they
are the same for every namespace, so they are encoded once per (mark, time).
"""

from __future__ import annotations

import errno as E
import os
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from pyroute2.netlink import NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_NFTABLES
from pyroute2.netlink.nfnetlink.nftsocket import (NFT_MSG_DELRULE, NFT_MSG_GETRULE, NFT_MSG_NEWCHAIN,
                                                  NFT_MSG_NEWRULE, NFT_MSG_NEWTABLE, nft_chain_msg, nft_rule_msg,
                                                  nft_table_msg)

from emu.dataplane import netns as _netns
from emu.dataplane.nlmsg import decode, encode
from emu.errors import DataplaneError

NETLINK_NETFILTER = 12
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 16, 17  # linux/netfilter/nfnetlink.h
NFPROTO_INET = 1  # the table sees both families
NF_INET_PRE_ROUTING, NF_INET_LOCAL_OUT = 0, 3
NF_IP_PRI_MANGLE = -150
NFT_REG_1 = 1
NFT_META_MARK, NFT_META_TIME_NS = 3, 30
NFT_BYTEORDER_HTON, NFT_CMP_GTE = 1, 5

TABLE = "leoemu_slice"
CHAINS = (("pre", "filter", NF_INET_PRE_ROUTING), ("out", "route", NF_INET_LOCAL_OUT))
MARK_BASE = 0x1E0  # slice k's packets carry MARK_BASE + k % n_tables + 1 (never 0: 0 is "not marked yet")
RULE_PREF = 1_000_000  # the fixed rules: after main (32766) and default (32767), like the IPv4 rotation's
LOCAL_OUT_PREF = 1_900_000_000  # after every slice rule: only lookups nothing else answered
LOCAL_OUT_TABLE = 999  # holds ``::/0 dev lo``: the socket's first lookup of a locally made packet
GROUND_PREF4 = 1_000_000  # a ground node's IPv4 mark rules: after main, which keeps its specific routes
GROUND_PREF6 = 31_000  # its IPv6 mark rules, ``to`` the GRC /96 only: before main (and its ``::/0``, if any)
GROUND_UNMARKED_TABLE = 998  # a ground node's default routes for unmarked lookups (rewritten in the cleanup)
_NLH = struct.Struct("=IHHII")


def slice_mark(k: int, n_tables: int) -> int:
    """The mark of slice k's packets: one per rotating table, so the fixed rules never change."""
    return MARK_BASE + k % n_tables + 1


@dataclass(frozen=True, order=True)
class MarkRule:
    """A fixed rule of ``family``: lookups with ``mark`` (None: mark 0, not marked), from ``iif`` and ``to``
    ``dst`` if given, go to ``table`` at ``priority``; in every satellite, or (``ground``) every UT and GS."""

    priority: int
    table: int
    mark: int | None
    family: int
    iif: str | None = None
    dst: str | None = None
    ground: bool = False

    def selector(self) -> dict:
        """The rule's match, as :meth:`emu.dataplane.netlink.NetlinkBatch.rule` takes it."""
        return {"family": socket.AF_INET6 if self.family == 6 else socket.AF_INET,
                "mark": 0 if self.mark is None else self.mark, "iif": self.iif, "dst": self.dst}


def fixed_rules(table_of, n_tables: int) -> list[MarkRule]:
    """The rules of the mark switch: in both families, for each rotation position t, table(t) then the
    retained table(t-1) under mark M(t); last, IPv6 only, unmarked local lookups to :data:`LOCAL_OUT_TABLE`.
    ``table_of(k)`` is the rotation's table of slice k (``desired.table_id``)."""
    out = []
    for family in (4, 6):
        for t in range(n_tables):
            mark = slice_mark(t, n_tables)
            out.append(MarkRule(RULE_PREF + 2 * t, table_of(t), mark, family))
            out.append(MarkRule(RULE_PREF + 2 * t + 1, table_of(t - 1), mark, family))
    out.append(MarkRule(LOCAL_OUT_PREF, LOCAL_OUT_TABLE, None, 6, iif="lo"))
    return out


def ground_rules(table_of, n_tables: int, dst6: str | None) -> list[MarkRule]:
    """The fixed rules of a ground node (UT, GS) under the mark switch: mark M(t) looks up table(t), which
    holds only slice t's default routes; unmarked lookups look up :data:`GROUND_UNMARKED_TABLE`. IPv4 after
    main (:data:`GROUND_PREF4`); IPv6 ``to`` the GRC /96 ``dst6`` only, before main (:data:`GROUND_PREF6`;
    none without ``dst6``)."""
    out = []
    for family, pref, dst in ((4, GROUND_PREF4, None), (6, GROUND_PREF6, dst6)):
        if family == 6 and dst6 is None:
            continue
        out += [MarkRule(pref + t, table_of(t), slice_mark(t, n_tables), family, dst=dst, ground=True)
                for t in range(n_tables)]
        out.append(MarkRule(pref + n_tables, GROUND_UNMARKED_TABLE, None, family, dst=dst, ground=True))
    return out


# ============================================================================ messages (pyroute2 encodes)
def _nft(msg_type: int, flags: int, cls, attrs: list) -> tuple[int, int, bytes]:
    body = encode(cls, {"nfgen_family": NFPROTO_INET, "version": 0, "res_id": 0}, attrs)
    return (NFNL_SUBSYS_NFTABLES << 8) | msg_type, flags, body


def _expr(name: str, *attrs) -> dict:
    return {"attrs": [("NFTA_EXPR_NAME", name), ("NFTA_EXPR_DATA", {"attrs": list(attrs)})]}


def _value(data: bytes) -> dict:
    return {"attrs": [("NFTA_DATA_VALUE", data)]}


def _set_mark(mark: int) -> list[dict]:
    """``meta mark set <mark>``: an immediate into register 1, then meta mark from it."""
    return [_expr("immediate", ("NFTA_IMMEDIATE_DREG", NFT_REG_1), ("NFTA_IMMEDIATE_DATA", _value(struct.pack("=I", mark)))),
            _expr("meta", ("NFTA_META_KEY", NFT_META_MARK), ("NFTA_META_SREG", NFT_REG_1))]


def _from_time(at_ns: int) -> list[dict]:
    """``meta time >= at_ns`` (wall-clock ns): the time into register 1, to network order, compared (as nft
    itself writes it)."""
    return [_expr("meta", ("NFTA_META_KEY", NFT_META_TIME_NS), ("NFTA_META_DREG", NFT_REG_1)),
            _expr("byteorder", ("NFTA_BYTEORDER_SREG", NFT_REG_1), ("NFTA_BYTEORDER_DREG", NFT_REG_1),
                  ("NFTA_BYTEORDER_OP", NFT_BYTEORDER_HTON), ("NFTA_BYTEORDER_LEN", 8), ("NFTA_BYTEORDER_SIZE", 8)),
            _expr("cmp", ("NFTA_CMP_SREG", NFT_REG_1), ("NFTA_CMP_OP", NFT_CMP_GTE),
                  ("NFTA_CMP_DATA", _value(struct.pack(">Q", at_ns))))]


def _rule(chain: str, exprs: list[dict]) -> tuple[int, int, bytes]:
    return _nft(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, nft_rule_msg,
                [("NFTA_RULE_TABLE", TABLE), ("NFTA_RULE_CHAIN", chain), ("NFTA_RULE_EXPRESSIONS", exprs)])


@lru_cache(maxsize=None)
def setup_messages(mark: int) -> tuple[tuple[int, int, bytes], ...]:
    """The table, its two base chains and their rules for ``mark``: one transaction, made once per run."""
    msgs = [_nft(NFT_MSG_NEWTABLE, NLM_F_CREATE, nft_table_msg, [("NFTA_TABLE_NAME", TABLE)])]
    for chain, ctype, hook in CHAINS:
        msgs.append(_nft(NFT_MSG_NEWCHAIN, NLM_F_CREATE, nft_chain_msg,
                         [("NFTA_CHAIN_TABLE", TABLE), ("NFTA_CHAIN_NAME", chain), ("NFTA_CHAIN_TYPE", ctype),
                          ("NFTA_CHAIN_HOOK", {"attrs": [("NFTA_HOOK_HOOKNUM", hook),
                                                         ("NFTA_HOOK_PRIORITY", NF_IP_PRI_MANGLE)]})]))
    return tuple(msgs) + switch_messages(mark)


@lru_cache(maxsize=None)
def switch_messages(mark: int) -> tuple[tuple[int, int, bytes], ...]:
    """Both chains' rules replaced by ``meta mark set <mark>``: flush chain, add rule, for each chain."""
    return arm_messages(mark, None, None)


@lru_cache(maxsize=64)
def arm_messages(mark: int, nxt: int | None, at_ns: int | None) -> tuple[tuple[int, int, bytes], ...]:
    """Both chains' rules replaced by ``meta mark set <mark>`` and, with ``nxt``, ``meta time >= at_ns meta mark
    set <nxt>``: the kernel switches to ``nxt`` by itself at ``at_ns`` (CLOCK_REALTIME ns, the clock of
    ``meta time``); a time already past switches at once."""
    msgs = []
    for chain, _t, _h in CHAINS:
        msgs.append(_nft(NFT_MSG_DELRULE, 0, nft_rule_msg, [("NFTA_RULE_TABLE", TABLE), ("NFTA_RULE_CHAIN", chain)]))
        msgs.append(_rule(chain, _set_mark(mark)))
        if nxt is not None:
            msgs.append(_rule(chain, _from_time(at_ns) + _set_mark(nxt)))
    return tuple(msgs)


def batch(msgs: Iterable[tuple[int, int, bytes]], seq0: int = 1) -> bytes:
    """One nfnetlink transaction: BATCH_BEGIN, the messages (each acked: exactly one reply each), BATCH_END."""
    res = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(NFNL_SUBSYS_NFTABLES))
    parts = [_NLH.pack(20, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq0, 0) + res]
    seq = seq0
    for mtype, flags, body in msgs:
        seq += 1
        parts.append(_NLH.pack(16 + len(body), mtype, flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body)
    parts.append(_NLH.pack(20, NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + 1, 0) + res)
    return b"".join(parts)


def decode_rule(body: bytes):
    """A rule message body decoded by pyroute2's parser (tests, :func:`read_mark`)."""
    return decode(nft_rule_msg, body)


def _bytes(value) -> bytes:
    return bytes.fromhex(value.replace(":", "")) if isinstance(value, str) else bytes(value)


def rule_effect(msg) -> tuple[int | None, int | None]:
    """What a decoded rule of the chain does: (the mark it sets or None, the wall-clock ns from which it
    applies or None for always)."""
    mark = at = None
    for expr in msg.get_attr("NFTA_RULE_EXPRESSIONS") or ():
        data = expr.get_attr("NFTA_EXPR_DATA")
        name = expr.get_attr("NFTA_EXPR_NAME")
        if name == "cmp" and data.get_attr("NFTA_CMP_OP") == "NFT_CMP_GTE":
            at = struct.unpack(">Q", _bytes(data.get_attr("NFTA_CMP_DATA").get_attr("NFTA_DATA_VALUE"))[:8])[0]
        elif name == "immediate":
            mark = struct.unpack("=I", _bytes(data.get_attr("NFTA_IMMEDIATE_DATA").get_attr("NFTA_DATA_VALUE"))[:4])[0]
    return mark, at


def mark_in_force(effects: Iterable[tuple[int | None, int | None]], now_ns: int) -> int | None:
    """The mark a packet gets at ``now_ns`` from a chain's rules (in order; a later one overrides)."""
    out = None
    for mark, at in effects:
        if mark is not None and (at is None or now_ns >= at):
            out = mark
    return out


# ============================================================================ transport
class NftSockets:
    """One NETLINK_NETFILTER socket per namespace, opened inside it on first use; transactions written one
    namespace at a time (each is processed inside ``sendmsg``; its replies are queued when the write returns)."""

    def __init__(self, names: Iterable[str] = ()):
        self.sock: dict[str, socket.socket] = {}
        self._seq = 0
        for n in names:
            self._sock(n)

    def _sock(self, n: str) -> socket.socket:
        """Namespace ``n``'s socket, opened inside it on first use."""
        s = self.sock.get(n)
        if s is None:
            with _netns.inside(n):
                s = self.sock[n] = _open(30.0)
        return s

    def transact(self, names: Iterable[str], msgs: tuple[tuple[int, int, bytes], ...], op: str) -> None:
        """The same transaction in every namespace of ``names``; the first failure raised (named)."""
        self._seq = (self._seq + len(msgs) + 2) & 0x7FFFFFFF or 1  # every transaction its own sequence numbers
        seq0 = self._seq
        data = batch(msgs, seq0)
        for n in names:
            s = self._sock(n)
            try:
                s.send(data)
                _acks(s, seq0, len(msgs), op, n)
            except OSError as exc:
                raise DataplaneError(op, n, exc.errno, exc.strerror or "") from exc

    def marks(self, names: Iterable[str], chain: str = "pre") -> dict[str, int | None]:
        """The mark each namespace's ``chain`` gives a packet now (None: no such table: the rules rotate),
        read back from the kernel."""
        mtype, flags, body = _nft(NFT_MSG_GETRULE, NLM_F_REQUEST | NLM_F_DUMP, nft_rule_msg,
                                  [("NFTA_RULE_TABLE", TABLE), ("NFTA_RULE_CHAIN", chain)])
        out: dict[str, int | None] = {}
        for n in names:
            try:
                s = self._sock(n)
            except OSError:  # no nfnetlink in this kernel: no mark switch, the rules rotate
                out[n] = None
                continue
            self._seq = (self._seq + 1) & 0x7FFFFFFF or 1
            s.send(_NLH.pack(16 + len(body), mtype, flags, self._seq, 0) + body)
            effects = [rule_effect(decode_rule(payload)) for mtype, payload in _dump(s, n, self._seq)
                       if mtype == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE]
            out[n] = mark_in_force(effects, time.time_ns())
        return out

    def close(self) -> None:
        for s in self.sock.values():
            s.close()
        self.sock.clear()


def probe() -> tuple[bool, str]:
    """Can this kernel run the switch? The setup transaction in the calling thread's namespace (a throwaway
    one: :mod:`emu.dataplane.features`). (works, why not)."""
    try:
        s = _open(10.0)
    except OSError as exc:
        return False, f"no nfnetlink socket: {exc.strerror}"
    try:
        msgs = setup_messages(slice_mark(0, 3)) + arm_messages(slice_mark(0, 3), slice_mark(1, 3), time.time_ns())
        s.send(batch(msgs, 1))
        _acks(s, 1, len(msgs), "nftables slice mark", "probe")
        return True, ""
    except (OSError, DataplaneError) as exc:
        return False, str(exc)
    finally:
        s.close()


def _open(timeout: float) -> socket.socket:
    """A bound NETLINK_NETFILTER socket of the calling thread's namespace."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
    try:
        s.bind((0, 0))
    except OSError:
        s.close()
        raise
    s.settimeout(timeout)
    return s


def _acks(s: socket.socket, seq0: int, n: int, op: str, ns: str) -> None:
    """Read the answers to the transaction ``batch(msgs, seq0)`` of ``n`` messages: one ack each (seq0+1 ..
    seq0+n), or one error for the batch itself (seq0: no nf_tables, a malformed batch). Answers of another
    transaction (a stale one) are skipped. Raise the first error: the kernel rolled the whole
    transaction back."""
    want = set(range(seq0 + 1, seq0 + n + 1))
    first_err = 0
    while want:
        data = s.recv(1 << 16)
        off = 0
        while off + 16 <= len(data):
            mlen, mtype, _f, seq, _ = _NLH.unpack_from(data, off)
            if mtype == NLMSG_ERROR:
                code = -struct.unpack_from("=i", data, off + 16)[0]
                if seq == seq0 and code:
                    raise DataplaneError(op, ns, code, os.strerror(code) + " (the whole transaction)")
                if seq in want:
                    want.discard(seq)
                    first_err = first_err or code
            off += (mlen + 3) & ~3 if mlen else len(data)
    if first_err:
        raise DataplaneError(op, ns, first_err, os.strerror(first_err))


def _dump(s: socket.socket, ns: str, seq: int) -> list[tuple[int, bytes]]:
    """The messages of the dump request ``seq`` (answers to anything else skipped), until its NLMSG_DONE."""
    out = []
    while True:
        data = s.recv(1 << 16)
        off = 0
        while off + 16 <= len(data):
            mlen, mtype, _f, mseq, _ = _NLH.unpack_from(data, off)
            if mseq != seq:
                off += (mlen + 3) & ~3 if mlen else len(data)
                continue
            if mtype == 3:  # NLMSG_DONE
                return out
            if mtype == NLMSG_ERROR:
                code = -struct.unpack_from("=i", data, off + 16)[0]
                if code in (E.ENOENT, E.EOPNOTSUPP, E.EPROTONOSUPPORT):  # no such table / no nf_tables
                    return out
                if code:
                    raise DataplaneError("nft rule dump", ns, code, os.strerror(code))
            else:
                out.append((mtype, data[off + 16:off + mlen]))
            off += (mlen + 3) & ~3 if mlen else len(data)

