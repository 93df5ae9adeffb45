"""REPORT.md, figures and results.json for a suite directory.

Reads only what the runs and `benchmarks.reproduce` wrote: trial
directories, provenance.json, determinism.json, suite.json. Every file is
written atomically, so an interrupted report leaves the previous one intact.
Imports no TensorFlow: a report is rebuilt from copied run directories with
numpy, scipy and matplotlib alone (its TensorBoard summaries:
tff_localsgd/reporting.py). Paths in results.json are relative to the
suite directory, so a committed report names no machine's paths.
"""

import collections
import dataclasses
import os
import subprocess

from tff_localsgd import config as config_lib
from tff_localsgd import recorders
from tff_localsgd import results as results_lib
from tff_localsgd import suite as suite_lib
from tff_localsgd.analysis import claims as claims_lib
from tff_localsgd.analysis import figures
from tff_localsgd.analysis import runs as runs_lib
from tff_localsgd.analysis import theory_section

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

_DEFAULTS = dataclasses.asdict(config_lib.ExperimentConfig())
_NOT_FLAGS = ('root_dir', 'experiment')


def _flags(config: dict) -> str:
  """A trial's flags that differ from the defaults, as a command line."""
  return ' '.join(f'--{k}={v}' for k, v in sorted(config.items())
                  if k not in _NOT_FLAGS and _DEFAULTS.get(k) != v)


def _cell(text) -> str:
  return str(text).replace('|', '\\|').replace('\n', ' ')


_INTRO = (
    'The claim under test (Deng, Kamani, Mahdavi, AISTATS 2022, '
    'arXiv 2107.10868; only its abstract was available, so the quantitative '
    'predictions come from the NTK lineage it builds on: Du et al. 2019, '
    'Allen-Zhu, Li and Song 2019, FL-NTK by Huang et al. 2021, Jian and Liu '
    '2025): Local SGD (FedAvg) drives the training loss of wide ReLU '
    'networks to zero at a linear rate, because wide networks train lazily '
    '(weights stay near initialization, few ReLU patterns flip) and so the '
    'gradients at the clients\' local models stay close to the gradient at '
    'the averaged model. Each row below turns one part of that claim into a '
    'measured statistic, a criterion fixed before the suite ran, and a '
    'verdict. FAIL is a result, not an error; INCONCLUSIVE means the data '
    'cannot decide (the row says why).')

_TARGET = (
    'A run reaches epsilon where its train/loss crosses eps F_0, '
    'interpolated log-linearly between the rounds around the crossing (T; '
    'T_pred the same for the predicted curve, which runs to its own '
    'crossing), where F_0 = (1/2n) sum_j ||y_j||^2 is the loss of the zero '
    'predictor: a scale of the data alone, so every seed of the '
    'initialization aims at the same loss. The alternative, a symmetric '
    'initialization with f(w0) = 0, was not taken: it changes the model and '
    'moves w0 away from the standard initialization the theory analyses. '
    'Every synthetic theory trial was given ceil(2 T_pred) rounds from its '
    'own H_0 before it ran (tff_localsgd/budgets.py). Every run is then '
    'exactly one of: *reached*; *censored* (still converging when its budget '
    'ran out, projected from its tail rate); *plateau* (not converging); '
    '*diverged*. One rule for every claim (analysis/claims/base.py): a '
    'trial that crashed, is missing or did not finish, or a censored one, '
    'makes its claim INCONCLUSIVE, naming it; a diverged trial or a plateau '
    'FAILs it; nothing is dropped. The column *seen to FAIL on* names where '
    'each criterion has failed: its control in this run (with its verdict '
    'here) and the tests that construct a failing case; *criterion '
    'committed* is the last commit that changed the claim\'s class.')


def _claim_lines(claims, written) -> list:
  """The claims table; claims: results.json's (dicts)."""
  lines = ['## Claims', '',
           '| id | claim | measured | criterion | verdict | seen to FAIL on '
           '| criterion committed | figure |',
           '|---|---|---|---|---|---|---|---|']
  for c in claims:
    fig = f'[{c["figure"]}]({c["figure"]})' if c['figure'] in written else '-'
    lines.append(f'| {c["id"]} | {_cell(c["claim"])} | '
                 f'{_cell(c["statistic"])} | {_cell(c["criterion"])} | '
                 f'**{c["verdict"]}** | {_cell(c.get("fails_on", ""))} | '
                 f'{c.get("criterion_commit", "-")} | {fig} |')
  return lines


