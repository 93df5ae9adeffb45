"""Reading a suite's results back: only what the recorders wrote.

Layout of a suite directory (benchmarks.reproduce):
  <out>/<study>/<group>/<trial>/{config.json, summary.json, metrics.csv,
                                      drift_steps.csv}
where <study> is a suite entry (suite.py), <group> one paired setting of
the study ('all' when there is none) and <trial> one point of its grid and
one seed.

A run's target is eps F_0 (tff_localsgd/outcomes.py), with eps from its
config and F_0 = (1/2n) sum_j ||y_j||^2 from its summary (rundir.eps_target).
Every file is read through rundir.RunDir; every column name comes from
metrics.column.
"""

import dataclasses
import os

from tff_localsgd import metrics
from tff_localsgd import outcomes
from tff_localsgd import results
from tff_localsgd import rundir

# The metrics.csv columns the report reads most.
LOSS = metrics.column('train/loss')
TRAIN_ACCURACY = metrics.column('train/accuracy')
TEST_ACCURACY = metrics.column('test/accuracy')


@dataclasses.dataclass
class Run:
  """One trial as recorded on disk."""
  study: str
  group: str
  name: str
  path: str
  config: dict
  summary: dict
  rows: list  # metrics.csv rows: {column: float or None}
  steps: list = dataclasses.field(default_factory=list)  # drift_steps.csv

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

  @property
  def theory(self):
    """The NTK prediction summary.json records, or None (does not apply)."""
    return self.summary.get('theory') or None

  @property
  def zero_loss(self):
    """F_0, the zero predictor's loss, or None (rundir.zero_loss)."""
    return rundir.zero_loss(self.summary)

  @property
  def target(self):
    """eps F_0, the loss the run must reach, or None without F_0."""
    return rundir.eps_target(self.config, self.summary)

  def outcome(self):
    """outcomes.Outcome of train/loss against the target; None when the
    run has no loss curve or no F_0 (it cannot be judged)."""
    rounds, losses = self.series(LOSS)
    if not rounds or self.target is None:
      return None
    return outcomes.classify(rounds, losses, self.target,
                                diverged=self.status == 'diverged')

  def step_means(self, column: str):
    """(rounds, mean over local steps k >= 1 of a drift_steps.csv column).

    k = 0 is left out: there every w_i = w^t, so the drift is identically 0.
    """
    by_round = {}
    for row in self.steps:
      if row.get('local_step', 0) >= 1 and row.get(column) is not None:
        by_round.setdefault(int(row['round']), []).append(row[column])
    rounds = sorted(by_round)
    return rounds, [sum(by_round[t]) / len(by_round[t]) for t in rounds]


def finished(runs, study, group=None) -> list:
  """The finished runs (completed or diverged) of a study and group."""
  return [r for r in runs if r.study == study and
          r.status in results.DONE and
          (group is None or r.group == group)]


def load_runs(out: str) -> list:
  """Every trial directory under a suite directory, finished or not."""
  runs = []
  for study in sorted(os.listdir(out)):
    exp_dir = os.path.join(out, study)
    if not (os.path.isdir(exp_dir) and study[:1] == 'E'):
      continue
    for group in sorted(os.listdir(exp_dir)):
      group_dir = os.path.join(exp_dir, group)
      if not os.path.isdir(group_dir):
        continue
      for name in sorted(os.listdir(group_dir)):
        path = os.path.join(group_dir, name)
        run = rundir.RunDir(path=path)
        if not os.path.exists(run.file(rundir.TRIAL_JSON)):
          continue  # logs/, hparams, not a trial
        runs.append(Run(study, group, name, path,
                        run.read_config() or {}, run.read_summary() or {},
                        run.read_rows(), run.read_rows(rundir.STEPS_CSV)))
  return runs
