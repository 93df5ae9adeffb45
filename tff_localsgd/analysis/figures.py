"""The report's figures: PNG files drawn from recorded runs (matplotlib, Agg).

Each figure stands on its own: labelled axes, loss as L_t / F_0 (so the
target eps F_0 is one horizontal line for every seed), the predicted curve
P_t / F_0 dashed beside the measured one, a marker at the end of every run
that did not reach the target saying why (censored, plateau, diverged),
the width by marker and colour, and a caption (CAPTIONS) under it in the
report.
"""

import math
import os
import re

import matplotlib
import matplotlib.ticker

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from tff_localsgd import suite
from tff_localsgd import config as config_lib  # noqa: E402
from tff_localsgd import files  # noqa: E402
from tff_localsgd.analysis.claims import base as claims_base  # noqa: E402
from tff_localsgd.analysis.claims import federated  # noqa: E402
from tff_localsgd.analysis.claims import lazy  # noqa: E402
from tff_localsgd import metrics  # noqa: E402
from tff_localsgd.analysis import runs as runs_lib  # noqa: E402

CAPTIONS = {
    'E1_loss.png': 'E1 (Local GD, lazy group): training loss over F_0 by '
    'round, one line per seed, width by colour and marker; dashed: the '
    'linearized prediction P_t of the same run; grey line: the target eps. '
    'End markers: > censored (still converging), x plateau, * diverged. '
    'Claims C1, C9.',
    'E3_gap.png': 'C12: the largest |log L_t - log P_t| up to the predicted '
    'round to eps, against width (log-log), over E3\'s n x m grid, one '
    'colour per n; line: the mean per-(n, seed) slope.',
    'E1_lazy.png': 'C3/C4/C13: final relative weight change, flip fraction '
    'and relative kernel change against width (log-log). Filled: the lazy group; hollow: the catapult '
    'control (client_lr 20). Lines: mean per-seed fits.',
    'E1_drift.png': 'C5: left, the largest effective smoothness smooth_eff '
    '(mean over local steps k >= 1) over its per-client linearized bound '
    'max_i eta lambda_max(H_ii)/n_i (the red line is 1, the dashed one the '
    'criterion\'s 1.1); right, the same maximum against width (log-log), '
    'with the mean per-seed fit.',
    'E2_local_steps.png': 'C6: efficiency K T(K)/T(1), the median over '
    'seeds (points, one colour per client step) and the prediction '
    '(dashed); 1 means local steps replace rounds one for one, above 2 '
    '(grey) they break down.',
    'E3_sample_size.png': 'C2: rounds to eps against n (log-log) at E3\'s '
    'wide width, per seed: filled, measured T; crosses, the prediction '
    'T_pred of the same run; hollow: a censored run at its projected round.',
    'E4_heterogeneity.png': 'E4 (C7, C16): training loss over F_0 by '
    'partition and step, one line per seed; dashed: the prediction; grey: '
    'the target.',
    'E5_algorithms.png': 'E5 (C8): training loss over F_0 against example '
    'gradients computed (equal computation), by algorithm; grey: the target.',
    'E6_depth.png': 'E6 (C10): training loss over F_0 by depth L at large '
    'width; dashed: the prediction; grey: the target.',
    'E7_real_data.png': 'E7 (C11, a demonstration outside the theory): '
    'cross-entropy training loss on digits, all layers trained.',
    'E8_digits_theory.png': 'E8 (C15): digits in the theory\'s setting (+-1 '
    'targets, unit-norm inputs, squared loss, hidden layer trained): '
    'training loss over F_0 by width; dashed: the prediction; grey: the '
    'target.',
}
MARKERS = ('o', 's', '^', 'D', 'v', 'P', 'X')
END_MARKERS = {'censored': '>', 'plateau': 'x', 'diverged': '*'}


def _save(fig, out_dir, name):
  fig.tight_layout()
  files.atomic_write(os.path.join(out_dir, name),
                     lambda f: fig.savefig(f, format='png', dpi=110))
  plt.close(fig)
  return name


def _natural(key):
  """Sort key reading digit runs as numbers: m=256 before m=1024."""
  return [int(part) if part.isdigit() else part
          for part in re.split(r'(\d+)', str(key))]


def _styles(keys):
  """{key: (colour, marker)} for sorted keys: two cues, not colour alone."""
  keys = sorted(set(keys), key=_natural)
  colours = plt.cm.viridis(np.linspace(0, 0.85, max(1, len(keys))))
  return {k: (c, MARKERS[i % len(MARKERS)])
          for i, (k, c) in enumerate(zip(keys, colours))}


