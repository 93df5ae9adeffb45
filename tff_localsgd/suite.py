"""The reproduction suite as data: experiments E1..E7 for each preset.

An experiment is a sweep: flags shared by its trials (`base`), a grid of
swept flags, explicit trials where values are paired rather than crossed
(fixed total computation), and a number of seeds. Presets scale one design:

  smoke  a few minutes on 2 CPU cores (tests, CI); too few seeds to decide
         slope claims, which say so (INCONCLUSIVE)
  quick  the default main job, about 15-20 minutes on 2 CPU cores, sized so
         that every claim can reach PASS or FAIL
  paper  the same design at the paper's sizes, for a GPU machine

The design, from the theory (tff_localsgd/theory.py, /work/shared/THEORY.md):
- Local GD (full-batch local steps) wherever a rate or a round count is
  compared with the prediction: the linearized map M predicts Local GD
  exactly, Local SGD only in expectation. Local SGD has its own claim (C8).
- eta = client_lr / m (lr_scale=width): H grows like m here (A, W ~ N(0, 2/m),
  B ~ N(0, 1)), so one client_lr gives the same eta H at every width.
- client_lr = 8: the local steps must be stable, eta lambda_max(H_ii)/n_i < 2
  on every client's block. Computed at initialization for the quick data
  (n = 64, 4 clients, d = 16, seeds 0-1, m = 256..4096; a design calculation
  from H, not a training result): eta lambda_max(H_ii)/n_i = 0.83-1.31 at
  client_lr 8 (0.42-0.62 at the former 4), the Dirichlet and shard clients
  (n_i >= 6) included; the predicted rounds to eps = 1e-2 are 12-29 at
  client_lr 8. Deeper nets add one such Gram term per trained m x m layer,
  so E6 scales client_lr by 1/L to keep eta lambda_max/n_i in place.
- E1's rounds are twice the slowest predicted round to eps, so a run that
  follows the theory reaches eps; one that does not is a plateau (FAIL)
  or a projection past the budget (censored), never a silent cut. E2 gives
  K local steps budget/K rounds (at least half of E1's), E3-E6 twice E1's.
- Quick's estimated time (benchmarks.reproduce --plan, measured on the
  shared, loaded 2-core machine): about 20 minutes at --parallel=2, half of
  it E1's m = 2048 trials.
- The non-lazy control of C3/C4 (E1 group 'catapult') is the same sweep with
  client_lr = 20 (and half the rounds: its statistic is the weight change,
  not a round count): eta lambda_max(H_ii)/n_i = 2.1-3.1, above the edge of
  stability 2 and below about 4 (and well below the ~12 seen for ReLU nets),
  the catapult phase of Lewkowycz et al. (2020): the loss first grows, the
  kernel's top eigenvalue falls by O(1) even at infinite width until the
  step is stable again, and the run then converges. The kernel moving by
  O(1) means the weights leave the lazy regime without diverging: a step
  not scaled by 1/m would instead diverge at large m, and a smaller step
  only slows the same lazy dynamics. The linearized map diverges there
  (rho(M) > 1), so C1/C12 do not use this group.
- Slopes against width (C3, C4, C5, C12) and n (C2) have >= 4 seeds: their
  intervals are per-seed t-intervals (fits.seed_slope_fit).
"""

import dataclasses

from tff_localsgd.sweep import grid as sweep  # the grid alone: no TF

PRESETS = ('smoke', 'quick', 'paper')


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
  """One experiment of the suite: a sweep and what it is for."""
  name: str  # E1_width, ...
  title: str
  base: dict  # flag -> value, shared by every trial
  grid: dict = dataclasses.field(default_factory=dict)  # flag -> values
  # Explicit trials where values are paired, not crossed: dicts of flag ->
  # value (and an optional 'label'), each crossed with the grid and seeds.
  paired: tuple = ()
  seeds: int = 1

  def groups(self) -> list:
    """[(label, flags)]: one sub-sweep per paired entry (or one in all)."""
    if not self.paired:
      return [('all', dict(self.base))]
    out = []
    for entry in self.paired:
      entry = dict(entry)
      label = entry.pop('label', None) or '_'.join(
          f'{k}-{v}' for k, v in entry.items())
      out.append((label, {**self.base, **entry}))
    return out


