"""Benchmark suites: named lists of harness runs, run resumably, one fresh process each.

:func:`load_suite` reads and validates a suite (``esam/configs/suites/<name>.yaml`` or a YAML
file); :func:`run_suite` runs it into a results folder that the report layer renders. See
docs/suites.md.
"""

from esam.suite.runner import SuiteResult, run_suite
from esam.suite.spec import Suite, SuiteError, load_suite, suite_names

__all__ = ["Suite", "SuiteError", "SuiteResult", "load_suite", "run_suite", "suite_names"]
