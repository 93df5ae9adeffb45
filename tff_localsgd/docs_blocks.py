"""The generated blocks of README.md and docs/*.md, as pure functions.

A block is two marker lines and what lies between them:

  <!-- generated: NAME [SOURCE] -->
  ...
  <!-- end generated -->

NAME picks a renderer below; SOURCE names what it reads: a report directory
(its results.json and suite.json), a Markdown artifact or a preset. Each
renderer turns plain data (an artifact's dict or text, the suite's plan, the
metrics table) into Markdown, so a number quoted in the docs is the
artifact's own. benchmarks/docs.py reads the sources and rewrites or checks
the blocks; this module reads no file and imports no TensorFlow.
"""

import collections
import dataclasses
import re
import typing

from tff_localsgd import metrics

BEGIN = re.compile(r'<!-- generated: ([a-z][a-z0-9_-]*)(?: (\S+))? -->')
END = '<!-- end generated -->'
VERDICTS = ('PASS', 'FAIL', 'INCONCLUSIVE')  # the report's order


class BlockError(ValueError):
  """Markers that do not pair, or a block this module cannot render."""


@dataclasses.dataclass(frozen=True)
class Block:
  name: str
  source: typing.Optional[str]
  line: int  # 1-based line of the begin marker
  body: str  # the lines between the markers, each ending in a newline

  @property
  def label(self) -> str:
    return f'{self.name} {self.source}' if self.source else self.name


class Sources(typing.Protocol):
  """What the renderers read; benchmarks/docs.py reads it from disk."""

  def report(self, directory: str) -> tuple:  # (results.json, suite.json)
    ...

  def text(self, path: str) -> str:
    ...

  def json(self, path: str):
    ...

  def plan(self, preset: str) -> list:  # suite.plan(preset)
    ...

  def presets(self) -> tuple:  # suite.PRESETS
    ...


def blocks(text: str) -> list:
  """The blocks of a Markdown text, in order; BlockError if unpaired."""
  found, open_block, body = [], None, []
  for number, line in enumerate(text.splitlines(keepends=True), 1):
    begin = BEGIN.fullmatch(line.rstrip('\n'))
    if begin and open_block:
      raise BlockError(f'line {number}: a block begins inside the block of '
                       f'line {open_block[2]}')
    if begin:
      open_block, body = (begin.group(1), begin.group(2), number), []
    elif line.rstrip('\n') == END:
      if not open_block:
        raise BlockError(f'line {number}: {END} without a block')
      found.append(Block(*open_block, ''.join(body)))
      open_block = None
    elif open_block:
      body.append(line)
  if open_block:
    raise BlockError(f'line {open_block[2]}: block {open_block[0]} has no '
                     f'{END}')
  return found


def rewrite(text: str, rendered: list) -> str:
  """text with the bodies of its blocks replaced, in order, by `rendered`."""
  out, index, inside = [], 0, False
  for line in text.splitlines(keepends=True):
    if BEGIN.fullmatch(line.rstrip('\n')):
      out.append(line)
      out.append(rendered[index])
      index, inside = index + 1, True
    elif line.rstrip('\n') == END:
      out.append(line)
      inside = False
    elif not inside:
      out.append(line)
  return ''.join(out)


def render(block: Block, sources: Sources) -> str:
  """The body `block` should have: Markdown ending in a newline."""
  if block.name not in _RENDERERS:
    raise BlockError(f'line {block.line}: unknown block {block.name!r}; one '
                     f'of {", ".join(sorted(_RENDERERS))}')
  wants_source, renderer = _RENDERERS[block.name]
  if wants_source != (block.source is not None):
    raise BlockError(f'line {block.line}: block {block.name} takes '
                     f'{"a source" if wants_source else "no source"}')
  try:
    return renderer(block.source, sources)
  except KeyError as e:  # an artifact of another shape than this module's
    raise BlockError(f'line {block.line}: block {block.label}: its source '
                     f'has no {e}') from e


def _cell(value) -> str:
  """A value as a Markdown table cell (| would end the cell)."""
  return str(value).replace('|', '\\|').replace('\n', ' ')


def _table(header: tuple, rows: list) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(_cell(v) for v in row) + ' |' for row in rows]
  return '\n'.join(lines) + '\n'


def duration(seconds: float) -> str:
  """334.6 -> '335 s (5 min 35 s)'."""
  whole = round(seconds)
  if whole < 60:
    return f'{whole} s'
  return f'{whole} s ({whole // 60} min {whole % 60} s)'