def criterion_commit(claim_id: str, repo: str = REPO) -> str:
  """'<commit> <date>' of the last commit that changed the claim's class
  (git log -L on it), or 'unknown (no git history)' outside a checkout."""
  path, name = claims_lib.source_of(claim_id)
  try:
    done = subprocess.run(
        ['git', 'log', '-1', '--format=%h %cs', '-s', '-L',
         f':^class {name}\\b:{path}'], cwd=repo, capture_output=True,
        text=True, timeout=30)
  except (OSError, subprocess.SubprocessError):
    return 'unknown (no git history)'
  return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() \
      else 'unknown (no git history)'


def claims_table(results: dict) -> str:
  """The claims table of a report's results (Markdown)."""
  return '\n'.join(_claim_lines(results['claims'], results['figures']))


def _trial_config(config: dict, out: str) -> dict:
  """A trial's config as results.json holds it: an absolute root_dir (a
  sweep's) relative to the suite directory, so a committed report names no
  machine's paths."""
  root = config.get('root_dir')
  if not (root and os.path.isabs(root)):
    return config
  return {**config, 'root_dir': os.path.relpath(root, os.path.abspath(out))}


def _figure_lines(written) -> list:
  lines = ['', '## Figures', '']
  for name in written:
    lines += [f'![{name}]({name})', '',
              f'*{figures.CAPTIONS.get(name, name)}*', '']
  return lines


def _phase_text(phases, spent) -> str:
  """'; seconds by phase: ...', the trials' phases_s summed, and their share
  of `spent` seconds spent in rounds and diagnostics ('' if none)."""
  if not phases:
    return ''
  seconds = {k[:-len('_s')]: v for k, v in phases.items() if k.endswith('_s')}
  inside = sum(phases.get(k, 0.0) for k in results_lib.TRAINING_PHASES)
  share = (f'; rounds and diagnostics {inside / spent:.0%} of them'
           if spent else '')
  return ('; seconds by phase: ' + ', '.join(
      f'{k} {v:.0f}' for k, v in seconds.items()) + share)


def _execution(info) -> str:
  """How the trials ran, where suite.json records it: --stack and
  --trial_threads (a speed lever that changes bits, so the report says)."""
  parts = []
  if info.get('stack', 1) > 1:
    parts.append(f'up to {info["stack"]} seeds stacked')
  if info.get('trial_threads', 'all') != 'all':
    parts.append(f'{info["trial_threads"]} TensorFlow thread(s) per trial '
                 'process (--trial_threads; bits to a tolerance)')
  return f' ({"; ".join(parts)})' if parts else ''


def _suite_cost_line(info) -> str:
  """The suite's wall time, core-seconds (wall x parallel) and the share of
  them inside rounds and diagnostics, over the trials and over the whole
  binary."""
  if 'wall_time_s' not in info:
    return 'Wall time not recorded.'
  inside = sum(phases.get(k, 0.0) for k in results_lib.TRAINING_PHASES
               for phases in info.get('phases_s', {}).values())
  core = info['core_s']
  line = (f'The suite\'s trials ran in {info["wall_time_s"]:.0f} s of wall '
          f'time with {info["parallel"]} trials at a time{_execution(info)}: '
          f'{core:.0f} core-seconds (wall x parallel), '
          f'{info.get("cpu_s", 0):.0f} CPU seconds. Training (rounds and '
          f'diagnostics: the sum of every trial\'s system/round_time_s and '
          f'system/diag_time_s in metrics.csv) took {inside:.0f} s, '
          f'{inside / core:.0%} of those core-seconds')
  whole = info.get('binary_wall_s')
  if whole:
    line += (f', and {inside / (whole * info["parallel"]):.0%} of the whole '
             f'binary\'s {whole:.0f} s x {info["parallel"]} (which adds the '
             'budgets, the determinism rerun and the start; this report\'s '
             'own seconds are not in it)')
  return line + '. Per study, its trials\' seconds:'


def _study_lines(preset, runs, info) -> list:
  lines = ['## Studies', '', _suite_cost_line(info), '']
  trial_s = info.get('trial_s', {})
  specs = suite_lib.suite(preset) if preset in suite_lib.PRESETS else ()
  for spec in specs:
    members = [r for r in runs if r.study == spec.name]
    counts = collections.Counter(r.status for r in members)
    spent = trial_s.get(spec.name)
    cost = (f'{spent:.0f} trial-seconds' if spent is not None else
            'time not recorded')
    cost += _phase_text(info.get('phases_s', {}).get(spec.name), spent)
    lines.append(
        f'- **{spec.name}**: {spec.title}. Grid {spec.grid or "-"}; groups '
        f'{[label for label, _ in spec.groups()]}; seeds {spec.seeds_text()}; '
        f'{len(members)} trials ({dict(counts)}); {cost}.')
  lines += ['', 'Design changes made after a committed report had been seen '
            '(no criterion changed with them):'] + [
                f'- at {commit}: {what}.'
                for commit, what in suite_lib.DESIGN_CHANGES]
  return lines


