"""Reading a sweep's trials back, and what the sweep records of each:
trial.json, its final/* metrics, its phases. No TensorFlow.

Under the sweep directory:
  logs/<trial>.log      the trial's stdout and stderr
  <trial>/trial.json    {name, swept, flags, result}
  <trial>/...           the trial's run directory (tff_localsgd/rundir.py)

The final/* metrics (also in `sweep_index`), final/<tag> the last value of
the run's <tag>:
  final/train/loss          train/loss of the last round (summary.json)
  final/rounds_to_eps       T: where train/loss crosses eps F_0,
                            interpolated (rundir.eps_target); not written
                            when the run never gets there
  theory/rounds_to_eps      T_pred: the same crossing of the run's
                            predicted curve (summary.json's theory), beside
                            T in HParams; not written without a prediction
  final/drift/grad_diff_rel, final/lazy/weight_change_rel,
  final/lazy/activation_flip_frac
                            the last measured value of the diagnostic (runs
                            with --diag_every > 0 only)
"""

import dataclasses
import glob
import os

from tff_localsgd import metrics
from tff_localsgd import recorders
from tff_localsgd import results
from tff_localsgd import rundir
from tff_localsgd.sweep import grid

LOGS = 'logs'
TRIAL_JSON = rundir.TRIAL_JSON
LOG_TAIL_LINES = 20
FINAL_METRICS = ('final/train/loss', 'final/rounds_to_eps',
                 'theory/rounds_to_eps',
                 'final/drift/grad_diff_rel', 'final/lazy/weight_change_rel',
                 'final/lazy/activation_flip_frac')
_DIAGNOSTICS = ('drift/grad_diff_rel', 'lazy/weight_change_rel',
                'lazy/activation_flip_frac')


@dataclasses.dataclass(frozen=True)
class TrialResult:
  name: str
  status: str  # completed, diverged or failed (trial.json may also say
  # interrupted: a trial stopped with the sweep)
  skipped: bool = False  # done by an earlier run of the sweep
  returncode: int | None = None
  wall_time_s: float = 0.0
  error: str = ''
  log_tail: str = ''  # the last lines of the log, for a failed trial
  log_path: str = ''
  summary: dict | None = None  # the trial's summary.json, when it has one
  sweep_dir: str = ''  # the sweep it belongs to (run_sweeps)


def final_metrics(trial_dir: str, summary: dict) -> dict:
  """The final/* metrics of a finished trial (see the module docstring)."""
  run = rundir.RunDir(path=trial_dir)
  final = summary.get('final') or {}
  out = {}
  loss = recorders.to_number(final.get('train/loss'))
  if loss is not None:
    out['final/train/loss'] = loss
  reached = run.rounds_to_eps()
  if reached is not None:
    out['final/rounds_to_eps'] = float(reached)
  predicted = recorders.to_number((summary.get('theory') or {}).get(
      'rounds_to_eps'))
  if predicted is not None:
    out['theory/rounds_to_eps'] = predicted
  rows = None
  for tag in _DIAGNOSTICS:
    value = recorders.to_number(final.get(tag))
    if value is None:  # not measured in the last round: the last measured
      rows = run.read_rows() if rows is None else rows
      column = [r.get(metrics.column(tag)) for r in rows]
      value = next((v for v in reversed(column) if v is not None), None)
    if value is not None:
      out['final/' + tag] = value
  return out


def done_summary(trial_dir):
  """summary.json of a trial that is done (completed or diverged), or None."""
  summary = rundir.RunDir(path=trial_dir).read_summary()
  if summary and summary.get('status') in results.DONE:
    return summary
  return None


def sweep_index(sweep_dir: str) -> list:
  """One dict per trial directory (one with a trial.json), sorted by name.

  Keys: name, dir, swept, flags, status (summary.json's, else 'failed' if
  the sweep recorded a failure, else 'missing'), error and log (from the
  sweep's record), final (summary.json's final metrics), metrics (final/*).
  """
  sweep_dir = os.path.abspath(os.path.expanduser(sweep_dir))
  index = []
  for path in sorted(glob.glob(os.path.join(sweep_dir, '*', TRIAL_JSON))):
    trial_dir = os.path.dirname(path)
    run = rundir.RunDir(path=trial_dir)
    record = run.read_trial() or {}
    result = record.get('result') or {}
    summary = run.read_summary()
    status = ((summary or {}).get('status') or result.get('status') or
              'missing')
    index.append(dict(
        name=record.get('name', os.path.basename(trial_dir)), dir=trial_dir,
        swept=record.get('swept', {}), flags=record.get('flags', []),
        status=status, error=result.get('error', ''),
        log=result.get('log', ''),
        final=(summary or {}).get('final', {}),
        metrics=final_metrics(trial_dir, summary) if summary else {}))
  return index


def check_resumable(trials, sweep_dir: str):
  """Raises ConfigError('sweep') if a trial directory holds a run of another
  config (the sweep name was reused with other flags): resuming would mix
  the two. root_dir may differ (a moved sweep directory)."""
  sweep_dir = os.path.abspath(os.path.expanduser(sweep_dir))
  for trial in trials:
    run = rundir.RunDir(path=os.path.join(sweep_dir, trial.name))
    differ = run.differing_fields(grid.trial_config(trial), ignore=())
    if differ:
      raise grid.ConfigError('sweep', f'{run.path} was run with other values of '
                        f'{", ".join(differ)}; choose another sweep name or '
                        'delete the directory')


def write_trial_json(trial, trial_dir, result=None):
  record = dict(name=trial.name, swept=trial.swept, flags=list(trial.flags))
  if result is not None:
    record['result'] = dict(status=result.status, returncode=result.returncode,
                            error=result.error, log=result.log_path,
                            wall_time_s=result.wall_time_s)
  rundir.RunDir(path=trial_dir).write_trial(record)


def log_tail(path, lines=LOG_TAIL_LINES) -> str:
  try:
    with open(path, errors='replace') as f:
      return ''.join(f.readlines()[-lines:])
  except OSError:
    return ''


def phase_totals(trial_results) -> dict:
  """summary.json's phases_s summed over the trials run_sweep trained
  (skipped ones ran earlier), with `trials` (their number) and `processes`
  (the processes whose start-up they paid, startup_s > 0: a stack's members
  share one, counted at its first, summary.json's stack index 0)."""
  totals = {'trials': 0, 'processes': 0}
  for result in trial_results:
    phases = (result.summary or {}).get('phases_s')
    if result.skipped or not phases:
      continue
    totals['trials'] += 1
    first = (result.summary.get('stack') or {}).get('index', 0) == 0
    totals['processes'] += phases.get('startup_s', 0) > 0 and first
    for key, value in phases.items():
      totals[key] = totals.get(key, 0.0) + value
  return totals
