"""Scripted experiments (spec: inter-sno-mobility-framework §5): experiment files and their checks.

>>> from emu.experiment import load_experiment, NodeCatalog
>>> from emu.plan.db import PlanDB
>>> exp = load_experiment("experiments/handover-basic.yaml", NodeCatalog.from_plan(PlanDB("default.db")))

The runner (probes in the live emulator, results as CSV/JSON/PNG) is a later stage.
"""

from emu.experiment.spec import (EVENT_KINDS, MEASUREMENTS, CoreRestart, Experiment, ExperimentError, ForcedHandover,
                                 GsOutage, NodeCatalog, Probe, check_against, load_experiment, parse_experiment)

__all__ = ["EVENT_KINDS", "MEASUREMENTS", "CoreRestart", "Experiment", "ExperimentError", "ForcedHandover",
           "GsOutage", "NodeCatalog", "Probe", "check_against", "load_experiment", "parse_experiment"]
