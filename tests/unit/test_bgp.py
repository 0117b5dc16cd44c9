"""BGP overlay: model rules, rendered BIRD configurations (known answers, and ``bird -p`` accepts them), birdc parsers.

spec: bgp-mobile-routing-atn §3 (roles, default-only stubs, MSP black holes), §6 (timers).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.control.bgp import birdc
from emu.control.bgp.daemon import BirdConfigError, check_config
from emu.control.bgp.model import (AGGRESSIVE, DEFAULT, Link, Operator, Speaker, build_network, check_mnp,
                                   protocol_name)
from emu.control.bgp.render import render, render_core, render_mnps, render_stub
from emu.errors import ScenarioError

OPS = [Operator("opa", 65001, ("fd00:a::/32",)), Operator("opb", 65002, ("fd00:b::/32",))]


def two_operators(n_cores_a: int = 1):
    speakers = [Speaker(f"core-a{i}", f"ns-a{i}", f"10.0.0.{i + 1}", operator="opa") for i in range(n_cores_a)]
    speakers += [Speaker("core-b", "ns-b", "10.0.1.1", operator="opb"),
                 Speaker("gs1", "ns-gs1", "10.0.2.1", asn=4200000001, mnps=("fd00:a:0:100::/56",)),
                 Speaker("gs2", "ns-gs2", "10.0.2.2", asn=4200000002)]
    links = [Link("core-a0", "fd01::1", "core-b", "fd01::2"),
             Link("gs1", "fd02::2", "core-a0", "fd02::1"),
             Link("gs2", "fd03::2", "core-b", "fd03::1")]
    k = 0
    for i in range(n_cores_a):
        for j in range(i + 1, n_cores_a):
            k += 1
            links.append(Link(f"core-a{i}", f"fd04:{k:x}::1", f"core-a{j}", f"fd04:{k:x}::2"))
    return build_network(OPS, speakers, links)


# ---------------------------------------------------------------------------- model
def test_roles_asns_and_session_kinds():
    net = two_operators()
    a, b, gs1 = net.routers["core-a0"], net.routers["core-b"], net.routers["gs1"]
    assert (a.role, a.asn, a.msps) == ("core", 65001, ("fd00:a::/32",))
    assert (gs1.role, gs1.asn, gs1.mnps) == ("stub", 4200000001, ("fd00:a:0:100::/56",))
    assert [(p.name, p.kind, p.peer_asn, p.local_addr, p.peer_addr) for p in a.peerings] == [
        ("core-b", "ebgp", 65002, "fd01::1", "fd01::2"), ("gs1", "stub", 4200000001, "fd02::1", "fd02::2")]
    assert [(p.name, p.kind, p.peer_asn) for p in gs1.peerings] == [("core-a0", "core", 65001)]
    assert [p.kind for p in b.peerings] == ["ebgp", "stub"]
    assert a.all_msps == ("fd00:a::/32", "fd00:b::/32")


def test_full_mesh_below_reflector_threshold():
    net = two_operators(n_cores_a=3)
    for i in range(3):
        ibgp = [p for p in net.routers[f"core-a{i}"].peerings if p.kind == "ibgp"]
        assert len(ibgp) == 2 and not any(p.rr_client for p in ibgp)


def test_route_reflector_from_four_cores():
    net = two_operators(n_cores_a=4)
    rr = [p for p in net.routers["core-a0"].peerings if p.kind == "ibgp"]
    assert [p.name for p in rr] == ["core-a1", "core-a2", "core-a3"] and all(p.rr_client for p in rr)
    for i in (1, 2, 3):  # clients peer only with the reflector
        ibgp = [p for p in net.routers[f"core-a{i}"].peerings if p.kind == "ibgp"]
        assert [(p.name, p.rr_client) for p in ibgp] == [("core-a0", False)]


@pytest.mark.parametrize("change, field", [
    (lambda s, ln: s.__setitem__(2, Speaker("gs1", "n", "10.0.2.1", asn=65001)), "speakers[2].asn"),
    (lambda s, ln: s.__setitem__(3, Speaker("gs2", "n", "10.0.2.2", asn=4200000001)), "speakers[3].asn"),
    (lambda s, ln: s.__setitem__(3, Speaker("gs2", "n", "10.0.2.1", asn=7)), "speakers[3].router_id"),
    (lambda s, ln: s.__setitem__(2, Speaker("gs1", "n", "10.0.2.1", asn=7, mnps=("fd00:c::/56",))),
     "speakers[2].mnps[0]"),
    (lambda s, ln: s.__setitem__(2, Speaker("gs1", "n", "10.0.2.1", asn=0)), "speakers[2].asn"),
    (lambda s, ln: s.__setitem__(0, Speaker("core-a0", "n", "10.0.0.1", operator="opz")), "speakers[0].operator"),
    (lambda s, ln: ln.append(Link("gs1", "fd09::1", "gs2", "fd09::2")), "links[3].b"),
    (lambda s, ln: ln.append(Link("gs1", "fd09::1", "nobody", "fd09::2")), "links[3].b"),
    (lambda s, ln: ln.__setitem__(0, Link("core-a0", "fe80::1", "core-b", "fd01::2")), "links[0].a_addr"),
    (lambda s, ln: ln.__setitem__(0, Link("core-a0", "10.1.1.1", "core-b", "fd01::2")), "links[0].a_addr"),
    (lambda s, ln: ln.pop(1), "links"),
])
def test_bad_input_names_field_and_value(change, field):
    speakers = [Speaker("core-a0", "ns-a0", "10.0.0.1", operator="opa"),
                Speaker("core-b", "ns-b", "10.0.1.1", operator="opb"),
                Speaker("gs1", "ns-gs1", "10.0.2.1", asn=4200000001),
                Speaker("gs2", "ns-gs2", "10.0.2.2", asn=4200000002)]
    links = [Link("core-a0", "fd01::1", "core-b", "fd01::2"), Link("gs1", "fd02::2", "core-a0", "fd02::1"),
             Link("gs2", "fd03::2", "core-b", "fd03::1")]
    change(speakers, links)
    with pytest.raises(ScenarioError) as e:
        build_network(OPS, speakers, links)
    assert str(e.value).startswith(field + ":"), str(e.value)
    assert "(got " in str(e.value)


def test_overlapping_msps_refused():
    with pytest.raises(ScenarioError, match="overlap"):
        build_network([Operator("x", 1, ("fd00::/16",)), Operator("y", 2, ("fd00:a::/32",))], [], [])


def test_mnp_must_be_strictly_inside_an_msp():
    assert check_mnp("fd00:a:0:100::/56", ("fd00:a::/32",), "m") == "fd00:a:0:100::/56"
    for bad in ("fd00:a::/32", "fd00:a::/24", "fd00:b::/56", "fd00:a::1/56", "10.0.0.0/8"):
        with pytest.raises(ScenarioError, match="^m: "):
            check_mnp(bad, ("fd00:a::/32",), "m")


def test_protocol_names_are_bird_symbols():
    assert protocol_name("core-a") == "core_a"


# ---------------------------------------------------------------------------- rendering
def block(text: str, name: str) -> str:
    m = re.search(r"^protocol \w+ " + name + r" \{\n(.*?)^\}", text, re.S | re.M)
    assert m, f"no protocol block {name}"
    return m.group(1)


def test_core_config_known_answers():
    net = two_operators()
    text = render_core(net.routers["core-a0"], AGGRESSIVE)
    assert "router id 10.0.0.1;" in text
    assert "define MNPS = [ fd00:a::/32{33,128}, fd00:b::/32{33,128} ];" in text
    assert "  route fd00:a::/32 unreachable;" in block(text, "msp")
    assert "fd00:b::/32" not in block(text, "msp")  # only its own operator's MSP is black-holed
    assert "    export where source = RTS_BGP || proto = \"msp\";" in block(text, "kernel6")
    stub = block(text, "gs1")
    assert "  local fd02::1 as 65001;\n  neighbor fd02::2 as 4200000001;" in stub
    assert "    import where net ~ MNPS;" in stub and '    export where net = ::/0 && source = RTS_STATIC;' in stub
    assert "  hold time 3;" in stub and "  bfd on;" in stub
    core_b = block(text, "core_b")
    assert "    import where net ~ MNPS || net ~ MSPS;" in core_b
    assert "neighbor fd01::2 as 65002;" in core_b
    assert [ln.split()[2] for ln in text.splitlines() if ln.startswith("protocol bgp")] == ["core_b", "gs1"]
    # each s-ASBR session on a table of its own, piped into master6 (MNPs in, nothing back)
    assert "    table t_gs1;" in stub and "ipv6 table t_gs1;" in text
    assert "  route ::/0 blackhole;" in block(text, "d_gs1")
    pipe = block(text, "p_gs1")
    assert "  table master6;\n  peer table t_gs1;\n  import where net ~ MNPS;\n  export none;" in pipe
    assert "default_for_stubs" not in text
    shared = render_core(net.routers["core-a0"], AGGRESSIVE, stub_tables=False)
    assert "t_gs1" not in shared and "  route ::/0 blackhole;" in block(shared, "default_for_stubs")


def test_stub_config_known_answers():
    net = two_operators()
    text = render_stub(net.routers["gs1"], AGGRESSIVE, mnp_file="/x/mnps.conf")
    assert 'include "/x/mnps.conf";' in block(text, "mnps")
    bgp = block(text, "core_a0")
    assert "    import where net = ::/0;" in bgp and '    export where proto = "mnps";' in bgp
    assert "  local fd02::2 as 4200000001;" in bgp
    assert "    export where source = RTS_BGP;" in block(text, "kernel6")


def test_ibgp_next_hop_self_and_reflector_clients():
    net = two_operators(n_cores_a=4)
    text = render_core(net.routers["core-a0"], AGGRESSIVE)
    ibgp = block(text, "core_a1")
    assert "    next hop self;" in ibgp and "  rr client;" in ibgp
    assert "    import where net ~ MNPS || net ~ MSPS;" in ibgp  # other operators' MSPs reach every c-ASBR
    assert "    export where source = RTS_BGP && (net ~ MNPS || net ~ MSPS);" in ibgp
    assert "rr client" not in render_core(net.routers["core-a1"], AGGRESSIVE)


def test_timer_profiles():
    net = two_operators()
    fast, slow = (render_stub(net.routers["gs1"], t) for t in (AGGRESSIVE, DEFAULT))
    assert "hold time 3;" in fast and "keepalive time 1;" in fast and "protocol bfd" in fast and "bfd on;" in fast
    assert "hold time 90;" in slow and "keepalive time 30;" in slow and "bfd" not in slow


def test_mnp_file():
    assert render_mnps(["fd00:a:0:100::/56", "fd00:a:0:200::/56"]) == (
        "route fd00:a:0:100::/56 blackhole;\nroute fd00:a:0:200::/56 blackhole;\n")
    assert render_mnps([]) == ""
    assert render_mnps(["fd00:a:0:100::/56"], distinct_attributes=True) == (
        "route fd00:a:0:100::/56 blackhole { bgp_med = 1; };\n")


@given(st.lists(st.integers(0, 2**24 - 1), unique=True, max_size=50), st.booleans())
@settings(max_examples=50)
def test_mnp_file_one_line_per_mnp_distinct_meds(indexes, distinct):
    mnps = [f"fd00:a:{i >> 8:x}:{(i & 0xff) << 8:x}::/56" for i in indexes]
    lines = render_mnps(mnps, distinct).splitlines()
    assert [ln.split()[1] for ln in lines] == mnps
    meds = [m for ln in lines for m in re.findall(r"bgp_med = (\d+)", ln)]
    assert len(set(meds)) == (len(mnps) if distinct else 0)


# ---------------------------------------------------------------------------- bird -p on every rendered config
needs_bird = pytest.mark.skipif(shutil.which("bird") is None, reason="bird not installed (apt-get install bird2)")


@needs_bird
@pytest.mark.parametrize("timers", [AGGRESSIVE, DEFAULT], ids=lambda t: t.name)
@pytest.mark.parametrize("n_cores_a", [1, 4])
def test_every_rendered_config_passes_bird_p(tmp_path: Path, timers, n_cores_a):
    net = two_operators(n_cores_a)
    mnps = tmp_path / "mnps.conf"
    mnps.write_text(render_mnps(["fd00:a:0:100::/56", "fd00:b:0:100::/56"], distinct_attributes=True))
    for r in net.routers.values():
        path = tmp_path / f"{r.name}.conf"
        text = render(r, timers, log_path=str(tmp_path / "bird.log"))
        if r.role == "stub":
            text = render_stub(r, timers, str(tmp_path / "bird.log"), mnp_file=str(mnps))
        path.write_text(text)
        check_config(path, r.name)
        if r.role == "core":
            path.write_text(render_core(r, timers, str(tmp_path / "bird.log"), stub_tables=False))
            check_config(path, r.name)
        else:
            path.write_text(render_stub(r, timers, str(tmp_path / "bird.log"), None, mnp_file=str(mnps)))
            check_config(path, r.name)


@needs_bird
def test_bad_config_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "bad.conf"
    path.write_text("router id 10.0.0.1;\nprotocol bgp x {\n  local as 65001;\n  neighbor fd00::1 as nonsense;\n}\n")
    with pytest.raises(BirdConfigError, match=r"^bgp config of gsX: bird refused it: .*bad\.conf:4"):
        check_config(path, "gsX")
    assert BirdConfigError.exit_code == 2


# ---------------------------------------------------------------------------- birdc parsers
PROTOCOLS = """BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     12:12:22.606  
msp        Static     master6    up     12:12:22.606  
kernel6    Kernel     master6    up     12:12:22.606  
core_b     BGP        ---        start  12:12:22.606  Idle          
gs1        BGP        ---        up     12:12:23.001  Established   
"""


def test_parse_protocols():
    p = birdc.parse_protocols(PROTOCOLS)
    assert list(p) == ["device1", "msp", "kernel6", "core_b", "gs1"]
    assert p["gs1"].established and not p["core_b"].established and not p["kernel6"].established
    assert (p["core_b"].state, p["core_b"].info, p["gs1"].since) == ("start", "Idle", "12:12:23.001")


def test_parse_route_count():
    text = ("BIRD 2.0.12 ready.\n0 of 0 routes for 0 networks in table master4\n"
            "1000002 of 1000002 routes for 1000002 networks in table master6\n"
            "Total: 1000002 of 1000002 routes for 1000002 networks in 2 tables\n")
    assert birdc.parse_route_count(text) == {"master4": 0, "master6": 1000002}


PROTOCOLS_ALL = """BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
kernel6    Kernel     master6    up     12:12:22.606  
  Channel ipv6
    State:          UP
    Routes:         0 imported, 1000001 exported, 0 preferred
    Route change stats:     received   rejected   filtered    ignored   accepted
      Import updates:              0          0          0          0          0
      Import withdraws:            0          0        ---          0          0
      Export updates:        2000004          0          1        ---    2000003
      Export withdraws:            0        ---        ---        ---          0