def _curve(ax, run, style, label, x_scale=1.0):
  """One run's L_t / F_0 (solid), its P_t / F_0 (dashed), its end marker."""
  colour, marker = style
  rounds, losses = run.series(runs_lib.LOSS)
  zero = run.zero_loss or 1.0
  x = np.asarray(rounds, float) * x_scale
  y = np.asarray(losses, float) / zero
  ax.plot(x, y, color=colour, marker=marker, markevery=max(1, len(x) // 8),
          ms=4, lw=1.2, label=label)
  curve = claims_base.predicted_curve(run)
  if curve is not None:
    ax.plot(np.arange(len(curve)) * x_scale, curve / zero, '--',
            color=colour, lw=0.9)
  outcome = run.outcome()
  if outcome and outcome.status in END_MARKERS and len(x):
    last = y[np.isfinite(y)][-1] if np.isfinite(y).any() else 1.0
    ax.plot(x[-1], last, END_MARKERS[outcome.status], color='red', ms=9)


def _loss_axes(ax, runs, xlabel):
  normalized = all(r.zero_loss for r in runs)
  eps = {r.config.get('eps') for r in runs} - {None} if normalized else ()
  for e in eps:
    ax.axhline(e, color='grey', lw=1, ls='-', alpha=0.7, label=f'eps = {e:g}')
  if any(claims_base.predicted_curve(r) is not None for r in runs):
    ax.plot([], [], 'k--', lw=0.9, label='predicted (linearized)')
  ax.set_yscale('log')
  ax.set_xlabel(xlabel)
  ax.set_ylabel('train loss / F_0' if normalized else 'train loss')
  ax.legend(fontsize=7)


def loss_figure(runs, key, title, out_dir, name, x_scale=None):
  """Loss curves of runs grouped by key(run), one line per seed."""
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  styles = _styles(key(r) for r in runs)
  seen = set()
  for r in sorted(runs, key=lambda r: (_natural(key(r)), r.seed)):
    k = key(r)
    _curve(ax, r, styles[k], None if k in seen else str(k),
           x_scale(r) if x_scale else 1.0)
    seen.add(k)
  _loss_axes(ax, runs, 'example gradients computed' if x_scale else 'round')
  ax.set_title(title, fontsize=9)
  return _save(fig, out_dir, name)


def _loglog(ax, points, fit, style, label, hollow=False):
  """Scatter of (x, y, seed) with the mean per-seed power law."""
  pts = [p for p in points if p[1] is not None and math.isfinite(p[1])
         and p[1] > 0]
  if not pts:
    return
  x, y = (np.array(v, float) for v in list(zip(*pts))[:2])
  colour, marker = style
  ax.scatter(x, y, s=22, marker=marker, label=label,
             facecolors='none' if hollow else colour, edgecolors=colour)
  if fit:
    grid = np.geomspace(x.min(), x.max(), 50)
    ax.plot(grid, fit['prefactor'] * grid ** fit['exponent'], color=colour,
            lw=1, ls='--' if hollow else '-')
  ax.set_yscale('log')
  _log_ticks(ax, x)


def _log_ticks(ax, x):
  """A log x axis ticked at the measured values (widths, n, K) only."""
  ax.set_xscale('log')
  ax.set_xticks(sorted(set(x)))
  ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter('%g'))
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def lazy_figure(claims, out_dir):
  rows = [c for c in claims if c.id.startswith(('C3', 'C4', 'C13')) and
          c.data.get('points')]
  if not rows:
    return None
  fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.4),
                           squeeze=False)
  styles = _styles(['lazy', 'catapult'])
  for ax, c in zip(axes[0], rows):
    _loglog(ax, c.data['points'], c.data.get('fit'), styles['lazy'], 'lazy')
    _loglog(ax, c.data.get('control_points', []), c.data.get('control_fit'),
            styles['catapult'], 'catapult control', hollow=True)
    ax.set_xlabel('width m')
    ax.set_ylabel({'C4': 'flip fraction', 'C13': 'relative kernel change'}
                  .get(c.id, 'relative weight change'))
    ax.set_title(f'{c.id} ({c.verdict})', fontsize=9)
    ax.legend(fontsize=7)
  return _save(fig, out_dir, 'E1_lazy.png')


def drift_figure(runs, claim, out_dir):
  e1 = [r for r in runs_lib.finished(runs, suite.WIDTH, 'lazy') if r.steps]
  if not e1:
    return None
  fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.4))
  styles = _styles(r.seed for r in e1)
  for r in e1:
    bound = (r.theory or {}).get('smooth_bound')
    _, values = r.step_means(metrics.column('drift_per_step/smooth_eff'))
    if bound and values:
      left.scatter(r.config['width'], max(values) / bound, s=22,
                   color=styles[r.seed][0], marker=styles[r.seed][1])
  left.axhline(1.0, color='red', lw=1)
  left.axhline(1.0 + lazy.C5.OVER, color='red', lw=1, ls='--')
  _log_ticks(left, [r.config['width'] for r in e1])
  left.set_xlabel('width m')
  left.set_ylabel('max smooth_eff / linearized bound')
  right_points = claim.data.get('points', []) if claim else []
  _loglog(right, right_points, claim.data.get('fit') if claim else None,
          styles[min(styles)], 'trials')
  right.set_xlabel('width m')
  right.set_ylabel('max smooth_eff (k >= 1)')
  return _save(fig, out_dir, 'E1_drift.png')


