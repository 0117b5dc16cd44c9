#!/usr/bin/env python3
"""A Mininet script, unchanged in habit, on a live leo-emu constellation.

    sudo python3 examples/mininet_api.py [SCENARIO]

``LeoNet.start()`` is ``leo-emu up SCENARIO --detach`` (plan, build, slice
clock, journal); ``net.get``/``cmd``/``ping``/``iperf`` are Mininet's own;
``stop()`` is ``leo-emu down`` for that run. The last line printed is a JSON
summary (the integration test reads it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mininet.log import setLogLevel  # noqa: E402

from emu.mininet.net import LeoNet  # noqa: E402


def main(scenario: str) -> dict:
    setLogLevel("output")
    net = LeoNet(scenario)
    net.start()
    try:
        dev1, inet = net.get("dev1"), net.get("inet")
        print(dev1.cmd("ping -c1 12.0.0.1"))                      # any command, inside dev1's namespace
        route = net.get("sat0-0-2").cmd("ip route show table all | grep -c 'proto static'")
        # Mininet's ping test among a terminal and two ground stations (their GRCs): % lost. (default.yaml
        # routes to ground nodes only, satellite_destinations: false; polar.yaml also routes to satellites.)
        # (The Internet cannot ping dev1 back: dev1 sits behind its operator's NAT.)
        loss = net.ping([net.get("ut1"), net.get("gs-london"), net.get("gs-madrid")], timeout="2")
        server_bw, client_bw = net.iperf([dev1, inet], seconds=3)  # Mininet's iperf (v2): dev1 -> inet
        return {"run": net.run_id, "nodes": len(net), "ping_loss_pct": loss, "iperf_server": server_bw,
                "iperf_client": client_bw, "sat0-0-2_static_routes": int(route.strip() or 0)}
    finally:
        net.stop()


if __name__ == "__main__":
    result = main(sys.argv[1] if len(sys.argv) > 1 else "topologies/default.yaml")
    print(json.dumps(result))
