"""Load and validate a scenario file.

Every problem becomes a :class:`ScenarioError` naming the field's dotted path
and the offending value (exit code 2 at the CLI); nothing else is done.

A scenario may come from anyone, so the file is bounded before it is parsed:
at most :data:`MAX_SCENARIO_BYTES`, UTF-8, YAML nested at most
:data:`MAX_DEPTH` deep (aliases included) and at most :data:`MAX_NODES` values
once aliases are expanded (an alias bomb is refused after composing, before
anything walks it), and no key given twice in one mapping.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from emu.errors import InputError, ScenarioError, cut, echo
from emu.scenario.model import Scenario


@dataclass(frozen=True)
class LoadedScenario:
    """A validated scenario and where it came from."""

    scenario: Scenario
    path: Path
    digest: str  # sha256 of the file's bytes
    raw: bytes = b""  # the file's bytes, stored in the plan as they are

    def resolve(self, relative: str) -> Path:
        """A path named in the scenario, relative to the scenario file's folder."""
        p = Path(relative)
        return p if p.is_absolute() else (self.path.parent / p)


MAX_SCENARIO_BYTES = 2 * 1024 * 1024  # the 100-city Starlink scenario is 21 kB
MAX_DEPTH = 24
MAX_NODES = 200_000


class _Refused(yaml.YAMLError):
    def __init__(self, problem: str, mark=None):
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


_FAST = getattr(yaml, "CSafeLoader", None)  # libyaml: ten times faster than the pure-Python parser


class _BoundedLoader(_FAST or yaml.SafeLoader):  # type: ignore[misc]
    """Safe loading with bounds, in three steps so no step can run away (see :func:`parse_yaml`):
    the event stream (flat, libyaml's own heap stack) is checked for depth first; the document is
    composed (recursion now bounded by MAX_DEPTH) and its alias expansion measured; then it is
    constructed, refusing a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
                if key is not None and key in seen:
                    raise _Refused(f"duplicate key {echo(key)}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_events(text: str) -> None:
    """Nesting depth from the event stream, before anything is composed recursively."""
    loader = (_FAST or yaml.SafeLoader)(text)
    depth = 0
    try:
        while loader.check_event():
            ev = loader.get_event()
            if isinstance(ev, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _Refused(f"nested deeper than {MAX_DEPTH} levels", ev.start_mark)
            elif isinstance(ev, yaml.CollectionEndEvent):
                depth -= 1
    finally:
        loader.dispose()


def _check_expanded(root) -> None:
    """Size and depth of the document with every alias expanded, computed over the shared node graph
    (linear in the file, whatever the aliases multiply to); refuses cycles too."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack = [(root, False)]
    active: set[int] = set()
    while stack:
        node, done = stack.pop()
        nid = id(node)
        kids = _children(node)
        if done:
            active.discard(nid)
            size[nid] = 1 + sum(size[id(k)] for k in kids)
            depth[nid] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[nid] > MAX_NODES:
                raise _Refused(f"more than {MAX_NODES} values once aliases are expanded (an alias bomb?)",
                               node.start_mark)
            if depth[nid] > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels once aliases are expanded", node.start_mark)
            continue
        if nid in size:
            continue
        if nid in active:
            raise _Refused("an alias refers to a node that contains it", node.start_mark)
        active.add(nid)
        stack.append((node, True))
        stack.extend((k, False) for k in kids if id(k) not in size)


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    return []


def read_capped(p: Path, limit: int, what: str, field: str = "file",
                error: type[InputError] = ScenarioError) -> bytes:
    """At most ``limit`` bytes of file ``p``: unreadable or larger is ``error`` naming ``field`` and the path."""
    try:
        with open(p, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as exc:
        raise error(f"cannot read {what} file: {exc.strerror}", field, str(p)) from None
    if len(raw) > limit:
        raise error(f"{what} file larger than {limit // 2**20} MiB", field, str(p))
    return raw


def read_yaml(p: Path, field: str = "file", what: str = "scenario", error: type[InputError] = ScenarioError):
    """Bounded read and parse of a YAML file (size, encoding, depth, aliases, duplicate keys).

    ``what`` names the file in messages and ``error`` is the class raised (an experiment file is
    read with the same bounds, :func:`emu.experiment.spec.load_experiment`)."""
    raw = read_capped(p, MAX_SCENARIO_BYTES, what, field, error)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        hint = "; UTF-16/32 is not supported, save it as UTF-8" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise error(f"not UTF-8 text (byte {exc.start}){hint}", field, str(p)) from None
    return raw, parse_yaml(text, field, str(p), error)


def parse_yaml(text: str, field: str = "file", source: str = "",
               error: type[InputError] = ScenarioError) -> object:
    """Parse YAML text with the bounds of :class:`_BoundedLoader`; any problem is a ScenarioError (or ``error``)."""
    try:
        _check_events(text)
        loader = _BoundedLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_expanded(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None)
        what = f": {cut(str(problem), 120)}" if problem else ""
        where = f" at line {mark.line + 1}" if mark else ""
        raise error(f"not valid YAML{what}{where}", field, source) from None
    except RecursionError:  # pragma: no cover - MAX_DEPTH keeps the composer far from Python's limit
        raise error(f"nested deeper than {MAX_DEPTH} levels", field, source) from None


def load_scenario(path: str | Path) -> LoadedScenario:
    p = Path(path)
    raw, data = read_yaml(p)
    scenario = parse_scenario(data)
    loaded = LoadedScenario(scenario, p.resolve(), hashlib.sha256(raw).hexdigest(), raw)
    _check_files_and_codes(loaded)
    return loaded


def parse_scenario(data: object) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError("a scenario must be a mapping", "(top)", type(data).__name__)
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"] if not _is_union_tag(x))
        msg = err["msg"]
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            text = msg[len("Value error, "):]
            # model validators report their own 'field: message (got value)'
            if ": " in text and " (got " in text:
                raise ScenarioError(text) from None
            msg = text
        if isinstance(value, dict):
            value = "{…}"
        raise ScenarioError(cut(msg, 160), loc or "(top)", value) from None


def _is_union_tag(x: object) -> bool:
    # pydantic puts the union member's type name in the location path
    return isinstance(x, str) and (x.startswith("constrained-") or x in {"float", "int", "str", "list[int]", "literal['all','even','odd']", "literal['one_orbit']"} or x.startswith("list[") or x.startswith("literal["))


def _check_files_and_codes(loaded: LoadedScenario) -> None:
    """What the model cannot check alone: TLE files (read and indexed as the orbit stage will)."""
    from emu.orbit.elements import tle_satrecs

    for i, shell in enumerate(loaded.scenario.shells):
        if shell.tle_file is not None:
            path = loaded.resolve(shell.tle_file)
            if not path.is_file():
                raise ScenarioError("TLE file not found", f"shells.{i}.tle_file", shell.tle_file)
            tle_satrecs(shell, path, i)
