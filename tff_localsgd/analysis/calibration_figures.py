"""The calibration figures: measured against predicted rounds to eps over
every run, and the heat map of e(n, m) with the width threshold m*(n).

Each function writes one PNG (atomically) and returns its caption, which
names every run or cell it could not draw. Matplotlib's Agg backend, as in
figures.py; this module does not import figures.py, which reaches
TensorFlow through claims -> suite -> sweep.
"""

import math

import matplotlib

matplotlib.use('Agg')
import matplotlib.colors  # noqa: E402  (after choosing the backend)
import matplotlib.lines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from tff_localsgd import files  # noqa: E402
from tff_localsgd.analysis import width_threshold  # noqa: E402

BAND = 1.15  # the band T_pred / 1.15 <= T <= 1.15 T_pred: within 15%
MARKERS = ('o', 's', '^', 'D', 'v', 'P', 'X', '<', 'h')  # one per width


def _write(fig, path):
  fig.tight_layout()
  files.atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=110))
  plt.close(fig)


def _undrawn(pairs):
  """'Not drawn: plateau: a, b; ...' for runs without T or T_pred."""
  reasons = {}
  for p in pairs:
    reason = 'no prediction' if p.predicted is None else p.status
    reasons.setdefault(reason, []).append(p.label)
  if not reasons:
    return ''
  return ' Not drawn (no T or no T_pred): ' + '; '.join(
      f'{reason}: {", ".join(labels)}' for reason, labels in reasons.items()
  ) + '.'


def _legend(ax, studies, widths):
  """Colour by study, marker by width, hollow for censored: one legend."""
  handles = [matplotlib.lines.Line2D([], [], color=colour, marker='o', ls='',
                                     label=study)
             for study, colour in studies.items()]
  handles += [matplotlib.lines.Line2D([], [], color='k', marker=marker,
                                      ls='', label=f'm = {m}')
              for m, marker in widths.items()]
  handles.append(matplotlib.lines.Line2D(
      [], [], color='k', marker='o', mfc='none', ls='',
      label='censored (at its projection)'))
  ax.legend(handles=handles + ax.get_legend_handles_labels()[0], fontsize=6,
            loc='upper left')


def plot_calibration(pairs, path) -> str:
  """Measured T against T_pred (log-log), y = x and the +-15% band; returns
  the caption."""
  pairs = tuple(pairs)
  drawn = [p for p in pairs if p.rounds is not None and p.predicted]
  fig, ax = plt.subplots(figsize=(5.6, 4.8))
  studies = {s: plt.cm.tab10(i % 10)
             for i, s in enumerate(sorted({p.study for p in drawn}))}
  widths = {m: MARKERS[i % len(MARKERS)]
            for i, m in enumerate(sorted({p.m for p in drawn}))}
  for p in drawn:
    colour = studies[p.study]
    ax.scatter(p.predicted, p.rounds, s=26, marker=widths[p.m],
               edgecolors=colour, linewidths=1.1,
               facecolors='none' if p.status == 'censored' else colour)
  if drawn:
    values = [v for p in drawn for v in (p.rounds, p.predicted)]
    line = np.geomspace(min(values) / 1.3, max(values) * 1.3, 50)
    ax.fill_between(line, line / BAND, line * BAND, color='grey', alpha=0.25,
                    lw=0, label=f'within {100 * (BAND - 1):.0f}%')
    ax.plot(line, line, 'k-', lw=1, label='y = x')
    ax.set_xscale('log')
    ax.set_yscale('log')
    for axis in (ax.xaxis, ax.yaxis):  # ticked 1, 2, 5 per decade, plainly
      axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
      axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter('%g'))
      axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    _legend(ax, studies, widths)
  else:
    ax.text(0.5, 0.5, 'no run with T and T_pred', ha='center',
            transform=ax.transAxes)
  ax.set_xlabel('predicted rounds to eps, T_pred (linearized, from H0)')
  ax.set_ylabel('measured rounds to eps, T')
  _write(fig, path)
  censored = sum(p.status == 'censored' for p in drawn)
  return (f'Measured rounds to eps T against the prediction T_pred '
          f'(log-log), one point per run ({len(drawn)} runs): colour by '
          f'study, marker by width m; hollow: censored, drawn at its '
          f'projected round ({censored} runs). Black line: y = x; grey band: '
          f'within {100 * (BAND - 1):.0f}% either way (T_pred/{BAND:g} <= T '
          f'<= {BAND:g} T_pred).' +
          _undrawn([p for p in pairs if p not in drawn]))


