"""REPORT.md, figures and results.json for a suite directory.

Reads only what the runs and `benchmarks.reproduce` wrote: trial
directories, provenance.json, determinism.json, suite.json. Every file is
written atomically, so an interrupted report leaves the previous one intact.
"""

import collections
import dataclasses
import os

from tff_localsgd import config as config_lib
from tff_localsgd import recorders
from tff_localsgd.analysis import claims as claims_lib
from tff_localsgd import suite as suite_lib
from tff_localsgd.analysis import figures
from tff_localsgd.analysis import runs as runs_lib

_DEFAULTS = dataclasses.asdict(config_lib.ExperimentConfig())
_NOT_FLAGS = ('root_dir', 'experiment')


def _flags(config: dict) -> str:
  """A trial's flags that differ from the defaults, as a command line."""
  return ' '.join(f'--{k}={v}' for k, v in sorted(config.items())
                  if k not in _NOT_FLAGS and _DEFAULTS.get(k) != v)


def _cell(text) -> str:
  return str(text).replace('|', '\\|').replace('\n', ' ')


def generate(out: str) -> dict:
  """Writes out/REPORT.md, out/*.png and out/results.json; returns results."""
  info = recorders.read_json(os.path.join(out, 'suite.json')) or {}
  preset = info.get('preset', 'unknown')
  eps = info.get('epsilon') or suite_lib.epsilon(
      preset if preset in suite_lib.PRESETS else 'quick')
  runs = runs_lib.load_runs(out)
  claims = claims_lib.evaluate_claims(runs, eps)
  written = figures.draw_all(runs, claims, out, eps)
  provenance = recorders.read_json(os.path.join(out, 'provenance.json')) or {}
  determinism = recorders.read_json(os.path.join(out, 'determinism.json')) or {}
  status = collections.Counter(r.status for r in runs)
  problems = [r for r in runs if r.status != 'completed']
  planned = info.get('planned_trials', len(runs))

  lines = [
      f'# Reproducibility report: Local SGD on overparameterized ReLU networks',
      '',
      f'Preset **{preset}**; {len(runs)} of {planned} planned trials on disk '
      f'({", ".join(f"{n} {s}" for s, n in sorted(status.items()))}); '
      f'epsilon = {eps:g} (a run reaches epsilon at the first round with '
      f'train/loss <= {eps:g} x its initial loss).',
      '',
      'The claim under test (Deng, Kamani, Mahdavi, AISTATS 2022, '
      'arXiv 2107.10868): Local SGD (FedAvg) drives the training loss of wide '
      'ReLU networks to zero at a geometric rate, in a number of rounds '
      'polynomial in the problem size, because wide networks train lazily '
      '(weights stay near initialization, few ReLU patterns flip) and so the '
      'gradients at the clients\' local models stay close to the gradient at '
      'the averaged model. Each row below turns one part of that claim into '
      'a measured statistic, a criterion and a verdict. FAIL is a result, '
      'not an error; INCONCLUSIVE means the data cannot decide.',
      '',
      '## Claims',
      '',
      '| id | claim | measured | criterion | verdict | figure |',
      '|---|---|---|---|---|---|',
  ]
  for c in claims:
    fig = f'[{c.figure}]({c.figure})' if c.figure in written else '-'
    lines.append(f'| {c.id} | {_cell(c.claim)} | {_cell(c.statistic)} | '
                 f'{_cell(c.criterion)} | **{c.verdict}** | {fig} |')
  lines += ['', '## Figures', '']
  lines += [f'![{name}]({name})\n' for name in written]
  lines += ['## Experiments', '']
  timing = info.get('wall_time_s', {})
  for spec in suite_lib.suite(preset) if preset in suite_lib.PRESETS else ():
    members = [r for r in runs if r.experiment == spec.name]
    counts = collections.Counter(r.status for r in members)
    lines.append(
        f'- **{spec.name}**: {spec.title}. Grid {spec.grid or "-"}; groups '
        f'{[label for label, _ in spec.groups()]}; {spec.seeds} seed(s); '
        f'{len(members)} trials ({dict(counts)}); wall time '
        f'{timing.get(spec.name, float("nan")):.0f} s.')
  lines += ['', '## Determinism', '']
  if determinism:
    same = determinism.get('identical')
    lines.append(
        f'Trial `{determinism.get("trial")}` was rerun in a fresh process: '
        f'final weights {"**bit-identical**" if same else "**DIFFERENT**"} '
        f'(SHA-256 `{determinism.get("original_sha256")}` vs '
        f'`{determinism.get("rerun_sha256")}`).')
  else:
    lines.append('No determinism check was run.')
  lines += ['', '## Not run, diverged or failed', '']
  if problems or planned > len(runs):
    lines += [f'- `{r.experiment}/{r.group}/{r.name}`: {r.status}'
              f'{": " + r.summary.get("error", "") if r.summary.get("error") else ""}'
              for r in problems]
    if planned > len(runs):
      lines.append(f'- {planned - len(runs)} planned trials have no directory '
                   '(not run).')
  else:
    lines.append('Every planned trial completed.')
  lines += info.get('not_run', [])
  lines += ['', '## Provenance', '']
  lines += [f'- {k}: `{"; ".join(map(str, v)) if isinstance(v, list) else v}`'
            for k, v in provenance.items()]
  lines += ['', '## Trials and their flags', '',
            '| trial | status | flags (non-default) |', '|---|---|---|']
  lines += [f'| {r.experiment}/{r.group}/{r.name} | {r.status} | '
            f'`{_flags(r.config)}` |' for r in runs]
  results = {
      'preset': preset, 'epsilon': eps,
      'claims': [dataclasses.asdict(c) for c in claims],
      'provenance': provenance, 'determinism': determinism,
      'trials': [{'experiment': r.experiment, 'group': r.group,
                  'name': r.name, 'status': r.status, 'config': r.config}
                 for r in runs],
  }
  recorders.write_json(os.path.join(out, 'results.json'), results)
  recorders.atomic_write(os.path.join(out, 'REPORT.md'),
                         '\n'.join(lines) + '\n')
  return results
