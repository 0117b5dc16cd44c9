"""``leo-emu status``, ``exec``, ``ping``, ``iperf``, ``trace``: look at and measure a running constellation.

Everything here reads the run's records (``run.json``, ``status.json``) and
runs ordinary tools inside the nodes' namespaces (entered in the child
process only); nothing here changes the data plane.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import click

from emu.cli.common import emit_json, emit_kv, emit_table, format_option
from emu.errors import InputError, PrivilegeError

run_option = click.option("--run", "run_id", default=None, help="The run to use (default: the only one up).")
ipv6_option = click.option("-6", "--ipv6", "ipv6", is_flag=True,
                           help="IPv6: aim at DST's IPv6 address (a device's from its operator's IPv6 pool, the "
                                "Internet's IPv6 server, a ground node's or satellite's IPv6 GRC).")
RECENT_APPLIES = 20


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise PrivilegeError(f"{what} needs root (CAP_SYS_ADMIN) to enter the nodes' namespaces: run it with sudo")


def _view(run_id: str | None):
    from emu.dataplane.state import find_run
    from emu.dataplane.runview import RunView

    return RunView(find_run(run_id))


# ============================================================================ status
def status_record(run) -> dict:
    """What ``status`` reports, from the run's records only (no root needed)."""
    from emu.dataplane.runview import pid_alive

    info = run.read_json("run.json")
    st = run.read_json("status.json")
    nodes = [{"name": n["name"], "kind": n["kind"], "netns": n["netns"]} for n in info.get("nodes", [])]
    applied = st.get("applied") or []
    started = st.get("slice_started_at")
    return {
        "run": run.run_id,
        "state": st.get("state") or ("building" if info else "unknown"),
        "slice": st.get("slice"),
        "n_slices": info.get("n_slices"),
        "slice_s": info.get("slice_s"),
        "speed": info.get("speed"),
        "slice_age_s": round(time.time() - started, 3) if isinstance(started, (int, float)) else None,
        "scenario": info.get("scenario"),
        "plan": info.get("plan"),
        "nodes": nodes,
        "node_counts": dict(sorted(Counter(n["kind"] for n in nodes).items())),
        "apply_ms": [a.get("apply_ms") for a in applied[-RECENT_APPLIES:]],
        "apply_p50_ms": st.get("apply_p50_ms"),
        "apply_p99_ms": st.get("apply_p99_ms"),
        "build_s": st.get("build_s"),
        "degradations": st.get("degradations") or [],
        "controller_pid": st.get("controller_pid"),
        "controller_alive": pid_alive(run, st.get("controller_pid")),
        "error": st.get("error"),
        "bgp": st.get("bgp"),  # timers, sessions established after, MNP moves, daemon restarts (docs/bgp.md)
    }


@click.command()
@run_option
@click.option("--nodes", "list_nodes", is_flag=True, help="List every node (table format).")
@click.option("--kernel", "kernel", is_flag=True, help="Also read the kernel back over netlink (root): "
              "namespaces present, links up, routes, rules.")
@click.option("--fib", "fib", is_flag=True, help="Also ask every satellite's kernel (root) where the ground "
              "nodes' and a sample of satellites' GRCs go now and compare strictly with the plan; exit 1 on a "
              "mismatch.")
@format_option
def status(run_id: str | None, list_nodes: bool, kernel: bool, fib: bool, fmt: str) -> None:
    """Where a run is: state, current slice, slice-switch times, nodes, degradations."""
    from emu.dataplane.state import find_run

    run = find_run(run_id)
    rec = status_record(run)
    if kernel:
        from emu.dataplane.fabric import kernel_summary

        _require_root("status --kernel")
        rec["kernel"] = kernel_summary(n["netns"] for n in rec["nodes"])
    if fib:
        from emu.dataplane.fibcheck import check_run
        from emu.dataplane.runview import RunView

        _require_root("status --fib")
        rec["fib"] = check_run(RunView(run))
    _status_out(rec, list_nodes, kernel, fmt)
    if fib and rec["fib"]["mismatches"]:
        click.echo(f"fib: {len(rec['fib']['mismatches'])} kernel answer(s) differ from the plan in slice "
                   f"{rec['fib']['slice']} (first: {rec['fib']['mismatches'][0]})", err=True)
        raise SystemExit(1)


