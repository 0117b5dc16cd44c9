"""Scripted experiments (spec: inter-sno-mobility-framework §5): experiment files and their checks.

>>> from emu.experiment import load_experiment, NodeCatalog
>>> from emu.plan.db import PlanDB
>>> exp = load_experiment("experiments/handover-basic.yaml", NodeCatalog.from_plan(PlanDB("default.db")))

Live (root): measure inter-SNO handovers, or run a file (CSV + JSON + PNG into its output folder):

>>> from emu.experiment import measure_handovers, run_file
>>> r = measure_handovers("topologies/default.yaml", procedure="proactive", association="dynamic", repeat=3)
>>> r["median_interruption_ms"], r["handovers_measured"], r["handovers"][0]["steps"][:3]
>>> run_file("experiments/handover-live.yaml")["output"]
"""

from emu.experiment.handover import run as measure_handovers
from emu.experiment.runner import run_file

from emu.experiment.spec import (EVENT_KINDS, MEASUREMENTS, CoreRestart, Experiment, ExperimentError, ForcedHandover,
                                 GsOutage, NodeCatalog, Probe, check_against, load_experiment, parse_experiment)

__all__ = ["measure_handovers", "run_file", "EVENT_KINDS", "MEASUREMENTS", "CoreRestart", "Experiment", "ExperimentError", "ForcedHandover",
           "GsOutage", "NodeCatalog", "Probe", "check_against", "load_experiment", "parse_experiment"]