def _determinism_lines(determinism) -> list:
  lines = ['', '## Determinism', '']
  if not determinism:
    return lines + ['No determinism check was run.']
  same = determinism.get('identical')
  return lines + [
      f'Trial `{determinism.get("trial")}` was rerun in a fresh process: '
      f'final weights {"**bit-identical**" if same else "**DIFFERENT**"} '
      f'(SHA-256 `{determinism.get("original_sha256")}` vs '
      f'`{determinism.get("rerun_sha256")}`).']


def _problem_lines(runs, planned, not_run) -> list:
  lines = ['', '## Not run, diverged or failed', '']
  problems = [r for r in runs if r.status != 'completed']
  lines += [f'- `{r.study}/{r.group}/{r.name}`: {r.status}'
            f'{": " + r.summary.get("error", "") if r.summary.get("error") else ""}'
            for r in problems]
  if planned > len(runs):
    lines.append(f'- {planned - len(runs)} planned trials have no directory '
                 '(not run).')
  if not problems and planned <= len(runs):
    lines.append('Every planned trial completed.')
  return lines + list(not_run)


def generate(out: str) -> dict:
  """Writes out/REPORT.md, out/*.png and out/results.json; returns results."""
  info = recorders.read_json(os.path.join(out, 'suite.json')) or {}
  preset = info.get('preset', 'unknown')
  runs = runs_lib.load_runs(out)
  steps = suite_lib.plan(preset) if preset in suite_lib.PRESETS else ()
  claims = claims_lib.evaluate_claims(runs, steps)
  written = figures.draw_all(runs, claims, out)
  headline, calibration_figures = theory_section.calibration_lines(runs, out)
  threshold, threshold_figures = theory_section.threshold_lines(runs, out)
  provenance = recorders.read_json(os.path.join(out, 'provenance.json')) or {}
  determinism = recorders.read_json(os.path.join(out, 'determinism.json')) or {}
  status = collections.Counter(r.status for r in runs)
  planned = info.get('planned_trials', len(runs))
  eps = info.get('epsilon')
  lines = [
      '# Reproducibility report: Local SGD on overparameterized ReLU networks',
      '',
      f'Preset **{preset}**; {len(runs)} of {planned} planned trials on disk '
      f'({", ".join(f"{n} {s}" for s, n in sorted(status.items()))}); '
      + (f'eps = {eps:g}.' if eps else 'eps from each trial\'s config.'),
      '']
  lines += headline + [_INTRO, '', _TARGET, '']
  claim_dicts = [dict(dataclasses.asdict(c),
                      criterion_commit=criterion_commit(c.id))
                 for c in claims]
  lines += _claim_lines(claim_dicts, written) + ['']
  lines += threshold
  lines += _figure_lines(written)
  written += calibration_figures + threshold_figures
  lines += _study_lines(preset, runs, info)
  lines += _determinism_lines(determinism)
  lines += _problem_lines(runs, planned, info.get('not_run', []))
  lines += ['', '## Provenance', '']
  lines += [f'- {k}: `{"; ".join(map(str, v)) if isinstance(v, list) else v}`'
            for k, v in provenance.items()]
  lines += ['', '## Trials and their flags', '',
            '| trial | status | outcome | flags (non-default) |',
            '|---|---|---|---|']
  outcomes = [r.outcome() for r in runs]
  for r, outcome in zip(runs, outcomes):
    lines.append(f'| {r.study}/{r.group}/{r.name} | {r.status} | '
                 f'{outcome.describe() if outcome else "-"} | '
                 f'`{_flags(r.config)}` |')
  results = {
      'preset': preset, 'epsilon': eps,
      'headline': theory_section.headline(runs), 'claims': claim_dicts,
      'figures': written, 'provenance': provenance,
      'determinism': determinism,
      'trials': [{'study': r.study, 'group': r.group,
                  'name': r.name, 'status': r.status,
                  'config': _trial_config(r.config, out),
                  'outcome': o.to_dict() if o else None}
                 for r, o in zip(runs, outcomes)],
  }
  recorders.write_json(os.path.join(out, 'results.json'), results)
  recorders.atomic_write(os.path.join(out, 'REPORT.md'),
                         '\n'.join(lines) + '\n')
  return results
