"""Experiment files (``experiments/*.yaml``): their schema, validated strictly and against a plan.

spec: inter-sno-mobility-framework §5.1 (baseline procedure), §5.2 (proactive
procedure, Figure 5), §4.3 (association). An experiment names the traffic to
send (a probe stream of at most 10 ms spacing between two nodes), the events
to cause (forced handovers, ground-station outages, core restarts, at a time
or at a slice), what to measure, the handover procedure and the association
policy, and how often to repeat it.

Loading is pure: :func:`parse_experiment` checks the file's own structure
(unknown keys, wrong types, out-of-range values, unknown event kinds);
:func:`check_against` then checks every node name, time and slice against a
:class:`NodeCatalog` built from a plan (or a scenario). Every problem is one
:class:`ExperimentError` naming the field's dotted path and the value (exit
code 2 at the CLI). Nothing is started here: the runner is a separate stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from emu.errors import InputError
from emu.scenario.load import read_yaml

NodeName = Annotated[str, Field(min_length=1, max_length=64)]
MAX_INTERVAL_MS = 10.0  # the probe spacing: a 10 ms gap bounds the measured interruption's error


class ExperimentError(InputError):
    """An experiment file is invalid: ``field`` a dotted path, ``value`` the offending value (exit 2)."""

    def __init__(self, message: str, field: str, value: object = None):
        self.field = field
        self.value = value
        super().__init__(f"{field}: {message} (got {value!r})")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Probe(Strict):
    """One probe stream: sequence-numbered UDP datagrams (``udp``, the default) or ICMP echo requests
    (``icmp``; ``ping`` is the same), every ``interval_ms``."""

    probe: Literal["udp", "icmp", "ping"] = "udp"
    src: NodeName
    dst: NodeName
    interval_ms: Annotated[float, Field(gt=0.0, le=MAX_INTERVAL_MS)] = 10.0
    size_bytes: Annotated[int, Field(ge=16, le=1400)] = 64
    port: Annotated[int, Field(ge=1, le=65535)] | None = None  # udp only; the runner picks one if absent


class At(Strict):
    """When an event happens: exactly one of ``time_s`` (from the experiment's start) or ``slice`` (its start)."""

    time_s: Annotated[float, Field(ge=0.0)] | None = None
    slice: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "At":
        if (self.time_s is None) == (self.slice is None):
            raise ValueError("give exactly one of time_s or slice")
        return self


class ForcedHandover(At):
    """Move a user terminal to another core now: ``to_core``, or the core ``to_sat`` is associated with, or
    (neither) the next core the plan would give it (:mod:`emu.experiment.events`)."""

    kind: Literal["forced_handover"]
    ut: NodeName
    to_sat: NodeName | None = None
    to_core: NodeName | None = None

    @model_validator(mode="after")
    def _one_target(self) -> "ForcedHandover":
        if self.to_sat is not None and self.to_core is not None:
            raise ValueError("give at most one of to_sat or to_core")
        return self


class GsOutage(At):
    """A ground station goes dark for ``duration_s`` (its users re-home through another GS or wait)."""

    kind: Literal["gs_outage"]
    gs: NodeName
    duration_s: Annotated[float, Field(gt=0.0, le=86400.0)]


class CoreRestart(At):
    """An operator's core daemon is killed and restarted by its supervisor."""

    kind: Literal["core_restart"]
    core: NodeName


Event = Annotated[Union[ForcedHandover, GsOutage, CoreRestart], Field(discriminator="kind")]
EVENT_KINDS = ("forced_handover", "gs_outage", "core_restart")
MEASUREMENTS = ("interruption", "loss", "registration_steps", "rtt", "handovers_per_user_hour")


class Experiment(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    description: str = ""
    scenario: str | None = None  # a scenario file, relative to the experiment file (the runner plans it)
    procedure: Literal["baseline", "proactive"] = "baseline"
    association: Literal["owner", "dynamic"] = "owner"
    repeats: Annotated[int, Field(ge=1, le=1000)] = 1
    start_slice: Annotated[int, Field(ge=0)] = 0
    duration_s: Annotated[float, Field(gt=0.0, le=86400.0)]
    speed: Annotated[float, Field(gt=0.0, le=1000.0)] = 1.0
    traffic: Annotated[list[Probe], Field(min_length=1, max_length=64)]
    events: list[Event] = Field(default_factory=list)
    measurements: Annotated[list[Literal[MEASUREMENTS]],  # type: ignore[valid-type]
                            Field(min_length=1)] = ["interruption", "loss"]
    output: str | None = None  # results folder, relative to the experiment file

    @model_validator(mode="after")
    def _unique_measurements(self) -> "Experiment":
        if len(set(self.measurements)) != len(self.measurements):
            raise ValueError("measurements: listed twice")
        return self


@dataclass(frozen=True)
class NodeCatalog:
    """The names an experiment may use, by kind, and the plan's time span."""

    satellites: frozenset[str]
    ground_stations: frozenset[str]
    user_terminals: frozenset[str]
    devices: frozenset[str]
    cores: frozenset[str]
    internet: str
    n_slices: int
    slice_s: float

    @property
    def endpoints(self) -> frozenset[str]:
        """Nodes that can send or receive a probe stream."""
        return self.devices | self.user_terminals | {self.internet}

    @classmethod
    def from_plan(cls, db) -> "NodeCatalog":
        """From an open :class:`emu.plan.db.PlanDB` (its stored scenario gives the Internet's name)."""
        stored = yaml.safe_load(db.meta["scenario_yaml"]) or {}
        inet = (stored.get("internet") or {}).get("name", "inet")
        g = db.ground
        return cls(frozenset(db.sat_names), frozenset(x.name for x in g if x.kind == "gs"),
                   frozenset(x.name for x in g if x.kind == "ut"), frozenset(x.device for x in g if x.device),
                   frozenset(o[1] for o in db.operators), inet, db.n_slices, db.slice_s)


def parse_experiment(data: object) -> Experiment:
    """Validate an experiment document's structure; raises :class:`ExperimentError` naming the first problem."""
    if not isinstance(data, dict):
        raise ExperimentError("an experiment must be a mapping", "(top)", type(data).__name__)
    try:
        return Experiment.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [x for x in err["loc"] if not (isinstance(x, str) and x in EVENT_KINDS)]
        field = ".".join(str(x) for x in loc) or "(top)"
        msg, value = err["msg"], err.get("input")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg, value = "required", None
        elif err["type"] == "union_tag_invalid":
            field, msg = field + ".kind", f"unknown event (one of {', '.join(EVENT_KINDS)})"
            value = value.get("kind") if isinstance(value, dict) else value
        elif err["type"] == "union_tag_not_found":
            field, msg, value = field + ".kind", f"missing (one of {', '.join(EVENT_KINDS)})", None
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if isinstance(value, dict):
            value = "{…}"
        raise ExperimentError(msg, field, value) from None


def check_against(exp: Experiment, nodes: NodeCatalog) -> None:
    """Every node, time and slice of ``exp`` must exist in the plan; raises :class:`ExperimentError`."""
    def need(name: str | None, pool: frozenset[str], field: str, what: str) -> None:
        if name is not None and name not in pool:
            raise ExperimentError(f"unknown {what}", field, name)

    for i, t in enumerate(exp.traffic):
        need(t.src, nodes.endpoints, f"traffic.{i}.src", "node (a user device, user terminal or the Internet)")
        need(t.dst, nodes.endpoints, f"traffic.{i}.dst", "node (a user device, user terminal or the Internet)")
        if t.src == t.dst:
            raise ExperimentError("source and destination are the same node", f"traffic.{i}.dst", t.dst)
        if t.probe != "udp" and t.port is not None:
            raise ExperimentError(f"{t.probe} has no port", f"traffic.{i}.port", t.port)
    if exp.start_slice >= nodes.n_slices:
        raise ExperimentError(f"the plan has slices 0..{nodes.n_slices - 1}", "start_slice", exp.start_slice)
    end_slice = exp.start_slice + exp.duration_s / nodes.slice_s
    for i, ev in enumerate(exp.events):
        if isinstance(ev, ForcedHandover):
            need(ev.ut, nodes.user_terminals, f"events.{i}.ut", "user terminal")
            need(ev.to_sat, nodes.satellites, f"events.{i}.to_sat", "satellite")
            need(ev.to_core, nodes.cores, f"events.{i}.to_core", "core (operator)")
        elif isinstance(ev, GsOutage):
            need(ev.gs, nodes.ground_stations, f"events.{i}.gs", "ground station")
        else:
            need(ev.core, nodes.cores, f"events.{i}.core", "core (operator)")
        if ev.time_s is not None and ev.time_s >= exp.duration_s:
            raise ExperimentError(f"after the experiment's end ({exp.duration_s:g} s)", f"events.{i}.time_s", ev.time_s)
        if ev.slice is not None and not exp.start_slice <= ev.slice < end_slice:
            raise ExperimentError(f"outside the experiment's slices {exp.start_slice}..{int(end_slice - 1e-9)}",
                                  f"events.{i}.slice", ev.slice)
    if end_slice > nodes.n_slices:
        raise ExperimentError(f"runs past the plan's last slice ({nodes.n_slices} slices of {nodes.slice_s:g} s)",
                              "duration_s", exp.duration_s)


def load_experiment(path: str | Path, nodes: NodeCatalog | None = None) -> Experiment:
    """Read, validate and (with ``nodes``) check an experiment file."""
    # the scenario's bounds (size, UTF-8, depth, aliases, duplicate keys), not an unbounded yaml.safe_load
    _raw, data = read_yaml(Path(path), "file", "experiment", ExperimentError)
    exp = parse_experiment(data)
    if nodes is not None:
        check_against(exp, nodes)
    return exp
