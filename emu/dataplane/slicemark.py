"""The IPv6 slice switch without policy-rule changes: fixed ``fwmark`` rules, the mark set by nftables.

spec: grc-based-routing §Time Slice Transition (the switch from table k to
table k+1 at the boundary). Why not rotate IPv6 rules as IPv4 does: every
IPv6 rule added or deleted bumps the namespace's IPv6 route generation
(``rt_genid_bump_ipv6``), which walks every node of every IPv6 table of the
namespace under the routing lock -- ~140 us per rule with three tables of
~150 routes, ~650 us with 1,000 (``scripts/bench_slicemark.py``); on Starlink
shell 1 that walk was ~90 % of the boundary. An nftables transaction walks
nothing: ~20 us per namespace whatever the table size.

How it works, per satellite namespace (family ``ip6`` only; IPv4 keeps its
rule rotation, whose rule changes cost ~15 us):

- fixed rules, made once: for each of the three rotating tables t, mark M(t)
  looks up table t, then (retained) the table before it in the rotation
  (:func:`fixed_rules`); one more rule sends *unmarked* lookups of locally
  made packets (``iif lo``, mark 0) to a table whose only route is ``::/0 dev
  lo`` (:data:`LOCAL_OUT_TABLE`), after ``main``: the socket's first lookup
  then succeeds, and the output hook below re-routes the packet with its mark;
- a table ``ip6 leoemu_slice`` with two chains, ``pre`` (filter, prerouting)
  and ``out`` (route, output: a changed mark re-routes), each holding one rule
  ``meta mark set M(k)``;
- the switch to slice k replaces both rules in one transaction (flush chain,
  add rule, twice): atomic for the namespace's packets.

``net.ipv6.fwmark_reflect`` is on, so echo replies and ICMPv6 errors carry
the mark of the packet they answer. A researcher's ``ip -6 route get`` must
say ``mark M`` (``leo-emu status --fib`` reads the mark in force from the
chain: :func:`read_mark`).

All messages are encoded by pyroute2 (``nftsocket`` message classes); they
are the same for every namespace, so they are encoded once per mark.
"""

from __future__ import annotations

import errno as E
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from pyroute2.netlink import NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_NFTABLES, nfgen_msg
from pyroute2.netlink.nfnetlink.nftsocket import (NFT_MSG_DELRULE, NFT_MSG_GETRULE, NFT_MSG_NEWCHAIN,
                                                  NFT_MSG_NEWRULE, NFT_MSG_NEWTABLE, nft_chain_msg, nft_rule_msg,
                                                  nft_table_msg)

from emu.dataplane import netns as _netns
from emu.dataplane.nlmsg import decode, encode
from emu.errors import DataplaneError

NETLINK_NETFILTER = 12
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 16, 17  # linux/netfilter/nfnetlink.h
NFPROTO_IPV6 = 10
NF_INET_PRE_ROUTING, NF_INET_LOCAL_OUT = 0, 3
NF_IP6_PRI_MANGLE = -150
NFT_REG_1 = 1
NFT_META_MARK = 3

TABLE = "leoemu_slice"
CHAINS = (("pre", "filter", NF_INET_PRE_ROUTING), ("out", "route", NF_INET_LOCAL_OUT))
MARK_BASE = 0x1E0  # slice k's packets carry MARK_BASE + k % n_tables + 1 (never 0: 0 is "not marked yet")
RULE_PREF = 1_000_000  # the fixed rules: after main (32766) and default (32767), like the IPv4 rotation's
LOCAL_OUT_PREF = 1_900_000_000  # after every slice rule: only lookups nothing else answered
LOCAL_OUT_TABLE = 999  # holds ``::/0 dev lo``: the socket's first lookup of a locally made packet
FWMASK_ALL = 0xFFFFFFFF
_NLH = struct.Struct("=IHHII")


