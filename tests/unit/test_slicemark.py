"""The slice switch's nftables messages (emu.dataplane.slicemark): encoded by pyroute2, decoded back by
pyroute2's parser field by field, framed as one nfnetlink transaction. The kernel side (the rules take effect,
packets carry the mark) is tests/integration/test_ipv6.py."""

from __future__ import annotations

import socket
import struct

from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_NFTABLES
from pyroute2.netlink.nfnetlink.nftsocket import (NFT_MSG_DELRULE, NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE,
                                                  NFT_MSG_NEWTABLE, nft_chain_msg, nft_table_msg)
from pyroute2.netlink.rtnl.fibmsg import fibmsg

from emu.dataplane import slicemark as S
from emu.dataplane.nlmsg import decode, rule_body

NFT = NFNL_SUBSYS_NFTABLES << 8


@given(st.integers(min_value=1, max_value=0xFFFFFFFF))
def test_switch_flushes_and_sets_the_mark_in_both_chains(mark) -> None:
    msgs = S.switch_messages(mark)
    assert [t for t, _f, _b in msgs] == [NFT | NFT_MSG_DELRULE, NFT | NFT_MSG_NEWRULE] * 2
    for (_t, _f, flush), (_t2, _f2, add), (chain, _ty, _h) in zip(msgs[::2], msgs[1::2], S.CHAINS):
        d = S.decode_rule(flush)
        assert (d["nfgen_family"], d.get_attr("NFTA_RULE_TABLE"), d.get_attr("NFTA_RULE_CHAIN")) == (
            S.NFPROTO_INET, S.TABLE, chain)
        assert d.get_attr("NFTA_RULE_HANDLE") is None  # no handle: every rule of the chain goes
        r = S.decode_rule(add)
        assert (r.get_attr("NFTA_RULE_TABLE"), r.get_attr("NFTA_RULE_CHAIN")) == (S.TABLE, chain)
        exprs = r.get_attr("NFTA_RULE_EXPRESSIONS")
        assert [e.get_attr("NFTA_EXPR_NAME") for e in exprs] == ["immediate", "meta"]
        imm, meta = (e.get_attr("NFTA_EXPR_DATA") for e in exprs)
        assert imm.get_attr("NFTA_IMMEDIATE_DREG") == "NFT_REG_1"
        assert meta.get_attr("NFTA_META_KEY") == "NFT_META_MARK" and meta.get_attr("NFTA_META_SREG") == "NFT_REG_1"
        assert S.rule_effect(r) == (mark, None)


@given(st.integers(min_value=1, max_value=0xFFFFFFFF), st.integers(min_value=1, max_value=0xFFFFFFFF),
       st.integers(min_value=0, max_value=2**63))
def test_armed_switch_sets_the_old_mark_then_the_new_one_from_the_boundary(cur, nxt, at_ns) -> None:
    msgs = S.arm_messages(cur, nxt, at_ns)
    assert [t for t, _f, _b in msgs] == [NFT | NFT_MSG_DELRULE, NFT | NFT_MSG_NEWRULE, NFT | NFT_MSG_NEWRULE] * 2
    for i, (chain, _ty, _h) in enumerate(S.CHAINS):
        plain, timed = (S.decode_rule(b) for _t, _f, b in msgs[3 * i + 1:3 * i + 3])
        assert plain.get_attr("NFTA_RULE_CHAIN") == timed.get_attr("NFTA_RULE_CHAIN") == chain
        assert S.rule_effect(plain) == (cur, None) and S.rule_effect(timed) == (nxt, at_ns)
        names = [e.get_attr("NFTA_EXPR_NAME") for e in timed.get_attr("NFTA_RULE_EXPRESSIONS")]
        assert names == ["meta", "byteorder", "cmp", "immediate", "meta"]  # as nft writes `meta time >= T`
        meta_t, order, cmp = (e.get_attr("NFTA_EXPR_DATA") for e in timed.get_attr("NFTA_RULE_EXPRESSIONS")[:3])
        assert meta_t.get_attr("NFTA_META_KEY") == "NFT_META_TIME_NS"
        assert (order.get_attr("NFTA_BYTEORDER_OP"), order.get_attr("NFTA_BYTEORDER_LEN")) == ("NFT_BYTEORDER_HTON", 8)
        assert cmp.get_attr("NFTA_CMP_OP") == "NFT_CMP_GTE"
    effects = [S.rule_effect(S.decode_rule(b)) for _t, _f, b in msgs[1:3]]
    assert S.mark_in_force(effects, at_ns - 1) == cur if at_ns else True
    assert S.mark_in_force(effects, at_ns) == nxt  # from the boundary on, the kernel gives the new mark