def _status_out(rec: dict, list_nodes: bool, kernel: bool, fmt: str) -> None:
    if fmt == "json":
        emit_json(rec)
        return
    recent = [x for x in rec["apply_ms"] if x is not None]
    summary = {k: rec[k] for k in ("run", "state", "slice", "n_slices", "slice_s", "speed", "slice_age_s",
                                   "scenario", "build_s", "apply_p50_ms", "apply_p99_ms")}
    summary["apply_ms (last)"] = recent[-1] if recent else None
    summary["controller"] = f"pid {rec['controller_pid']} ({'alive' if rec['controller_alive'] else 'NOT running'})"
    if rec["error"]:
        summary["error"] = rec["error"]
    if rec["bgp"]:
        summary["bgp"] = ", ".join(f"{k} {v}" for k, v in rec["bgp"].items())
    emit_kv(f"run {rec['run']}", summary)
    emit_table("nodes per kind", ["kind", "count"], [[k, v] for k, v in rec["node_counts"].items()])
    if kernel:
        emit_table("kernel (read over netlink)", ["what", "count"], [[k, v] for k, v in rec["kernel"].items()])
    if "fib" in rec:
        f = rec["fib"]
        emit_kv(f"kernel vs plan, slice {f['slice']}", {"checked": f["checked"], **f["expected"],
                                                         "mismatches": len(f["mismatches"]),
                                                         "slice_changed": f["slice_changed"]})
    if list_nodes:
        emit_table("nodes", ["name", "kind", "netns"], [[n["name"], n["kind"], n["netns"]] for n in rec["nodes"]])
    for d in rec["degradations"]:
        click.secho(f"degraded: {d}", fg="yellow", err=True)


# ============================================================================ exec
@click.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@run_option
@click.argument("node")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_cmd(ctx: click.Context, run_id: str | None, node: str, argv: tuple[str, ...]) -> None:
    """Run a command inside NODE's namespace: leo-emu exec NODE -- CMD [ARGS...]. Its exit code is ours."""
    from emu.dataplane.procs import exec_in

    args = list(argv)
    if args and args[0] == "--":  # click keeps the separator once NODE has ended option parsing
        args = args[1:]
    if not args:
        raise InputError("exec: give a command after NODE, e.g. leo-emu exec dev1 -- ping -c 1 12.0.0.1 (got none)")
    view = _view(run_id)
    ns, name = _exec_target(view, node)
    _require_root("exec")
    from emu.control.bgp.birdc import socket_of, with_socket

    args = with_socket(args, socket_of(view.run.dir, name))  # plain `birdc` finds the router
    ctx.exit(exec_in(ns, args))


def _exec_target(view, node: str) -> tuple[str, str]:
    """(namespace, name) of NODE: a node of ``run.json``, else a router of the run's BGP overlay (the extra
    c-ASBRs of ``bgp.c_asbrs`` live only there); an unknown name is the view's one-line InputError."""
    from emu.control.bgp.birdc import router_of

    try:
        n = view.node(node)
        return n["netns"], n["name"]
    except InputError:
        r = router_of(view.run.dir, node)
        if r is None or not r.get("netns"):
            raise
        return str(r["netns"]), node


# ============================================================================ ping
@click.command()
@run_option
@click.argument("src")
@click.argument("dst")
@click.option("-c", "--count", type=int, default=5, show_default=True, help="Echo requests to send.")
@click.option("-i", "--interval", type=float, default=0.2, show_default=True, help="Seconds between requests.")
@click.option("-W", "--wait", "wait_s", type=float, default=1.0, show_default=True,
              help="Seconds to wait for each reply.")
@ipv6_option
@format_option
def ping(run_id: str | None, src: str, dst: str, count: int, interval: float, wait_s: float, ipv6: bool,
         fmt: str) -> None:
    """Ping DST (node name or IP address) from SRC's namespace; loss is a result, not an error."""
    from emu.dataplane.parsers import parse_ping, ping_argv
    from emu.dataplane.procs import run_in

    if count < 1:
        raise InputError(f"--count: must be >= 1 (got {count})")
    if interval < 0.002:
        raise InputError(f"--interval: must be >= 0.002 s (got {interval})")
    if wait_s <= 0:
        raise InputError(f"--wait: must be > 0 (got {wait_s})")
    view = _view(run_id)
    src_ns = view.netns_of(src)
    k = view.current_slice()
    target = view.target(dst, k, 6 if ipv6 else None)
    _require_root("ping")
    argv = ping_argv(target.addr, count, interval, wait_s)
    p = run_in(src_ns, argv, timeout_s=count * interval + wait_s + 15)
    res = parse_ping(p.stdout + "\n" + p.stderr)
    rec = {"src": view.node(src)["name"], "dst": dst, "dst_node": target.name, "dst_addr": target.addr,
           "family": 6 if ":" in target.addr else 4, "slice": k, "slice_after": view.current_slice(), "exit_code": p.returncode, **res}
    if fmt == "json":
        emit_json(rec)
        return
    emit_kv(f"ping {rec['src']} -> {dst} ({target.addr})",
            {k2: rec[k2] for k2 in ("slice", "transmitted", "received", "loss_pct", "rtt_min_ms", "rtt_avg_ms",
                                    "rtt_max_ms", "duplicates", "errors", "error")})
    for e in res["icmp_errors"][:5]:
        click.echo(f"  from {e['from']} seq {e['seq']}: {e['message']}", err=True)


