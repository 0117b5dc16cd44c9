"""One host's share of a run: the existing builder and applier, restricted to the host's nodes.

The desired state and its per-slice operations are the single-host ones
(:mod:`emu.dataplane.slicestate`, :mod:`emu.dataplane.desired`); this module only decides which namespaces
are here. Operations on another host's namespace go to a null batch; a link
with one end here becomes this host's VXLAN half (:mod:`emu.multihost.underlay`)
instead of a veth; retiring deletes the interface group in the local end's
namespace. Routes are computed for the local satellites only. Each host keeps
its own journal (``<run>/hosts/h<i>/journal``) so ``down`` finds everything
it made, also after the agent was killed. Issue 13.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path

from emu.dataplane import desired as D
from emu.dataplane import netns
from emu.dataplane.build import SYSCTLS, Builder
from emu.dataplane.fabric import Fabric
from emu.dataplane.model import Model
from emu.dataplane.runconfig import RunConfig, scenario_of_plan
from emu.dataplane.slices import SliceApplier
from emu.dataplane.slicestate import Desired
from emu.dataplane.state import Run
from emu.errors import DataplaneError
from emu.multihost import underlay
from emu.multihost.partition import partition

log = logging.getLogger(__name__)


class _Sent:
    sent = 0


class NullBatch:
    """Swallows the messages meant for another host's namespace."""

    def __len__(self) -> int:
        return 0

    def __bool__(self) -> bool:  # a batch (callers test ``b or NetlinkBatch(ns)``), though an empty one
        return True

    def send(self, *a, **kw) -> _Sent:
        return _Sent()

    def close(self) -> None:
        pass

    def __getattr__(self, name):
        return lambda *a, **kw: 0


class _LocalNl(dict):
    """Per-namespace batches of this host; any other namespace gets the null batch."""

    null = NullBatch()

    def __missing__(self, key):
        return self.null

    def get(self, key, default=None):
        return dict.get(self, key, self.null)


class LocalFabric(Fabric):
    """The fabric of this host's namespaces (and its underlay namespace)."""

    def __init__(self, names, underlay_name: str):
        super().__init__(list(names) + [underlay_name])
        self.nl = _LocalNl(self.nl)
        self.underlay = underlay_name

    def flush(self, names=None, ok=()) -> int:
        return super().flush(None if names is None else [n for n in names if n in self.fd], ok)


class PartDesired(Desired):
    """Slice states with route tables for this host's satellites only (the rest of the state is small)."""

    def __init__(self, model: Model, k0: int, local_sats: set[int]):
        super().__init__(model, k0)
        self.local_sats = local_sats

    def state(self, k: int, sats=None) -> D.SliceState:
        return super().state(k, sorted(self.local_sats))


class _Links:
    """Creating one host's side of links: veths when both ends are here, a VXLAN half when one is."""

    def __init__(self, m: Model, host_of: dict[str, int], h: int, vnis: underlay.VniMap):
        self.m, self.host_of, self.h, self.vnis = m, host_of, h, vnis
        self.vxlans = 0

    def here(self, node: str) -> bool:
        return self.host_of[node] == self.h

    def create(self, f: LocalFabric, veths: list[D.Veth]) -> set[str]:
        """Queue creation; returns the namespaces whose batches hold it."""
        touched = set()
        for v in veths:
            a, b = self.here(v.node_a), self.here(v.node_b)
            na, nb = self.m.by_name[v.node_a].netns, self.m.by_name[v.node_b].netns
            if a and b:
                f.nl[na].veth(v.ifname_a, v.ifname_b, f.fd[nb], index=v.index_a, peer_index=v.index_b, mac=v.mac_a,
                              peer_mac=v.mac_b, mtu=v.mtu, group=v.group)
                touched.add(na)
            elif a or b:
                end, ns = ("a", na) if a else ("b", nb)
                underlay.queue_vxlan(f.nl[f.underlay], underlay.half(v, end, self.host_of, self.vnis.of(v)), f.fd[ns])
                touched.add(f.underlay)
                self.vxlans += 1
        return touched


class PartBuilder(Builder):
    def __init__(self, model, run, features, links: _Links, underlay_name: str, progress=None):
        super().__init__(model, run, features, progress)
        self.links = links
        self.underlay_name = underlay_name

    def local_names(self) -> list[str]:
        return [n.netns for n in self.m.nodes if self.links.here(n.name)]

    def create_namespaces(self) -> None:
        names = self.local_names()
        taken = [n for n in names if netns.exists(n)]
        if taken:
            raise DataplaneError("create namespaces", taken[0], 17, f"{len(taken)} namespace(s) of this name exist "
                                 "already; not touching them")
        self.run.record_netns(names)  # before they exist: down can always find them
        for i in range(0, len(names), 200):
            netns.create_many(names[i:i + 200], SYSCTLS)
        self.fabric = LocalFabric(names, self.underlay_name)

    def _veths(self, veths: list[D.Veth]) -> None:
        self.links.create(self.fabric, veths)
        self.fabric.flush([self.underlay_name])

    def nat_operators(self) -> list[tuple]:
        return [o for o in self.m.db.operators if self.links.here(o[1])]

    def servers(self) -> None:
        if self.links.here(self.m.cfg.inet_name):
            super().servers()


