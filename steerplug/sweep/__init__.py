"""Positions × layer × strength sweeps: concept effect (the bundle's concept probe, or a scorer plugin)
against fluency cost (perplexity, KL).

See :func:`sweep`, :func:`record_recommendation` and ``steerplug sweep --help``.
"""

from steerplug.sweep.criteria import Criteria, Diagnosis, diagnose, recommend
from steerplug.sweep.evidence import ProbeEvidence, concept_evidence
from steerplug.sweep.grid import POSITIONS, Cell, SweepResult, sweep
from steerplug.sweep.lookup import get_scorer, list_scorers
from steerplug.sweep.measure import GenerationSettings, Measured, generate_and_measure
from steerplug.sweep.report import record_recommendation, summary, write_tables
from steerplug.sweep.scorers import Scorer

__all__ = ["POSITIONS", "Cell", "Criteria", "Diagnosis", "GenerationSettings", "Measured", "ProbeEvidence", "Scorer",
           "SweepResult", "concept_evidence", "diagnose", "generate_and_measure", "get_scorer", "list_scorers",
           "recommend", "record_recommendation", "summary", "sweep", "write_tables"]