s000       BGP        ---        up     12:12:23.001  Established   
  BGP state:          Established
  Channel ipv6
    Routes:         10000 imported, 1 exported, 10000 preferred
    Route change stats:     received   rejected   filtered    ignored   accepted
      Import updates:          20000          0          0          0      20000

s001       BGP        ---        start  12:12:23.001  Connect
  Channel ipv6
    State:          DOWN
"""


def test_parse_protocols_all():
    r = birdc.parse_protocols_all(PROTOCOLS_ALL)
    assert r == {"kernel6": birdc.ChannelRoutes(0, 1000001, 0, 0, 2000003),
                 "s000": birdc.ChannelRoutes(10000, 1, 10000, 20000, 0)}
    assert birdc.parse_channel_routes("    Routes:         5 imported, 2 filtered, 3 exported, 4 preferred") == \
        birdc.ChannelRoutes(5, 3, 4)


def test_parse_control_reply():
    """BIRD's control protocol as birdc speaks it: CODE-text lines go on, ' text' continues, 'CODE text' ends."""
    assert birdc.parse_reply(["0002-Reading configuration from /x/bird.conf", "0003 Reconfigured"]) == (
        True, "Reading configuration from /x/bird.conf\nReconfigured")
    assert birdc.parse_reply(["0002-Reading configuration from /x/bird.conf"]) == (
        False, "Reading configuration from /x/bird.conf")
    assert birdc.parse_reply(["1002-Name  Proto", " kernel6 Kernel", "0000 "]) == (True, "Name  Proto\nkernel6 Kernel\n")
    done, text = birdc.parse_reply(["8002 /x/mnps.conf:1:7 syntax error, unexpected CF_SYM_UNDEFINED"])
    assert done and "syntax error" in text


