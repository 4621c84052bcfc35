"""Reports of a run: the JSON record, a Markdown summary, a self-contained HTML page, JUnit properties,
a terminal matrix, and the difference between two runs.

Every renderer takes a :class:`~parity.report.run.Run` (the JSON report's records and its run
file), so the pytest plugin and ``parity report`` (re-rendering a saved run) produce the same
pages. Nothing here imports a framework or pytest.
"""

from parity.report.run import Run, load, run_path, save, target_id

__all__ = ["Run", "load", "run_path", "save", "target_id"]