def verdict_counts(claims: list) -> str:
  """'10 PASS, 1 FAIL, 2 INCONCLUSIVE': the report's verdicts first, then any
  other, in order of appearance."""
  counts = collections.Counter(c['verdict'] for c in claims)
  order = [v for v in VERDICTS if v in counts]
  order += [v for v in dict.fromkeys(c['verdict'] for c in claims)
            if v not in VERDICTS]
  return ', '.join(f'{counts[v]} {v}' for v in order)


def claims_table(results: dict) -> str:
  """Each claim of a report and its verdict (results.json's claims)."""
  return _table(('id', 'verdict', 'claim'),
                [(c['id'], f'**{c["verdict"]}**', c['claim'])
                 for c in results['claims']])


def headline(results: dict) -> str:
  """The calibration sentence that opens the report (results.json)."""
  return results['headline'] + '\n'



def criteria_table(results: dict) -> str:
  """Each claim of a report and the criterion it was judged by."""
  return _table(('id', 'claim', 'criterion'),
                [(c['id'], c['claim'], c['criterion'])
                 for c in results['claims']])


def run_summary(results: dict, suite: dict) -> str:
  """What a committed suite run was: where, how many trials, how long, its
  verdicts and its determinism check (results.json and suite.json)."""
  prov = results['provenance']
  statuses = collections.Counter(t['status'] for t in results['trials'])
  status_text = ', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))
  dirty = ', uncommitted changes' if prov['git_dirty'] else ''
  gpus = ', '.join(prov['gpus'])
  lines = [
      f'- preset **{results["preset"]}**, ε = {results["epsilon"]:g}; '
      f'commit `{prov["git_commit"][:7]}`{dirty}; Python {prov["python"]}, '
      f'TensorFlow {prov["tensorflow"]}, TFF {prov["tensorflow_federated"]}; '
      f'{prov["cpu"]}, {prov["cpu_cores"]} cores; GPU: {gpus}',
      f'- {len(results["trials"])} of {suite["planned_trials"]} planned '
      f'trials on disk ({status_text})',
      f'- the suite\'s trials took {duration(suite["wall_time_s"])} of '
      f'wall time, {suite["parallel"]} at a time: {round(suite["core_s"])} '
      f'core-seconds (wall time × {suite["parallel"]}), '
      f'{round(suite["cpu_s"])} CPU seconds',
      f'- claims: {verdict_counts(results["claims"])}',
      _determinism(results['determinism'])]
  return '\n'.join(lines) + '\n'


def _determinism(check: dict) -> str:
  same = ('bit-identical final weights' if check['identical'] else
          'final weights that DIFFER')
  return (f'- determinism: trial `{check["trial"]}` rerun in a fresh '
          f'process gave {same}')


def phase_table(suite: dict) -> str:
  """The trials' seconds by study and phase (suite.json's phases_s), with
  the share of rounds and diagnostics, and a total row."""
  phases = sorted({p for by in suite['phases_s'].values() for p in by
                   if p.endswith('_s')})
  header = (('study', 'trials', 'trial-s') +
            tuple(p[:-2] for p in phases) + ('rounds + diagnostics',))
  rows, total = [], collections.Counter()
  for study, by_phase in suite['phases_s'].items():
    seconds = suite['trial_s'][study]
    total.update(dict(by_phase, trial_s=seconds))
    rows.append(_phase_row(study, by_phase, seconds, phases))
  rows.append(_phase_row('all', total, total['trial_s'], phases))
  return _table(header, rows)


def _phase_row(study: str, by_phase, seconds: float, phases: list) -> tuple:
  busy = by_phase.get('rounds_s', 0) + by_phase.get('diagnostics_s', 0)
  share = f'{busy / seconds:.0%}' if seconds else '-'
  return ((study, by_phase['trials'], f'{seconds:.0f}') +
          tuple(f'{by_phase.get(p, 0):.0f}' for p in phases) + (share,))


def _values(spec, flag: str) -> set:
  """Every value a study gives `flag`, from its grid or its groups' flags."""
  if flag in spec.grid:
    return set(spec.grid[flag])
  return {flags[flag] for _, flags in spec.groups() if flag in flags}


def _listed(values) -> str:
  return ', '.join(f'{v:g}' if isinstance(v, float) else str(v)
                   for v in sorted(values)) or '-'