def test_exec_finds_an_extra_c_asbr_in_the_overlay_record(tmp_path):
    """`leo-emu exec sno-a-c2 -- birdc ...`: an extra c-ASBR (bgp.c_asbrs) is in the run's BGP overlay record
    only; a run.json node wins, an unknown name stays the view's one-line error."""
    import json

    from emu.cli.run_cmds import _exec_target
    from emu.errors import InputError

    (tmp_path / "bgp").mkdir()
    (tmp_path / "bgp" / "overlay.json").write_text(json.dumps({"routers": {
        "sno-a": {"netns": "r-sno-a", "socket": "/x/sno-a.ctl"},
        "sno-a-c2": {"netns": "r-sno-a-c2", "socket": "/x/sno-a-c2.ctl"}}}))

    class View:
        run = type("R", (), {"dir": tmp_path})()

        def node(self, name):
            if name == "sno-a":
                return {"name": "sno-a", "netns": "r-sno-a"}
            raise InputError(f"node: no such node in run r (got {name!r})")

    assert _exec_target(View(), "sno-a") == ("r-sno-a", "sno-a")
    assert _exec_target(View(), "sno-a-c2") == ("r-sno-a-c2", "sno-a-c2")
    assert birdc.socket_of(tmp_path, "sno-a-c2") == "/x/sno-a-c2.ctl"
    with pytest.raises(InputError, match="sno-a-c9"):
        _exec_target(View(), "sno-a-c9")
    (tmp_path / "bgp" / "overlay.json").write_text("{not json")
    assert birdc.router_of(tmp_path, "sno-a-c2") is None
