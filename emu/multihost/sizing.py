"""How many hosts a constellation needs, from measured per-namespace and per-satellite costs (pure).

Three bounds, the largest wins (docs/multihost.md):

- slice work: every boundary's prepare + apply + cleanup must fit in ``cpu_share`` of a slice's wall time
  (``slice_s / speed``); a host's agent is one Python thread, so a host adds one agent's worth of work,
  not its core count;
- build: all namespaces and links built within ``build_budget_s`` (hosts build in parallel);
- memory: kernel memory per namespace plus one agent (and Ray node) per host within ``mem_share`` of a host.
"""

from __future__ import annotations

import math

# satellites (FCC filings) and ground namespaces (100 GS + 100 UT + 100 devices per the city scenarios, the
# operators' cores, the Internet)
CONSTELLATIONS = {
    "starlink-shell1": {"satellites": 1584, "ground": 302},
    "starlink-phase1": {"satellites": 4408, "ground": 302},  # 1,584 + 1,584 + 720 + 348 + 172
    "kuiper+starlink-phase1": {"satellites": 4408 + 3236, "ground": 403},  # Kuiper: 784 + 1,296 + 1,156
}


def hosts_needed(satellites: int, ground: int, *, build_ms_per_ns: float, slice_work_ms_per_sat: float,
                 kernel_kb_per_ns: float, agent_mb: float, slice_s: float = 15.0, speed: float = 1.0,
                 host_mem_gb: float = 16.0, build_budget_s: float = 300.0, cpu_share: float = 0.5,
                 mem_share: float = 0.5) -> dict:
    if min(build_ms_per_ns, slice_work_ms_per_sat, kernel_kb_per_ns) < 0 or slice_s <= 0 or speed <= 0:
        raise ValueError("costs must be >= 0, slice_s and speed > 0")
    ns = satellites + ground
    per_slice_ms = satellites * slice_work_ms_per_sat
    slice_budget_ms = cpu_share * slice_s / speed * 1000
    cpu = math.ceil(per_slice_ms / slice_budget_ms) if per_slice_ms else 1
    build = math.ceil(ns * build_ms_per_ns / (build_budget_s * 1000)) if build_ms_per_ns else 1
    room_mb = mem_share * host_mem_gb * 1024 - agent_mb
    mem = math.ceil(ns * kernel_kb_per_ns / 1024 / room_mb) if room_mb > 0 else math.inf
    hosts = max(cpu, build, mem, 1)
    return {"namespaces": ns, "hosts": hosts, "by": {"slice_work": cpu, "build": build, "memory": mem},
            "slice_work_s_one_host": round(per_slice_ms / 1000, 2), "slice_budget_s": round(slice_budget_ms / 1000, 2),
            "build_s_one_host": round(ns * build_ms_per_ns / 1000, 1),
            "kernel_mb_total": round(ns * kernel_kb_per_ns / 1024)}