def _specs(plan: list) -> list:
  """The studies of a plan [(spec, group, trials)], each once, in order."""
  return list({spec.name: spec for spec, _, _ in plan}.values())


def presets_table(plans: dict) -> str:
  """One row per preset, from suite.plan(preset): its studies and trials,
  the widths, the synthetic sample sizes, the seeds and eps."""
  rows = []
  for preset, plan in plans.items():
    specs = _specs(plan)
    synthetic = [s for s in specs if 'synthetic' in _values(s, 'dataset')]
    rows.append((
        preset, len(specs), sum(len(trials) for _, _, trials in plan),
        _listed(set().union(*(_values(s, 'width') for s in specs))),
        _listed(set().union(*(_values(s, 'num_examples')
                              for s in synthetic))),
        _listed({s.seeds_for(label) for s in specs
                 for label, _ in s.groups()}),
        _listed(set().union(*(_values(s, 'eps') for s in specs)))))
  return _table(('preset', 'studies', 'trials', 'widths m',
                 'synthetic examples n', 'seeds per configuration', 'ε'),
                rows)


def studies_table(plan: list) -> str:
  """One row per study of a preset's plan: what it tests, what varies
  (its grid and its groups) and how many trials it runs."""
  trials = collections.Counter()
  for spec, _, group_trials in plan:
    trials[spec.name] += len(group_trials)
  rows = []
  for spec in _specs(plan):
    varies = [f'{flag} = {_listed(values)}'
              for flag, values in spec.grid.items()]
    labels = [label for label, _ in spec.groups()]
    if labels != ['all']:
      varies.append('groups ' + ', '.join(labels))
    rows.append((spec.name, spec.title, '; '.join(varies) or '-',
                 spec.seeds_text(), trials[spec.name]))
  return _table(('study', 'what it tests', 'what varies', 'seeds', 'trials'),
                rows)


def include(markdown: str) -> str:
  """A Markdown artifact without its title and images, for quoting whole."""
  kept = [line for line in markdown.strip().splitlines()
          if not line.startswith(('# ', '!['))]
  return re.sub(r'\n{3,}', '\n\n', '\n'.join(kept).strip()) + '\n'


def peak_rss_table(cells: list) -> str:
  """Peak RSS (GB) of each cell of a throughput run (its JSON: one dict per
  cell), one row per (m, N, K), one column per setting; 'failed' where the
  cell carries an error."""
  settings = list(dict.fromkeys(c['setting'] for c in cells))
  rows = {}
  for c in cells:
    row = rows.setdefault((c['width'], c['num_clients'], c['local_steps']),
                          {})
    row[c['setting']] = ('failed' if 'error' in c else
                         f'{c["peak_rss_gb"]:.2f}')
  return _table(('m', 'N', 'K', *settings),
                [(*key, *(row.get(s, '-') for s in settings))
                 for key, row in sorted(rows.items())])


def _metrics(_, sources: Sources) -> str:
  return metrics.markdown_table()


def _presets(_, sources: Sources) -> str:
  return presets_table({p: sources.plan(p) for p in sources.presets()})


def _studies(preset: str, sources: Sources) -> str:
  return studies_table(sources.plan(preset))


def _claims(directory: str, sources: Sources) -> str:
  return claims_table(sources.report(directory)[0])


def _headline(directory: str, sources: Sources) -> str:
  return headline(sources.report(directory)[0])


def _criteria(directory: str, sources: Sources) -> str:
  return criteria_table(sources.report(directory)[0])


def _run_summary(directory: str, sources: Sources) -> str:
  return run_summary(*sources.report(directory))


def _phases(directory: str, sources: Sources) -> str:
  return phase_table(sources.report(directory)[1])


def _include(path: str, sources: Sources) -> str:
  return include(sources.text(path))


def _peak_rss(path: str, sources: Sources) -> str:
  return peak_rss_table(sources.json(path))


# name -> (whether it takes a source, renderer(source, sources))
_RENDERERS = {
    'metrics': (False, _metrics),
    'presets': (False, _presets),
    'studies': (True, _studies),
    'claims': (True, _claims),
    'headline': (True, _headline),
    'criteria': (True, _criteria),
    'run-summary': (True, _run_summary),
    'phases': (True, _phases),
    'include': (True, _include),
    'peak-rss': (True, _peak_rss),
}