def _cell_text(ax, grid, ns, widths, norm):
  """The value of every cell printed on it ('inf': failed; '-': no run)."""
  by_key = {(c.n, c.m): c.e for c in grid.cells}
  for i, n in enumerate(ns):
    for j, m in enumerate(widths):
      e = by_key.get((n, m))
      text = '-' if e is None else 'inf' if math.isinf(e) else f'{e:.2g}'
      dark = e is not None and math.isfinite(e) and norm(max(e, norm.vmin)) < .5
      ax.text(j, i, text, ha='center', va='center', fontsize=7,
              color='w' if dark else 'k')


def _threshold_line(ax, thresholds, ns, widths):
  """m*(n) in cell coordinates; censored ones as open arrows at the edge."""
  log_widths = np.log(widths)
  found = [(np.interp(math.log(t.value), log_widths, np.arange(len(widths))),
            ns.index(t.n)) for t in thresholds if t.censoring == 'none']
  if found:
    ax.plot(*zip(*found), 'o-', color='red', lw=1.5, ms=5,
            label='m*(n), interpolated in log m')
  for side, x, marker in (('right', len(widths) - 0.5, '>'),
                          ('left', -0.5, '<')):
    rows = [ns.index(t.n) for t in thresholds if t.censoring == side]
    if rows:
      ax.plot([x] * len(rows), rows, marker, color='red', mfc='none', ms=9,
              mew=1.5, ls='', label=f'm*(n) {side}-censored')


def _censoring_text(thresholds):
  parts = []
  for side, arrow, where in (('right', '>', 'beyond the widest width'),
                             ('left', '<', 'at or below the narrowest')):
    ns = [str(t.n) for t in thresholds if t.censoring == side]
    if ns:
      parts.append(f'{arrow} at the {side} edge: m* {where} '
                   f'(n = {", ".join(ns)})')
  return ('; ' + '; '.join(parts)) if parts else ''


def plot_error_heatmap(grid, thresholds, path) -> str:
  """The heat map of e(n, m) with the m*(n) line; returns the caption."""
  ns, widths = list(grid.ns), list(grid.widths)
  matrix = np.full((len(ns), len(widths)), np.nan)
  for c in grid.cells:
    matrix[ns.index(c.n), widths.index(c.m)] = c.e
  shown = matrix[np.isfinite(matrix)]
  low = max(shown.min(), width_threshold.FLOOR) if shown.size else 0.01
  high = max(shown.max(), low * 10) if shown.size else 1.0
  norm = matplotlib.colors.LogNorm(vmin=low, vmax=high, clip=True)
  cmap = plt.get_cmap('viridis').with_extremes(bad='lightgrey')
  fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(widths),
                                  1.6 + 0.55 * len(ns)))
  image = ax.imshow(np.ma.masked_invalid(np.maximum(matrix, low)), cmap=cmap,
                    norm=norm, origin='lower', aspect='auto')
  _cell_text(ax, grid, ns, widths, norm)
  _threshold_line(ax, thresholds, ns, widths)
  ax.set_xticks(range(len(widths)), [str(m) for m in widths])
  ax.set_yticks(range(len(ns)), [str(n) for n in ns])
  ax.set_xlim(-0.6, len(widths) - 0.4)
  ax.set_xlabel('width m (log-spaced)')
  ax.set_ylabel('examples n (log-spaced)')
  statistic = width_threshold.STATISTICS[grid.statistic]
  fig.colorbar(image, ax=ax, label=f'e(n, m): median of {statistic}')
  if thresholds:
    ax.legend(fontsize=7, loc='upper center', bbox_to_anchor=(0.5, -0.2),
              ncol=3, frameon=False)
  _write(fig, path)
  level = thresholds[0].level if thresholds else math.nan
  censored_runs = ('; censored runs enter at their projected round'
                   if grid.statistic == 'rounds' else '')
  return (f'e(n, m), the median over seeds of {statistic}, printed in each '
          f'cell (grey "inf": the median run never reached eps; "-": no run'
          f'{censored_runs}), by examples n and width m. Red line: m*(n), '
          f'the smallest width with e <= {level:g}, interpolated in log m'
          f'{_censoring_text(thresholds)}.')
