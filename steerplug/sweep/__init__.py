"""Layer × strength sweeps: concept effect (a scorer plugin) against fluency cost (perplexity, KL).

See :func:`sweep`, :func:`record_recommendation` and ``steerplug sweep --help``.
"""

from steerplug.sweep.grid import Cell, Criteria, SweepResult, sweep
from steerplug.sweep.measure import GenerationSettings, Measured, generate_and_measure
from steerplug.sweep.report import record_recommendation, summary, write_tables
from steerplug.sweep.scorers import Scorer, get_scorer

__all__ = ["Cell", "Criteria", "GenerationSettings", "Measured", "Scorer", "SweepResult", "generate_and_measure",
           "get_scorer", "record_recommendation", "summary", "sweep", "write_tables"]