def slice_mark(k: int, n_tables: int) -> int:
    """The mark of slice k's packets: one per rotating table, so the fixed rules never change."""
    return MARK_BASE + k % n_tables + 1


@dataclass(frozen=True, order=True)
class MarkRule6:
    """A fixed IPv6 rule: lookups with ``mark`` (None: mark 0 and ``iif lo``) go to ``table`` at ``priority``."""

    priority: int
    table: int
    mark: int | None


def fixed_rules(table_of, n_tables: int) -> list[MarkRule6]:
    """The IPv6 rules of the mark switch: for each rotation position t, table(t) then the retained
    table(t-1) under mark M(t); last, unmarked local lookups to :data:`LOCAL_OUT_TABLE`.
    ``table_of(k)`` is the rotation's table of slice k (``desired.table_id``)."""
    out = []
    for t in range(n_tables):
        mark = slice_mark(t, n_tables)
        out.append(MarkRule6(RULE_PREF + 2 * t, table_of(t), mark))
        out.append(MarkRule6(RULE_PREF + 2 * t + 1, table_of(t - 1), mark))
    out.append(MarkRule6(LOCAL_OUT_PREF, LOCAL_OUT_TABLE, None))
    return out


# ============================================================================ messages (pyroute2 encodes)
def _nft(msg_type: int, flags: int, cls, attrs: list) -> tuple[int, int, bytes]:
    body = encode(cls, {"nfgen_family": NFPROTO_IPV6, "version": 0, "res_id": 0}, attrs)
    return (NFNL_SUBSYS_NFTABLES << 8) | msg_type, flags, body


def _mark_rule(chain: str, mark: int) -> tuple[int, int, bytes]:
    """``meta mark set <mark>``: an immediate into register 1, then meta mark from it."""
    exprs = [{"attrs": [("NFTA_EXPR_NAME", "immediate"),
                        ("NFTA_EXPR_DATA", {"attrs": [("NFTA_IMMEDIATE_DREG", NFT_REG_1),
                                                      ("NFTA_IMMEDIATE_DATA",
                                                       {"attrs": [("NFTA_DATA_VALUE", struct.pack("=I", mark))]})]})]},
             {"attrs": [("NFTA_EXPR_NAME", "meta"),
                        ("NFTA_EXPR_DATA", {"attrs": [("NFTA_META_KEY", NFT_META_MARK),
                                                      ("NFTA_META_SREG", NFT_REG_1)]})]}]
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
                                                         ("NFTA_HOOK_PRIORITY", NF_IP6_PRI_MANGLE)]})]))
    return tuple(msgs) + switch_messages(mark)


@lru_cache(maxsize=None)
def switch_messages(mark: int) -> tuple[tuple[int, int, bytes], ...]:
    """Both chains' rules replaced by ``meta mark set <mark>``: flush chain, add rule, for each chain."""
    msgs = []
    for chain, _t, _h in CHAINS:
        msgs.append(_nft(NFT_MSG_DELRULE, 0, nft_rule_msg, [("NFTA_RULE_TABLE", TABLE), ("NFTA_RULE_CHAIN", chain)]))
        msgs.append(_mark_rule(chain, mark))
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


def rule_mark(msg) -> int | None:
    """The mark a decoded ``meta mark set`` rule writes, or None if it is not one."""
    value = None
    for expr in msg.get_attr("NFTA_RULE_EXPRESSIONS") or ():
        data = expr.get_attr("NFTA_EXPR_DATA")
        name = expr.get_attr("NFTA_EXPR_NAME")
        if name == "immediate":
            value = data.get_attr("NFTA_IMMEDIATE_DATA").get_attr("NFTA_DATA_VALUE")
        elif name == "meta" and data.get_attr("NFTA_META_KEY") == "NFT_META_MARK" and value is not None:
            raw = bytes.fromhex(value.replace(":", "")) if isinstance(value, str) else bytes(value)
            return struct.unpack("=I", raw[:4])[0]
    return None


