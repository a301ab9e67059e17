"""``steerplug doctor``: checks, in seconds, that steering is exact on the installed stack."""

from steerplug.doctor.checks import MODES, Outcome, run_checks
from steerplug.doctor.report import problems, table, versions

__all__ = ["MODES", "Outcome", "problems", "run_checks", "table", "versions"]
