"""The report's theory numbers: the calibration headline that opens
REPORT.md, and the width threshold m*(n) beside the theory's widths.

Both read the (T, T_pred) pairs of the runs (claims/threshold.py), so the
sentence at the top is computed from the same records the claims judge.
"""

import os

from tff_localsgd import suite
from tff_localsgd.analysis import calibration
from tff_localsgd.analysis import calibration_figures
from tff_localsgd.analysis import theory_widths
from tff_localsgd.analysis import width_threshold
from tff_localsgd.analysis.claims import threshold

# The headline counts runs at least this wide: the widths at which the
# committed quick run at a9caff7 first gave T/T_pred within 10% for every n.
HEADLINE_MIN_WIDTH = 1024
CALIBRATION_FIGURE = 'calibration.png'
SETTING = ('synthetic teacher data, d = 16, 4 clients, K = 5 Local GD, '
           'eta = 8/m, hidden layer trained')


NO_RUNS = 'No synthetic Local GD run to calibrate the prediction on.'


def headline(runs) -> str:
  """The calibration sentence that opens the report."""
  pairs, _ = threshold.calibrated_pairs(runs)
  if not pairs:
    return NO_RUNS
  return calibration.headline(
      calibration.calibration(pairs, HEADLINE_MIN_WIDTH))


def calibration_lines(runs, out_dir) -> tuple:
  """(Markdown lines, [figure file]) of the calibration over every
  synthetic Local GD run: the headline, the table by width, the figure."""
  pairs, trials = threshold.calibrated_pairs(runs)
  if not pairs:
    return [NO_RUNS], []
  caption = calibration_figures.plot_calibration(
      pairs, os.path.join(out_dir, CALIBRATION_FIGURE))
  lines = ['**' + headline(runs) + '**', '']
  if trials.verdict:
    lines += [f'Trials without a record to pair: {trials.describe()}.', '']
  lines += [f'![{CALIBRATION_FIGURE}]({CALIBRATION_FIGURE})', '',
            f'*{caption}*', '',
            'The error |log(T/T_pred)| by width, over every synthetic Local '
            'GD run (E1 lazy, E2-E6 but Local SGD and minibatch SGD):', '',
            calibration.width_markdown(calibration.width_table(pairs)), '']
  return lines, [CALIBRATION_FIGURE]


def threshold_lines(runs, out_dir) -> tuple:
  """(Markdown lines, [figure file]) of m*(n) over E3's grid: the heat map
  of e(n, m) with the threshold, and b beside the theory's exponents."""
  claim = threshold.C14()
  pairs = [p for p in map(threshold.pair, runs)
           if p is not None and p.study == suite.GRID and p.group == 'grid']
  if not pairs:
    return [], []
  _, fit, surface, _ = claim.judge(pairs)
  grid = width_threshold.error_grid(pairs)
  caption = calibration_figures.plot_error_heatmap(
      grid, width_threshold.threshold(grid, claim.LEVEL),
      os.path.join(out_dir, claim.figure))
  return (['## The width threshold m*(n)', '',
           f'![{claim.figure}]({claim.figure})', '', f'*{caption}*', '',
           theory_widths.comparison_table(fit, surface, SETTING), ''],
          [claim.figure])
