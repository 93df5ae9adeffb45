"""The report's figures: PNG files drawn from recorded runs (matplotlib, Agg)."""

import collections
import math
import os

import matplotlib
import matplotlib.ticker

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from tff_localsgd import config as config_lib  # noqa: E402
from tff_localsgd import files  # noqa: E402
from tff_localsgd.analysis import runs as runs_lib  # noqa: E402


def _completed(runs, experiment):
  return [r for r in runs if r.experiment == experiment and
          r.status in ('completed', 'diverged')]


def _save(fig, out_dir, name):
  fig.tight_layout()
  files.atomic_write(os.path.join(out_dir, name),
                     lambda f: fig.savefig(f, format='png', dpi=110))
  plt.close(fig)
  return name


def _curves(ax, runs, label, column='train_loss', x_scale=None):
  """Loss curves, one colour per label value, one line per seed."""
  groups = collections.defaultdict(list)
  for r in runs:
    groups[label(r)].append(r)
  colors = plt.cm.viridis(np.linspace(0, 0.9, max(1, len(groups))))
  for color, (name, members) in zip(colors, sorted(groups.items(),
                                                   key=lambda kv: str(kv[0]))):
    for i, r in enumerate(members):
      x, y = r.series(column)
      if x_scale:
        x = [t * x_scale(r) for t in x]
      ax.plot(x, y, color=color, alpha=0.8, lw=1.2,
              label=str(name) if i == 0 else None)
  ax.set_yscale('log')
  ax.set_ylabel(column.replace('_', '/', 1))
  ax.legend(fontsize=7)


def _loglog(ax, points, title, fit=None):
  """Scatter of (x, y) per seed with the fitted power law."""
  x, y = np.array([p[0] for p in points], float), np.array([p[1] for p in
                                                            points], float)
  ok = (x > 0) & (y > 0) & np.isfinite(y)
  ax.scatter(x[ok], y[ok], s=14)
  if fit is not None and ok.any():
    grid = np.geomspace(x[ok].min(), x[ok].max(), 50)
    ax.plot(grid, fit['prefactor'] * grid ** fit['exponent'], 'r-', lw=1,
            label=f'slope {fit["exponent"]:+.2f}')
    ax.legend(fontsize=7)
  ax.set_xscale('log')
  ax.set_yscale('log')
  # Ticks at the measured x values (widths, n), not at crowded minor ticks.
  ax.set_xticks(sorted(set(x[ok])))
  ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter('%g'))
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.set_title(title, fontsize=9)


def draw_all(runs, claims, out_dir, eps) -> list:
  """Draws every figure the claims refer to; returns the files written."""
  data = {c.id: c.data for c in claims}
  written = []
  e1 = _completed(runs, 'E1_width')
  if e1:
    fig, ax = plt.subplots(figsize=(6, 4))
    _curves(ax, e1, lambda r: f'm={r.config["width"]}')
    ax.set_xlabel('round')
    ax.set_title('E1: training loss by width (one line per seed)')
    written.append(_save(fig, out_dir, 'E1_loss.png'))
    lazy = [c for c in claims if c.id.startswith(('C3', 'C4'))
            and 'points' in c.data]
    if lazy:
      fig, axes = plt.subplots(1, len(lazy), figsize=(3.3 * len(lazy), 3.2),
                               squeeze=False)
      for ax, c in zip(axes[0], lazy):
        _loglog(ax, c.data['points'], c.id + (
            ' flips' if c.id == 'C4' else ' ' + c.id.split('.', 1)[-1]),
                c.data['fit'])
        ax.set_xlabel('width m')
      written.append(_save(fig, out_dir, 'E1_lazy.png'))
    drift = [c for c in claims if c.id in ('C5', 'C5b') and 'points' in c.data]
    if drift:
      fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
      for ax, c in zip(axes, drift):
        _loglog(ax, c.data['points'], f'{c.id}: max over rounds',
                c.data['trend'])
        ax.set_xlabel('width m')
      _curves(axes[2], [r for r in e1 if r.series('drift_nonsmooth_frac')[1]],
              lambda r: f'm={r.config["width"]}', 'drift_nonsmooth_frac')
      axes[2].set_xlabel('round')
      written.append(_save(fig, out_dir, 'E1_drift.png'))
  e2 = _completed(runs, 'E2_local_steps')
  if e2:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for prefix, marker in (('fixed_rounds', 'o-'), ('fixed_computation', 's--')):
      pts = sorted((r.config['local_steps'], runs_lib.rounds_to_eps(r, eps))
                   for r in e2 if r.group.startswith(prefix))
      pts = [p for p in pts if math.isfinite(p[1])]
      if pts:
        ax.plot(*zip(*pts), marker, label=prefix.replace('_', ' '))
    ax.set_xscale('log')
    ax.set_xlabel('local steps K')
    ax.set_ylabel(f'rounds to eps={eps:g}')
    ax.legend(fontsize=7)
    ax.set_title('E2: rounds to epsilon by K')
    written.append(_save(fig, out_dir, 'E2_local_steps.png'))
  if data.get('C2', {}).get('points'):
    points = data['C2']['points']
    fig, ax = plt.subplots(figsize=(5, 3.5))
    _loglog(ax, points, 'E3: rounds to epsilon vs n',
            data['C2'].get('power_law'))
    censored = [p[0] for p in points if not math.isfinite(p[1])]
    if censored:  # shown, not dropped: they did not reach epsilon
      top = max([p[1] for p in points if math.isfinite(p[1])], default=1)
      ax.scatter(censored, [top * 1.5] * len(censored), marker='^',
                 color='gray', label='not reached')
      ax.legend(fontsize=7)
    ax.set_xlabel('examples n')
    written.append(_save(fig, out_dir, 'E3_sample_size.png'))
  for name, label, scale in (
      ('E4_heterogeneity', lambda r: f'{r.group}, m={r.config["width"]}', None),
      ('E5_algorithms', lambda r: r.group, _examples_per_round),
      ('E6_depth', lambda r: f'L={r.config["depth"]}', None),
      ('E7_real_data', lambda r: r.config['dataset'], None)):
    runs_e = _completed(runs, name)
    if runs_e:
      fig, ax = plt.subplots(figsize=(6, 4))
      _curves(ax, runs_e, label, x_scale=scale)
      ax.set_xlabel('example gradients computed' if scale else 'round')
      ax.set_title(name.replace('_', ' '))
      written.append(_save(fig, out_dir, name + '.png'))
  return written


def _examples_per_round(run):
  """Example gradients a round computes (x axis of equal computation)."""
  config = config_lib.ExperimentConfig.from_dict(run.config)
  return config.examples_per_round(run.summary['client_sizes'])