def gap_figure(claim, out_dir):
  """C12's points: (width, max gap, n * 1000 + seed), coloured by n."""
  if not claim or not claim.data.get('points'):
    return None
  fig, ax = plt.subplots(figsize=(5, 3.6))
  by_n = {}
  for m, gap, key in claim.data['points']:
    by_n.setdefault(key // 1000, []).append((m, gap, key))
  styles = _styles(by_n)
  for n, points in sorted(by_n.items()):
    _loglog(ax, points, None, styles[n], f'n={n}')
  fit = claim.data.get('fit')
  if fit:
    grid = np.geomspace(min(p[0] for p in claim.data['points']),
                        max(p[0] for p in claim.data['points']), 50)
    ax.plot(grid, fit['prefactor'] * grid ** fit['exponent'], 'k-', lw=1,
            label=f'slope {fit["exponent"]:+.2f}')
  ax.set_xlabel('width m')
  ax.set_ylabel('max |log L_t - log P_t|, t <= T_pred')
  ax.set_title(f'C12 ({claim.verdict})', fontsize=9)
  ax.legend(fontsize=7)
  return _save(fig, out_dir, 'E3_gap.png')


def efficiency_figure(claim, out_dir):
  """C6's efficiency per client step: measured (points) and predicted."""
  if not claim or not claim.data.get('efficiency'):
    return None
  fig, ax = plt.subplots(figsize=(5, 3.6))
  styles = _styles(claim.data['efficiency'])
  ks = []
  for lr, rows in claim.data['efficiency'].items():
    colour, marker = styles[lr]
    ks += [k for k, _, _ in rows]
    measured = [(k, e) for k, e, _ in rows if e is not None]
    predicted = [(k, p) for k, _, p in rows if p is not None]
    if measured:
      ax.plot(*zip(*measured), marker=marker, color=colour,
              label=f'client_lr {lr:g}: measured (median over seeds)')
    if predicted:
      ax.plot(*zip(*predicted), '--', color=colour, lw=1,
              label=f'client_lr {lr:g}: predicted')
  for level in (1.0, federated.C6.BREAKDOWN):
    ax.axhline(level, color='grey', lw=0.8)
  if ks:
    _log_ticks(ax, ks)
  ax.set_xlabel('local steps K')
  ax.set_ylabel('K T(K) / T(1)')
  ax.legend(fontsize=7)
  return _save(fig, out_dir, 'E2_local_steps.png')


def sample_size_figure(runs, out_dir):
  """T (filled; hollow if censored) and T_pred (crosses) against n at E3's
  wide width, the one its extra-n group runs at."""
  e3 = runs_lib.finished(runs, suite.GRID)
  extra = [r for r in e3 if r.group != 'grid']
  if not extra:
    return None
  wide = [r for r in e3 if r.config['width'] == extra[0].config['width']]
  fig, ax = plt.subplots(figsize=(5, 3.6))
  styles = _styles(r.seed for r in wide)
  for r in wide:
    outcome, t_pred = r.outcome(), claims_base.predicted_rounds(r)
    colour, marker = styles[r.seed]
    n = r.config['num_examples']
    if outcome and outcome.round:
      ax.scatter(n, outcome.round, marker=marker, edgecolors=colour, s=24,
                 facecolors=(colour if outcome.status == 'reached'
                             else 'none'))
    if t_pred:
      ax.scatter(n, t_pred, marker='x', color=colour, s=18)
  _log_ticks(ax, [r.config['num_examples'] for r in wide])
  ax.set_yscale('log')
  ax.set_xlabel('examples n')
  ax.set_ylabel('rounds to eps F_0')
  ax.set_title(f'm = {extra[0].config["width"]}', fontsize=9)
  return _save(fig, out_dir, 'E3_sample_size.png')


def _examples_per_round(run):
  """Example gradients a round computes (x axis of equal computation)."""
  config = config_lib.ExperimentConfig.from_dict(run.config)
  return config.examples_per_round(run.summary['client_sizes'])


def draw_all(runs, claims, out_dir) -> list:
  """Draws every figure the claims refer to; returns the files written."""
  by_id = {c.id: c for c in claims}
  e1 = runs_lib.finished(runs, suite.WIDTH, 'lazy')
  written = [
      e1 and loss_figure(e1, lambda r: f'm={r.config["width"]}',
                         'E1: Local GD by width', out_dir, 'E1_loss.png'),
      gap_figure(by_id.get('C12'), out_dir),
      lazy_figure(claims, out_dir),
      drift_figure(runs, by_id.get('C5'), out_dir),
      efficiency_figure(by_id.get('C6'), out_dir),
      sample_size_figure(runs, out_dir)]
  for name, key, scale in (
      (suite.HETEROGENEITY, lambda r: r.group, None),
      (suite.ALGORITHMS, lambda r: r.group, _examples_per_round),
      (suite.DEPTH, lambda r: f'L={r.config["depth"]}', None),
      (suite.REAL_DATA, lambda r: r.config['dataset'], None),
      (suite.DIGITS_THEORY, lambda r: f'm={r.config["width"]}', None)):
    members = runs_lib.finished(runs, name)
    if members:
      written.append(loss_figure(members, key, name.replace('_', ' '),
                                 out_dir, name + '.png', scale))
  return [w for w in written if w]