# ============================================================================ transport
class NftSockets:
    """One NETLINK_NETFILTER socket per namespace, opened inside it; transactions written one namespace at a
    time (each is processed inside ``sendmsg``; its replies are queued when the write returns)."""

    def __init__(self, names: Iterable[str]):
        self.sock: dict[str, socket.socket] = {}
        try:
            for n in names:
                with _netns.inside(n):
                    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
                s.bind((0, 0))
                s.settimeout(30.0)
                self.sock[n] = s
        except BaseException:
            self.close()
            raise

    def transact(self, names: Iterable[str], msgs: tuple[tuple[int, int, bytes], ...], op: str) -> None:
        """The same transaction in every namespace of ``names``; the first failure raised (named)."""
        data = batch(msgs)
        for n in names:
            s = self.sock[n]
            try:
                s.send(data)
                _acks(s, len(msgs), op, n)
            except OSError as exc:
                raise DataplaneError(op, n, exc.errno, exc.strerror or "") from exc

    def marks(self, names: Iterable[str], chain: str = "pre") -> dict[str, int | None]:
        """The mark each namespace's ``chain`` sets now (None: no such rule), read back from the kernel."""
        body = encode(nft_rule_msg, {"nfgen_family": NFPROTO_IPV6, "version": 0, "res_id": 0},
                      [("NFTA_RULE_TABLE", TABLE), ("NFTA_RULE_CHAIN", chain)])
        out = {}
        for n in names:
            s = self.sock[n]
            s.send(_NLH.pack(16 + len(body), (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE,
                             NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
            out[n] = None
            for mtype, payload in _dump(s, n):
                if mtype == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE:
                    out[n] = rule_mark(decode_rule(payload))
        return out

    def close(self) -> None:
        for s in self.sock.values():
            s.close()
        self.sock.clear()


def probe() -> tuple[bool, str]:
    """Can this kernel run the switch? The setup transaction in the calling thread's namespace (a throwaway
    one: :mod:`emu.dataplane.features`). (works, why not)."""
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
    except OSError as exc:
        return False, f"no nfnetlink socket: {exc.strerror}"
    try:
        s.bind((0, 0))
        s.settimeout(10.0)
        s.send(batch(setup_messages(slice_mark(0, 3))))
        _acks(s, len(setup_messages(slice_mark(0, 3))), "nftables slice mark", "probe")
        return True, ""
    except (OSError, DataplaneError) as exc:
        return False, str(exc)
    finally:
        s.close()


def _acks(s: socket.socket, want: int, op: str, ns: str) -> None:
    """Read ``want`` acks; raise the first error (the kernel rolled the whole transaction back)."""
    got, first_err = 0, 0
    while got < want:
        data = s.recv(1 << 16)
        off = 0
        while off + 16 <= len(data):
            mlen, mtype, _f, _seq, _ = _NLH.unpack_from(data, off)
            if mtype == NLMSG_ERROR:
                got += 1
                code = -struct.unpack_from("=i", data, off + 16)[0]
                first_err = first_err or code
            off += (mlen + 3) & ~3 if mlen else len(data)
    if first_err:
        raise DataplaneError(op, ns, first_err, os.strerror(first_err))


def _dump(s: socket.socket, ns: str) -> list[tuple[int, bytes]]:
    out = []
    while True:
        data = s.recv(1 << 16)
        off = 0
        while off + 16 <= len(data):
            mlen, mtype, _f, _seq, _ = _NLH.unpack_from(data, off)
            if mtype == 3:  # NLMSG_DONE
                return out
            if mtype == NLMSG_ERROR:
                code = -struct.unpack_from("=i", data, off + 16)[0]
                if code == E.ENOENT:
                    return out
                if code:
                    raise DataplaneError("nft rule dump", ns, code, os.strerror(code))
            else:
                out.append((mtype, data[off + 16:off + mlen]))
            off += (mlen + 3) & ~3 if mlen else len(data)

