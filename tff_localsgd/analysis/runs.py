"""Reading a suite's results back: only what the recorders wrote.

Layout of a suite directory (benchmarks.reproduce):
  <out>/<experiment>/<group>/<trial>/{config.json, summary.json, metrics.csv}
where <group> is one paired setting of the experiment ('all' when there is
none) and <trial> one point of its grid and one seed.
"""

import dataclasses
import math
import os

from tff_localsgd import recorders
from tff_localsgd.analysis import fits


@dataclasses.dataclass
class Run:
  """One trial as recorded on disk."""
  experiment: str
  group: str
  name: str
  path: str
  config: dict
  summary: dict
  rows: list  # metrics.csv rows: {column: float or None}

  @property
  def status(self) -> str:
    return self.summary.get('status', 'missing')

  @property
  def seed(self) -> int:
    return int(self.config.get('seed', 0))

  def series(self, column: str):
    """(rounds, values) of a metrics.csv column, where it was measured."""
    pairs = [(int(r['round']), r[column]) for r in self.rows
             if r.get(column) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]

  def last(self, column: str):
    _, values = self.series(column)
    return values[-1] if values else None


def load_runs(out: str) -> list:
  """Every trial directory under a suite directory, finished or not."""
  runs = []
  for experiment in sorted(os.listdir(out)):
    exp_dir = os.path.join(out, experiment)
    if not (os.path.isdir(exp_dir) and experiment[:1] == 'E'):
      continue
    for group in sorted(os.listdir(exp_dir)):
      group_dir = os.path.join(exp_dir, group)
      if not os.path.isdir(group_dir):
        continue
      for name in sorted(os.listdir(group_dir)):
        path = os.path.join(group_dir, name)
        if not os.path.exists(os.path.join(path, 'trial.json')):
          continue  # logs/, hparams, not a trial
        metrics = os.path.join(path, 'metrics.csv')
        rows = ([{k: recorders.to_number(v) for k, v in r.items()}
                 for r in recorders.read_metrics(metrics)]
                if os.path.exists(metrics) else [])
        runs.append(Run(
            experiment, group, name, path,
            recorders.read_json(os.path.join(path, 'config.json')) or {},
            recorders.read_json(os.path.join(path, 'summary.json')) or {},
            rows))
  return runs


def rounds_to_eps(run: Run, eps: float) -> float:
  """First round t with train_loss(t) <= eps * train_loss(0); inf if never."""
  rounds, losses = run.series('train_loss')
  if not losses:
    return math.inf
  return fits.rounds_to_eps(rounds, losses, eps, relative=True)
