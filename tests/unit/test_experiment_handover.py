"""Pure parts of the live handover experiment: window choice, one handover's record, summary, timeline, and
what the file runner refuses before anything starts (spec: inter-sno-mobility §5.1, §5)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from emu.cli.main import cli
from emu.errors import InputError
from emu.experiment import handover as H
from emu.experiment.runner import supported
from emu.experiment.spec import ExperimentError, NodeCatalog, parse_experiment

HS = [{"k": 5, "ut": "ut1", "after_outage": False}, {"k": 9, "ut": "ut2", "after_outage": True},
      {"k": 12, "ut": "ut2", "after_outage": False}, {"k": 30, "ut": "ut1", "after_outage": False}]


def test_window_starts_a_slice_before_and_skips_re_attachments() -> None:
    assert H.pick_window(HS, None, 2, 100) == (4, 10, [HS[0], HS[2]])
    assert H.pick_window(HS, 6, 1, 100) == (6, 8, [HS[2]])
    assert H.pick_window(HS, 20, 5, 31) == (20, 11, [HS[3]])
    with pytest.raises(InputError, match="--start-slice"):
        H.pick_window(HS, 30, 1, 100)


def test_bad_arguments_are_one_line_each() -> None:
    for args, field in [(("fast", "owner", 1, 1.0, 10), "--procedure"), (("baseline", "x", 1, 1.0, 10), "--association"),
                        (("baseline", "owner", 0, 1.0, 10), "--repeat"), (("baseline", "owner", 1, 0.0, 10), "--speed"),
                        (("baseline", "owner", 1, 1.0, 20), "--interval-ms")]:
        with pytest.raises(InputError, match=field):
            H.check_args(*args)


def _probe(gap_from: int, gap_to: int, n: int = 100, step_ms: int = 10) -> dict:
    """n probes every step_ms from t=0, replies after 1 ms, none for sequence numbers in [gap_from, gap_to)."""
    s = int(step_ms * 1e6)
    return {"sent": n, "interval_ms": step_ms,
            "replies": [[q, q * s, q * s + 1_000_000] for q in range(n) if not gap_from <= q < gap_to]}


def test_one_handover_interruption_loss_and_steps() -> None:
    cut = 500_000_000  # probe 50 was due at the boundary
    steps = [{"t_ns": cut - 10_000_000, "node": "sno-b", "user": "ut4@sno-b", "step": "prepare_tx"},
             {"t_ns": cut + 90_000_000, "node": "ut4", "user": "ut4@sno-b", "step": "registered", "core": "sno-a",
              "coa": "10.253.0.3", "prefix": "10.2.2.0/24"},
             {"t_ns": cut + 5_000_000, "node": "ut2", "user": "ut2@sno-b", "step": "registered"}]
    h = {"k": 20, "ut": "ut4", "user": "ut4@sno-b", "kind": "leave_home", "from_core": "sno-b", "to_core": "sno-a"}
    r = H.measure_one(h, {"t_ns": cut, "gs": "gs-london"}, _probe(50, 60), steps, 150.0)
    assert r["lost_packets"] == 10 and r["interruption_ms"] == 110.0  # reply 49 at 491 ms -> reply 60 at 601 ms
    assert r["registered_ms"] == 90.0 and r["coa"] == "10.253.0.3" and r["prefix"] == "10.2.2.0/24"
    assert [s["step"] for s in r["steps"]] == ["prepare_tx", "registered"] and r["steps"][0]["t_ms"] == -10.0
    s = H.summary([r, {**r, "interruption_ms": 20.0, "lost_packets": 1}, {**r, "interruption_ms": None}])
    assert s == {"median_interruption_ms": 65.0, "p90_interruption_ms": 110.0, "lost_packets": 11,
                 "handovers_measured": 2, "handovers_planned": 3}
    tl = H.timeline(_probe(50, 60), cut, 30.0)
    assert [t for t, _ in tl] == [-30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0]
    assert [v is None for _, v in tl] == [False, False, False, True, True, True, True]


NODES = NodeCatalog(frozenset({"sat0"}), frozenset({"gs-a"}), frozenset({"ut1"}), frozenset({"dev1"}),
                    frozenset({"sno-a"}), "inet", 100, 15.0)
BASE = {"name": "x", "scenario": "s.yaml", "duration_s": 60, "traffic": [{"probe": "udp", "src": "dev1", "dst": "inet"}]}


@pytest.mark.parametrize("change, field", [
    ({"traffic": [{"probe": "udp", "src": "dev1", "dst": "inet"}, {"probe": "icmp", "src": "dev1", "dst": "inet"}]},
     "traffic.1.src"),
    ({"traffic": [{"probe": "udp", "src": "dev1", "dst": "inet", "interval_ms": 0.5}]}, "traffic.0.interval_ms"),
    ({"traffic": [{"probe": "udp", "src": "ut1", "dst": "inet"}]}, "traffic.0.src"),
    ({"traffic": [{"probe": "udp", "src": "dev1", "dst": "ut1"}]}, "traffic.0.dst"),
    ({"scenario": None}, "scenario")])
def test_runner_refuses_what_it_cannot_do(change, field) -> None:
    with pytest.raises(ExperimentError, match=field):
        supported(parse_experiment({**BASE, **change}), NODES)
    supported(parse_experiment(BASE), NODES)
    supported(parse_experiment({**BASE, "events": [{"kind": "core_restart", "core": "sno-a", "time_s": 1}]}), NODES)


@pytest.mark.parametrize("doc, field", [("name: x\nduration_s: 5\ntraffic: [{probe: udp, src: dev1, dst: inet}]\n"
                                         "colour: red\n", "colour"),
                                        ("name: x\nduration_s: 5\ntraffic: [{probe: udp, src: dev1, dst: inet}]\n"
                                         "events: [{kind: meteor, time_s: 1}]\n", "events.0.kind")])
def test_experiment_run_bad_file_is_exit_2_one_line(tmp_path, doc, field) -> None:
    p = tmp_path / "e.yaml"
    p.write_text(doc)
    res = CliRunner().invoke(cli, ["experiment", "run", str(p)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in res.output


def test_plan_free_refusals_come_before_planning() -> None:
    """``supported(exp, None)``: what needs no plan (a second stream from one device, a spacing below the
    probes' floor) is refused before the scenario is planned; node names wait for the plan."""
    two = {"traffic": [{"src": "dev9", "dst": "inet"}, {"probe": "ping", "src": "dev9", "dst": "inet"}]}
    with pytest.raises(ExperimentError, match="traffic.1.src: one stream per device"):
        supported(parse_experiment({**BASE, **two}), None)
    with pytest.raises(ExperimentError, match="scenario"):
        supported(parse_experiment({**BASE, "scenario": None}), None)
    supported(parse_experiment({**BASE, "traffic": [{"src": "dev9", "dst": "ut9"}]}), None)


def test_a_run_probes_with_udp_by_default_or_icmp() -> None:
    """``probe: udp`` (the default) or ``icmp`` (``ping`` is the same); each traffic entry its own kind."""
    from emu.experiment.runner import probe_kind

    for kind in ("udp", "icmp", "ping"):
        supported(parse_experiment({**BASE, "traffic": [{"probe": kind, "src": "dev1", "dst": "inet"}]}), NODES)
    nodes = NodeCatalog(NODES.satellites, NODES.ground_stations, frozenset({"ut1", "ut2"}),
                        frozenset({"dev1", "dev2"}), NODES.cores, "inet", 100, 15.0)
    supported(parse_experiment({**BASE, "traffic": [{"probe": "udp", "src": "dev1", "dst": "inet"},
                                                     {"probe": "ping", "src": "dev2", "dst": "inet"}]}), nodes)
    exp = parse_experiment({**BASE, "traffic": [{"src": "dev1", "dst": "inet"}]})
    assert exp.traffic[0].probe == "udp" and probe_kind("ping") == probe_kind("icmp") == "icmp"
    with pytest.raises(InputError, match="probe: must be one of udp, icmp"):
        H.run("s.yaml", probe="tcp")
    with pytest.raises(InputError, match="probe: must be one of udp, icmp .*'tcp' for ut2"):
        H.run("s.yaml", streams={"ut1": {"probe": "icmp"}, "ut2": {"probe": "tcp"}})
    with pytest.raises(InputError, match="interval_ms: must be 1..10, .*0.5 for ut1"):
        H.run("s.yaml", streams={"ut1": {"probe": "icmp", "interval_ms": 0.5}})


def test_icmp_echo_request_and_reply_round_trip() -> None:
    """The ICMP probe's packets (emu.control.sno.probe): a valid ICMPv4 checksum, replies matched by identifier."""
    import socket
    import struct

    from emu.control.sno import probe as P

    payload = struct.pack("!IQ", 7, 123456789) + bytes(32)
    req = P.echo_request(socket.AF_INET, 0x1234, 7, payload)
    assert req[0] == 8 and P.checksum(req) == 0  # a correct checksum sums to zero
    reply = bytes([0]) + req[1:2] + b"\0\0" + req[4:]
    ip_header = bytes([0x45]) + bytes(19)
    assert P.echo_reply_payload(socket.AF_INET, 0x1234, ip_header + reply) == payload
    assert P.echo_reply_payload(socket.AF_INET, 0x4321, ip_header + reply) is None  # another ping's
    assert P.echo_reply_payload(socket.AF_INET, 0x1234, ip_header + req) is None  # our own request
    req6 = P.echo_request(socket.AF_INET6, 9, 7, payload)
    assert req6[0] == 128 and P.echo_reply_payload(socket.AF_INET6, 9, bytes([129]) + req6[1:]) == payload


def test_udp_probe_sends_the_payload_size_asked_for() -> None:
    """``--size-bytes``: every datagram carries that many bytes (a traffic entry's ``size_bytes``), sequence
    number first; out of range is one argparse error, exit 2 (loopback only, no root)."""
    import json
    import socket
    import struct
    import subprocess
    import sys

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(5)
    port = sink.getsockname()[1]
    argv = [sys.executable, "-m", "emu.control.sno.probe", "send", "127.0.0.1", str(port), "--interval-ms", "5",
            "--seconds", "0.1"]
    try:
        p = subprocess.run(argv + ["--size-bytes", "200"], capture_output=True, text=True, timeout=30)
        got = []
        sink.settimeout(0.5)
        while True:
            try:
                got.append(sink.recv(4096))
            except socket.timeout:
                break
    finally:
        sink.close()
    out = json.loads(p.stdout)
    assert out["size_bytes"] == 200 and out["sent"] == len(got) > 5
    assert {len(d) for d in got} == {200} and [struct.unpack_from("!I", d)[0] for d in got] == list(range(len(got)))
    bad = subprocess.run(argv + ["--size-bytes", "8"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--size-bytes: must be 12..1472 (got 8)" in bad.stderr