class PartApplier(SliceApplier):
    def __init__(self, model, fabric: LocalFabric, links: _Links):
        super().__init__(model, fabric)
        self.links = links
        self.local_sats = {s.index for s in model.satellites if links.here(s.name)}

    @property
    def _sat_names(self) -> list[str]:
        return [self.m.satellites[s].netns for s in sorted(self.local_sats)]

    def new_desired(self, k0: int) -> Desired:
        return PartDesired(self.m, k0, self.local_sats)

    def _create(self, links: list[D.Veth]) -> None:
        """The single-host creation, with this host's VXLAN halves for links that cross hosts."""
        mine = [v for v in links if self.links.here(v.node_a) or self.links.here(v.node_b)]
        if not mine:
            return
        self.f.flush(self.links.create(self.f, mine))
        self._up_and_address(mine)

    def _up_and_address(self, links: list[D.Veth]) -> None:
        from emu.dataplane.tc import LinkShape, queue_shapes

        f = self.f
        touched, shapes = set(), []
        for v in links:
            for node, idx, ll in ((v.node_a, v.index_a, v.ll_a), (v.node_b, v.index_b, v.ll_b)):
                if not self.links.here(node):
                    continue
                ns = self.ns(node)
                f.nl[ns].link_set(idx, up=True)
                if ll:
                    f.nl[ns].addr("add", idx, ll, 64)
                if v.rate_bps:
                    shapes.append(LinkShape(ns, idx, v.rate_bps, v.delay_us))
                touched.add(ns)
        f.flush(touched)
        if shapes and self.m.cfg.tbf:
            f.flush(queue_shapes(shapes, f.nl))

    def _retire(self, links: list[D.Veth]) -> None:
        """Delete by group in the namespace of the link's local end (a's when both are here: one veth end
        deletes both; a VXLAN half is deleted on each host by its own agent)."""
        gone: dict[int, set[int]] = defaultdict(set)
        owners: set[tuple[str, int]] = set()
        sat_index = {s.name: s.index for s in self.m.satellites}
        for v in links:
            here = [n for n in (v.node_a, v.node_b) if self.links.here(n)]
            if not here:
                continue
            owners.add((self.ns(here[0]), v.group))
            for node, idx in ((v.node_a, v.index_a), (v.node_b, v.index_b)):
                if node in sat_index and self.links.here(node):
                    gone[sat_index[node]].add(idx)
        for ns, group in owners:
            self.f.nl[ns].link_del_group(group)
        # ENODEV: a ground node's VXLAN-half delete took a local veth of the same group with it (its peer)
        self.f.flush({ns for ns, _g in owners}, ok={19})
        self._forget_routes_via(gone)


class HostAgent:
    """Host h of a run: builds its partition, then prepares / switches / cleans up slices when told.

    Plain Python; :mod:`emu.multihost.engine` runs one per Ray node. ``host_root`` holds the host's journal.
    """

    def __init__(self, h: int, n_hosts: int, plan_path: str, prefix: str, host_root: str, n_slices: int | None,
                 start_slice: int, trust: tuple[str, ...] = ()):
        from emu.dataplane.controller import check_plan
        from emu.dataplane.features import detect

        self.h, self.n_hosts = h, n_hosts
        self.features = detect()
        db = check_plan(Path(plan_path), trust)
        cfg = RunConfig.from_scenario(scenario_of_plan(db), self.features)
        self.model = Model.from_plan(db, prefix, None if n_slices is None else start_slice + n_slices, cfg)
        self.k0 = start_slice
        self.part = partition(self.model, n_hosts)
        root = Path(host_root)
        root.mkdir(parents=True, exist_ok=True)
        self.run = Run(f"h{h}", root)
        self.run.dir.mkdir(exist_ok=True)
        (self.run.dir / "journal").touch()
        self.links = _Links(self.model, self.part.host_of, h, underlay.VniMap(self.model))
        self.underlay = underlay.underlay_ns(prefix, h)
        self.builder: PartBuilder | None = None
        self.applier: PartApplier | None = None

    def info(self) -> dict:
        import os
        import socket

        return {"host": self.h, "pid": os.getpid(), "hostname": socket.gethostname(),
                "nodes": len(self.builder.local_names()) if self.builder else None}

    def build(self) -> dict:
        t0 = time.perf_counter()
        b = self.builder = PartBuilder(self.model, self.run, self.features, self.links, self.underlay)
        b.create_namespaces()
        t_ns = time.perf_counter() - t0
        b.create_links(self.k0)
        a = self.applier = PartApplier(self.model, b.fabric, self.links)
        a.initial(self.k0)
        b.nat()  # as a single-host build (Controller.build), written directly: no recorder here (threads: no fork)
        b.servers()
        return {"host": self.h, "build_s": round(time.perf_counter() - t0, 3), "namespaces_s": round(t_ns, 3),
                "namespaces": len(b.local_names()), "vxlan": self.links.vxlans,
                "degradations": b.degradations}

    def warm(self, until: int) -> float:
        """Before the shared clock starts: slice k0's routes into the next two tables (SliceApplier.warm)."""
        return self.applier.warm(until)

    def prepare(self, k: int, at: float | None = None) -> float:
        """Slice k, armed for wall time ``at`` (the shared slice clock): the satellites switch then by themselves."""
        return self.applier.prepare(k, at_ns=None if at is None else round(at * 1e9))

    def switch_at(self, k: int, at: float) -> dict:
        """Wait for wall time ``at`` (the shared slice clock), then apply boundary k and clean up after it."""
        left = at - time.time()
        if left > 0:
            time.sleep(left)
        started = time.time()
        apply_ms = self.applier.switch(k)
        t1 = time.perf_counter()
        self.applier.cleanup(k)
        return {"host": self.h, "slice": k, "started_at": started, "late_ms": round((started - at) * 1e3, 3),
                "apply_ms": round(apply_ms, 3), "cleanup_ms": round((time.perf_counter() - t1) * 1e3, 3),
                "vxlan": self.links.vxlans}

    def close(self) -> None:
        if self.builder and self.builder.fabric:
            self.builder.fabric.close()