# client_lr of the theory experiments, and of E1's non-lazy control (above).
CLIENT_LR = 8.0
CATAPULT_CLIENT_LR = 20.0
MIN_SLOPE_SEEDS = 4
# The suite's rounds are small (4 clients of 16 examples), where the native
# runtime's per-call cost dominates: measured at m = 256 / 1024 / 2048, a
# round took 0.42x / 0.86x / 0.65x and an evaluation 0.45x / 0.30x / 0.18x
# of the native engine's time. Its results agree with the native engine's
# to 1e-6 (weights) and 2e-5 (metrics.csv), not bit for bit
# (tests/test_engines.py); a run is still bit-identical to itself.
ENGINE = 'inprocess'


def _sizes(preset):
  """Per-preset sizes; everything else in the design is shared."""
  return {
      'smoke': dict(widths=(32, 64, 128), n=16, ns=(8, 16, 32), clients=2,
                    rounds=6, seeds=2, depths=(1, 2), wide=128, ks=(1, 2, 4),
                    eps=1e-1, diag_every=3, pair_seeds=1),
      'quick': dict(widths=(256, 512, 1024, 2048), n=64, ns=(32, 64, 128),
                    clients=4, rounds=60, seeds=4, depths=(1, 2, 4),
                    wide=1024, ks=(1, 2, 5, 10, 20), eps=1e-2, diag_every=10,
                    pair_seeds=2),
      'paper': dict(widths=(512, 1024, 2048, 4096, 8192), n=256,
                    ns=(64, 128, 256, 512), clients=16, rounds=200,
                    seeds=5, depths=(1, 2, 4, 8), wide=4096,
                    ks=(1, 2, 5, 10, 20, 50), eps=1e-4, diag_every=10,
                    pair_seeds=3),
  }[preset]


def epsilon(preset: str) -> float:
  """The target of 'rounds to epsilon': F(w^t) <= eps F_0 (outcomes.py)."""
  return _sizes(preset)['eps']


def _theory_base(s):
  """Flags shared by the synthetic experiments: the theory's setting."""
  return dict(dataset='synthetic', num_examples=s['n'], input_dim=16,
              num_clients=s['clients'], model='mlp', depth=1,
              train_layers='hidden', lr_scale='width', client_lr=CLIENT_LR,
              algorithm='local_gd', local_steps=5, batch_size=8,
              rounds=s['rounds'], diag_every=0, probe_size=min(32, s['n']),
              eps=s['eps'], engine=ENGINE)