# ============================================================================ iperf
@click.command()
@run_option
@click.argument("src")
@click.argument("dst")
@click.option("-t", "--time", "seconds", type=float, default=5.0, show_default=True, help="Test length in seconds.")
@click.option("-P", "--parallel", type=int, default=1, show_default=True, help="Parallel TCP streams.")
@click.option("-R", "--reverse", is_flag=True, help="DST sends, SRC receives.")
@ipv6_option
@format_option
def iperf(run_id: str | None, src: str, dst: str, seconds: float, parallel: int, reverse: bool, ipv6: bool,
          fmt: str) -> None:
    """TCP throughput from SRC to DST with iperf3 (the Internet node's server, or a one-off server in DST)."""
    import contextlib

    from emu.dataplane.parsers import iperf_client_argv, parse_iperf3
    from emu.dataplane.procs import run_in
    from emu.dataplane.servers import IPERF_PORT, oneoff_iperf_server

    if not 0 < seconds <= 3600:
        raise InputError(f"--time: must be in (0, 3600] s (got {seconds})")
    if not 1 <= parallel <= 128:
        raise InputError(f"--parallel: must be 1..128 (got {parallel})")
    view = _view(run_id)
    src_ns = view.netns_of(src)
    target = view.target(dst, view.current_slice(), 6 if ipv6 else None)
    _require_root("iperf")
    if target.node is None or target.node["kind"] == "inet":
        server = contextlib.nullcontext(IPERF_PORT)  # the Internet's server, started by `up`
        server_note = "the Internet node's iperf3 server" if target.node else "assumed: an iperf3 server on port 5201"
    else:
        server = oneoff_iperf_server(target.node["netns"])
        server_note = f"one-off iperf3 server in {target.node['netns']}"
    with server as port:
        p = run_in(src_ns, iperf_client_argv(target.addr, port, seconds, parallel, reverse),
                   timeout_s=seconds + 30)
    res = parse_iperf3(p.stdout, src_ns)
    rec = {"src": view.node(src)["name"], "dst": dst, "dst_node": target.name, "dst_addr": target.addr,
           "family": 6 if ":" in target.addr else 4, "port": port, "server": server_note, **res}
    if fmt == "json":
        emit_json(rec)
        return
    emit_kv(f"iperf3 {rec['src']} {'<-' if reverse else '->'} {dst} ({target.addr})",
            {"Mbit/s (receiver)": round(res["bits_per_second"] / 1e6, 3),
             "Mbit/s (sender)": round((res["sender_bits_per_second"] or 0.0) / 1e6, 3),
             "retransmits": res["retransmits"], "seconds": round(res["seconds"], 3),
             "streams": res["streams"], "server": server_note})


# ============================================================================ trace
@click.command()
@run_option
@click.argument("src")
@click.argument("dst")
@click.option("--timeout", "timeout_s", type=float, default=1.5, show_default=True,
              help="Seconds to collect sightings after sending.")
@click.option("--all", "watch_all", is_flag=True, help="Watch every namespace, however big the run.")
@ipv6_option
@format_option
def trace(run_id: str | None, src: str, dst: str, timeout_s: float, watch_all: bool, ipv6: bool, fmt: str) -> None:
    """Follow one scapy ICMP probe from SRC to DST through the namespaces and compare with the plan."""
    from emu.dataplane import trace as tr

    if not 0.1 <= timeout_s <= 30:
        raise InputError(f"--timeout: must be 0.1..30 s (got {timeout_s})")
    view = _view(run_id)
    view.node(src)
    view.target(dst, None, 6 if ipv6 else None)
    _require_root("trace")
    rep = tr.trace(view, src, dst, timeout_s, max_capture=10**9 if watch_all else tr.MAX_CAPTURE,
                   family=6 if ipv6 else None)
    if fmt == "json":
        emit_json(rep)
        return
    plan_eg = {}
    for h in rep["planned"] or []:
        plan_eg.setdefault(h["node"], h["egress"])
    emit_table(f"trace {rep['src']} -> {dst} ({rep['dst_addr']}), slice {rep['slice']}",
               ["#", "node", "in", "out", "direction", "plan", "t_us"],
               [[i, h["node"], h["in_if"], h["out_if"], h["direction"], plan_eg.get(h["node"], "-"), h["t_us"]]
                for i, h in enumerate(rep["observed"])])
    summary = {"matches_plan": rep["matches_plan"], "reply_received": rep["reply_received"],
               "rtt_ms": rep["rtt_ms"], "slice_changed": rep["slice_changed"],
               "watched": f"{rep['capture']['namespaces']} namespaces ({rep['capture']['scope']})"}
    if rep["send_error"]:
        summary["send_error"] = rep["send_error"]
    if rep["plan_reason"]:
        summary["plan"] = rep["plan_reason"]
    emit_kv(None, summary)
    for e in rep["icmp_errors"]:
        click.echo(f"ICMP error first seen at {e['first_seen_at']} ({e['ifname']}): {e['detail']}", err=True)
    for n in rep["notes"] + ([rep["capture"]["note"]] if rep["capture"].get("note") else []):
        click.echo(f"note: {n}", err=True)


def register(cli: click.Group) -> None:
    cli.add_command(status)
    cli.add_command(exec_cmd)
    cli.add_command(ping)
    cli.add_command(iperf)
    cli.add_command(trace)
