"""Writes a suite's report: REPORT.md, its figures and results.json
(analysis/report.py, no TensorFlow), then the report's summaries in
TensorBoard (board.py) when TensorFlow imports, so the report is rebuilt on
a machine without it:

    results = reporting.write_report(out)
"""

import os
import sys

from tff_localsgd.analysis import figures
from tff_localsgd.analysis import report

BOARD_SKIPPED = ('TensorBoard summaries of the report not written: '
                 'TensorFlow is not installed')


def write_report(out: str) -> dict:
  """Generates the report of the suite directory `out`; returns its
  results (results.json)."""
  results = report.generate(out)
  try:
    from tff_localsgd import board  # pylint: disable=g-import-not-at-top
  except ImportError:  # the report's own files are written: say what is not
    print(BOARD_SKIPPED, file=sys.stderr)
    return results
  board.write_report_summaries(
      out, report.claims_table(results),
      [os.path.join(out, name) for name in results['figures']],
      figures.CAPTIONS)
  return results