def _width_and_scaling(s, theory, wide) -> tuple:
  """E1..E3: width, local steps and sample size."""
  budget = s['rounds'] * 5  # local steps per client, for fixed computation
  return (
    ExperimentSpec(
        'E1_width', 'Width: the prediction, lazy training and drift '
        'against m; the same sweep at a catapult step as the non-lazy '
        'control',
        dict(theory, diag_every=s['diag_every'], diag_per_step=True),
        grid=dict(width=list(s['widths'])),
        paired=(dict(label='lazy'),
                dict(client_lr=CATAPULT_CLIENT_LR, rounds=s['rounds'] // 2,
                     label='catapult')),
        seeds=s['seeds']),
    ExperimentSpec(
        'E2_local_steps', 'Local steps K at fixed total local computation '
        'K*T',
        wide, paired=tuple(dict(local_steps=k,
                                rounds=max(budget // k, s['rounds'] // 2),
                                label=f'K{k}') for k in s['ks']),
        seeds=s['pair_seeds']),
    ExperimentSpec(
        'E3_sample_size', 'Sample size n: rounds to epsilon against n',
        dict(wide, rounds=s['rounds'] * 2),
        grid=dict(num_examples=list(s['ns'])), seeds=s['seeds']),
  )


def _comparisons(s, wide) -> tuple:
  """E4..E6: partitions, algorithms and depth at large width."""
  return (
    ExperimentSpec(
        'E4_heterogeneity', 'Heterogeneity: iid, Dirichlet label skew and '
        'shards at large width',
        dict(wide, rounds=s['rounds'] * 2),
        paired=(dict(partition='iid', label='iid'),
                dict(partition='dirichlet', dirichlet_alpha=0.1,
                     label='dirichlet_0.1'),
                dict(partition='dirichlet', dirichlet_alpha=1.0,
                     label='dirichlet_1'),
                dict(partition='shards', shards_per_client=2,
                     label='shards')),
        seeds=s['pair_seeds']),
    ExperimentSpec(
        'E5_algorithms', 'Local SGD, Local GD, minibatch SGD and '
        'centralized GD',
        dict(wide, rounds=s['rounds'] * 2),
        paired=(dict(algorithm='local_sgd', label='local_sgd'),
                dict(algorithm='local_gd', label='local_gd'),
                dict(algorithm='minibatch_sgd', local_steps=1,
                     rounds=s['rounds'] * 4, label='minibatch_sgd'),
                dict(algorithm='local_gd', num_clients=1, local_steps=1,
                     rounds=s['rounds'] * 4, label='centralized_gd')),
        seeds=s['pair_seeds']),
    ExperimentSpec(
        'E6_depth', 'Depth L at large width (client_lr scaled by 1/L)',
        dict(wide, rounds=s['rounds'] * 2),
        paired=tuple(dict(depth=d, client_lr=CLIENT_LR / d, label=f'L{d}')
                     for d in s['depths']),
        seeds=1),
  )


def _real_data(preset, s) -> tuple:
  """E7: digits (and MNIST, CIFAR-10 in the paper preset)."""
  return (
    ExperimentSpec(
        'E7_real_data', 'Real data: digits (offline); MNIST and CIFAR-10 '
        'in the paper preset. A demonstration outside the theory '
        '(cross-entropy, all layers trained)',
        dict(dataset='digits', num_examples=0 if preset == 'paper' else 400,
             model='mlp', depth=1, width=s['wide'], train_layers='all',
             loss='xent', lr_scale='none', client_lr=0.5,
             num_clients=max(4, s['clients']), partition='dirichlet',
             dirichlet_alpha=1.0, algorithm='local_sgd', local_steps=5,
             batch_size=8, rounds=s['rounds'], diag_every=0,
             eps=s['eps'], engine=ENGINE),
        grid=dict(dataset=['digits', 'mnist', 'cifar10']
                  if preset == 'paper' else ['digits']),
        seeds=1),
  )


def suite(preset: str) -> tuple:
  """The experiments of a preset, in report order."""
  if preset not in PRESETS:
    raise ValueError(f'unknown preset {preset!r}; one of {PRESETS}')
  s = _sizes(preset)
  theory = _theory_base(s)
  wide = dict(theory, width=s['wide'])
  return (_width_and_scaling(s, theory, wide) + _comparisons(s, wide) +
          _real_data(preset, s))


def plan(preset: str, only=()) -> list:
  """[(experiment spec, group label, trials)] of the preset's experiments
  (those named in `only`, if any), one sweep per group. Raises ConfigError
  for a bad value, before anything runs."""
  out = []
  for spec in suite(preset):
    if only and spec.name not in only:
      continue
    for label, base in spec.groups():
      grid = {k: [str(v) for v in values] for k, values in spec.grid.items()}
      trials = sweep.expand_grid(grid, list(range(spec.seeds)),
                                 {k: str(v) for k, v in base.items()})
      out.append((spec, label, trials))
  return out