def test_setup_makes_the_table_and_two_hooked_chains_then_the_rules() -> None:
    msgs = S.setup_messages(S.slice_mark(0, 3))
    assert [t for t, _f, _b in msgs[:3]] == [NFT | NFT_MSG_NEWTABLE, NFT | NFT_MSG_NEWCHAIN, NFT | NFT_MSG_NEWCHAIN]
    assert msgs[3:] == S.switch_messages(S.slice_mark(0, 3))
    assert decode(nft_table_msg, msgs[0][2]).get_attr("NFTA_TABLE_NAME") == S.TABLE
    for (_t, _f, body), (chain, ctype, hook) in zip(msgs[1:3], S.CHAINS):
        c = decode(nft_chain_msg, body)
        assert (c.get_attr("NFTA_CHAIN_TABLE"), c.get_attr("NFTA_CHAIN_NAME"), c.get_attr("NFTA_CHAIN_TYPE")) == (
            S.TABLE, chain, ctype)
        h = c.get_attr("NFTA_CHAIN_HOOK")
        assert (h.get_attr("NFTA_HOOK_HOOKNUM"), h.get_attr("NFTA_HOOK_PRIORITY")) == (hook, S.NF_IP_PRI_MANGLE)
    assert [c[2] for c in S.CHAINS] == [S.NF_INET_PRE_ROUTING, S.NF_INET_LOCAL_OUT]  # forwarded and local


def test_one_transaction_acks_every_message() -> None:
    msgs = S.switch_messages(0x1E1)
    data = S.batch(msgs, seq0=7)
    off, seen = 0, []
    while off < len(data):
        mlen, mtype, flags, seq, _pid = struct.unpack_from("=IHHII", data, off)
        seen.append((mtype, flags, seq))
        if mtype in (S.NFNL_MSG_BATCH_BEGIN, S.NFNL_MSG_BATCH_END):
            assert struct.unpack_from("=BBH", data, off + 16) == (socket.AF_UNSPEC, 0, socket.htons(NFNL_SUBSYS_NFTABLES))
        off += (mlen + 3) & ~3
    assert [t for t, _f, _s in seen] == [S.NFNL_MSG_BATCH_BEGIN] + [t for t, _f, _b in msgs] + [S.NFNL_MSG_BATCH_END]
    assert [s for _t, _f, s in seen] == list(range(7, 7 + len(msgs) + 2))
    assert all(f & (NLM_F_REQUEST | NLM_F_ACK) == NLM_F_REQUEST | NLM_F_ACK for _t, f, _s in seen[1:-1])


def test_fixed_rule_bodies_match_exactly_the_mark_or_unmarked_local_lookups() -> None:
    r = decode(fibmsg, rule_body("add", 1001, S.RULE_PREF, socket.AF_INET6, 0x1E1))
    assert (r.get_attr("FRA_FWMARK"), r.get_attr("FRA_FWMASK"), r.get_attr("FRA_TABLE")) == (0x1E1, 0xFFFFFFFF, 1001)
    r = decode(fibmsg, rule_body("add", S.LOCAL_OUT_TABLE, S.LOCAL_OUT_PREF, socket.AF_INET6, 0, "lo"))
    # mark 0 with the full mask: only unmarked lookups (the kernel's default mask for mark 0 would match all)
    assert (r.get_attr("FRA_FWMARK"), r.get_attr("FRA_FWMASK"), r.get_attr("FRA_IIFNAME")) == (0, 0xFFFFFFFF, "lo")
    plain = decode(fibmsg, rule_body("add", 1001, 5, socket.AF_INET))
    assert plain.get_attr("FRA_FWMARK") is None and plain.get_attr("FRA_IIFNAME") is None


def test_ground_rule_bodies_carry_the_grc_prefix_as_the_destination() -> None:
    """A ground node's IPv6 rules match only the GRC /96 (``to``), and its unmarked rules no interface."""
    v6 = [r for r in S.ground_rules(lambda k: 1000 + k % 3, 3, "fd00:6772:6300::/96") if r.family == 6]
    assert len(v6) == 4
    for rule in v6:
        r = decode(fibmsg, rule_body("add", rule.table, rule.priority, socket.AF_INET6, **{
            k: v for k, v in rule.selector().items() if k != "family"}))
        assert (r["dst_len"], r.get_attr("FRA_DST"), r.get_attr("FRA_IIFNAME")) == (96, "fd00:6772:6300::", None)
        assert r.get_attr("FRA_FWMARK") == (rule.mark or 0) and r.get_attr("FRA_FWMASK") == 0xFFFFFFFF
    v4 = decode(fibmsg, rule_body("add", 1000, S.GROUND_PREF4, socket.AF_INET, 0x1E1))
    assert v4["dst_len"] == 0 and v4.get_attr("FRA_DST") is None
