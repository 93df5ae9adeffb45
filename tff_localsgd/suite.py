"""The reproduction suite as data: experiments E1..E7 for each preset.

An experiment is a sweep: flags shared by its trials (`base`), a grid of
swept flags, explicit trials where values are paired rather than crossed
(fixed total computation), and a number of seeds. Presets scale one design:

  smoke  a few minutes on 2 CPU cores (tests, CI)
  quick  the default main job, ~20 minutes on 2 CPU cores
  paper  the full sizes, for a GPU machine
"""

import dataclasses

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


def _sizes(preset):
  """Per-preset sizes; everything else in the design is shared."""
  return {
      'smoke': dict(widths=(16, 64, 256), n=24, ns=(12, 24, 48), clients=2,
                    rounds=6, seeds=2, depths=(1, 2), wide=256, ks=(1, 2, 4),
                    eps=1e-1, diag_every=3),
      'quick': dict(widths=(64, 256, 1024), n=64, ns=(16, 32, 64, 128),
                    clients=4, rounds=30, seeds=3, depths=(1, 2, 4),
                    wide=1024, ks=(1, 2, 5, 10), eps=1e-2, diag_every=5),
      'paper': dict(widths=(256, 1024, 4096, 16384), n=256,
                    ns=(64, 128, 256, 512, 1024), clients=16, rounds=200,
                    seeds=5, depths=(1, 2, 4, 8), wide=4096,
                    ks=(1, 2, 5, 10, 20, 50), eps=1e-3, diag_every=10),
  }[preset]


def epsilon(preset: str) -> float:
  """The relative loss target of 'rounds to epsilon': F(w^t) <= eps F(w^0)."""
  return _sizes(preset)['eps']


def suite(preset: str) -> tuple:
  """The experiments of a preset, in report order."""
  if preset not in PRESETS:
    raise ValueError(f'unknown preset {preset!r}; one of {PRESETS}')
  s = _sizes(preset)
  theory = dict(dataset='synthetic', num_examples=s['n'], input_dim=16,
                num_clients=s['clients'], model='mlp', depth=1,
                train_layers='hidden', lr_scale='width', client_lr=4.0,
                algorithm='local_sgd', local_steps=5, batch_size=4,
                rounds=s['rounds'], diag_every=s['diag_every'],
                probe_size=min(32, s['n']))
  budget = s['rounds'] * 5  # local steps per client, for fixed computation
  return (
      ExperimentSpec(
          'E1_width', 'Width: lazy training and drift against m', theory,
          grid=dict(width=list(s['widths'])), seeds=s['seeds']),
      ExperimentSpec(
          'E2_local_steps', 'Local steps K at fixed rounds and at fixed '
          'total local computation K*T',
          dict(theory, width=s['wide'], diag_every=0),
          paired=tuple([dict(local_steps=k, rounds=s['rounds'],
                             label=f'fixed_rounds_K{k}') for k in s['ks']] +
                       [dict(local_steps=k, rounds=max(1, budget // k),
                             label=f'fixed_computation_K{k}')
                        for k in s['ks']]),
          seeds=1),
      ExperimentSpec(
          'E3_sample_size', 'Sample size n: rounds to epsilon against n',
          dict(theory, width=s['wide'], diag_every=0,
               rounds=s['rounds'] * 2),
          grid=dict(num_examples=list(s['ns'])), seeds=s['seeds']),
      ExperimentSpec(
          'E4_heterogeneity', 'Heterogeneity: iid, Dirichlet label skew, '
          'shards, at small and large width',
          dict(theory, diag_every=0),
          grid=dict(width=[s['widths'][0], s['wide']]),
          paired=(dict(partition='iid', label='iid'),
                  dict(partition='dirichlet', dirichlet_alpha=0.1,
                       label='dirichlet_0.1'),
                  dict(partition='dirichlet', dirichlet_alpha=1.0,
                       label='dirichlet_1'),
                  dict(partition='shards', shards_per_client=2,
                       label='shards')),
          seeds=1),
      ExperimentSpec(
          'E5_algorithms', 'Local SGD, Local GD, minibatch SGD and '
          'centralized GD',
          dict(theory, width=s['wide'], diag_every=0),
          paired=(dict(algorithm='local_sgd', label='local_sgd'),
                  dict(algorithm='local_gd', label='local_gd'),
                  dict(algorithm='minibatch_sgd', local_steps=1,
                       rounds=s['rounds'] * 5, label='minibatch_sgd'),
                  dict(algorithm='local_gd', num_clients=1, local_steps=1,
                       rounds=s['rounds'] * 5, label='centralized_gd')),
          seeds=min(2, s['seeds'])),
      ExperimentSpec(
          'E6_depth', 'Depth L at large width',
          dict(theory, width=s['wide'], diag_every=s['rounds']),
          grid=dict(depth=list(s['depths'])), seeds=1),
      ExperimentSpec(
          'E7_real_data', 'Real data: digits (offline); MNIST and CIFAR-10 '
          'in the paper preset',
          dict(dataset='digits', num_examples=0 if preset == 'paper' else 400,
               model='mlp', depth=1, width=s['wide'], train_layers='all',
               loss='xent', lr_scale='none', client_lr=0.5,
               num_clients=max(4, s['clients']), partition='dirichlet',
               dirichlet_alpha=1.0, algorithm='local_sgd', local_steps=5,
               batch_size=8, rounds=s['rounds'], diag_every=0),
          grid=dict(dataset=['digits', 'mnist', 'cifar10']
                    if preset == 'paper' else ['digits']),
          seeds=1),
  )
