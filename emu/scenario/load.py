"""Load and validate a scenario file.

Every problem becomes a :class:`ScenarioError` naming the field's dotted path
and the offending value (exit code 2 at the CLI); nothing else is done.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from emu.errors import ScenarioError
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


def load_scenario(path: str | Path) -> LoadedScenario:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario file: {exc.strerror}", "file", str(p)) from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ScenarioError(f"not valid YAML{where}", "file", str(p)) from None
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
        raise ScenarioError(msg, loc or "(top)", value) from None


def _is_union_tag(x: object) -> bool:
    # pydantic puts the union member's type name in the location path
    return isinstance(x, str) and (x.startswith("constrained-") or x in {"float", "int", "str", "list[int]", "literal['all','even','odd']", "literal['one_orbit']"} or x.startswith("list[") or x.startswith("literal["))


def _check_files_and_codes(loaded: LoadedScenario) -> None:
    sc = loaded.scenario
    for i, shell in enumerate(sc.shells):
        if shell.tle_file is not None and not loaded.resolve(shell.tle_file).is_file():
            raise ScenarioError("TLE file not found", f"shells.{i}.tle_file", shell.tle_file)
    from emu.addressing import grc

    for i in range(len(sc.shells)):
        try:
            grc.shell_code(i, sc.grc.shell_codes)
        except Exception as exc:  # AddressingError: forbidden or missing code
            raise ScenarioError(str(exc), f"grc.shell_codes.{i}", (sc.grc.shell_codes or [None] * (i + 1))[i]) from None
