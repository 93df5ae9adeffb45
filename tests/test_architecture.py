"""The import rules of docs/architecture.md, kept by tests: the floors of
the package, the live run without the analysis, and the modules a report
needs without TensorFlow (by walking the imports, and in a process where
`import tensorflow` fails)."""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = 'tff_localsgd'

# Each module of the package on one floor. A module may import its own
# floor and those listed under ALLOWED; nothing above.
FLOORS = {
    # Plain data and pure math: the config, the metrics table, the result
    # types, outcomes against eps F_0, the atomic writer.
    'base': ('config', 'files', 'metrics', 'outcomes', 'results'),
    # A run's files: the one owner of a run directory, its readers and
    # writers; board is the TensorBoard edge, recording the live writer.
    'record': ('recorders', 'rundir', 'board', 'recording'),
    # TensorFlow and TFF: data, models, the round, the diagnostics, the
    # engines, training (which yields results and writes nothing).
    'compute': ('data', 'models', 'local_update', 'packing', 'process',
                'stacking', 'stacked_training',
                'diagnostics', 'diagnostic_process', 'theory', 'engines',
                'engines.federated_graph', 'engines.inprocess',
                'engines.native', 'engines.remote', 'engines.tf_graph',
                'second_moment', 'training', 'worker_binary'),
    # The suite and a sweep as data: the plan and the trials on disk.
    'plan': ('suite', 'sweep', 'sweep.grid', 'sweep.records'),
    # Judging finished runs.
    'judge': ('analysis', 'analysis.calibration',
              'analysis.calibration_figures', 'analysis.claims',
              'analysis.claims.base', 'analysis.claims.federated',
              'analysis.claims.lazy', 'analysis.claims.prediction',
              'analysis.claims.threshold', 'analysis.figures',
              'analysis.fits', 'analysis.report', 'analysis.runs',
              'analysis.theory_section', 'analysis.theory_widths',
              'analysis.width_threshold', 'docs_blocks'),
    # Running things: one run (driver), trial workers, the sweep's pool and
    # HParams, the suite's reproduction and its budgets (each trial's
    # prediction), its report and provenance, the GPU self-check.
    'orchestrate': ('driver', 'trial_worker', 'sweep.hparams',
                    'sweep.processes', 'sweep.pool', 'reproduction',
                    'budgets', 'reporting', 'provenance', 'gpu_check'),
}
ALLOWED = {
    'base': {'base'},
    'record': {'base', 'record'},
    'compute': {'base', 'compute'},
    'plan': {'base', 'record', 'plan'},
    'judge': {'base', 'record', 'plan', 'judge'},
    'orchestrate': set(FLOORS),
}
# Only these import TensorFlow's edge: the report stays TF-free.
LIVE_RUN = ('driver', 'trial_worker', 'training', 'recording', 'process',
            'engines', 'diagnostic_process')
TF_FREE = ('results', 'metrics', 'rundir', 'recorders', 'config', 'files',
           'outcomes', 'suite', 'sweep.grid', 'sweep.records',
           'docs_blocks') + FLOORS['judge']
TENSORFLOW = ('tensorflow', 'tensorflow_federated')


def _path(module: str) -> str:
  base = os.path.join(ROOT, PACKAGE, *module.split('.'))
  return (os.path.join(base, '__init__.py') if os.path.isdir(base)
          else base + '.py')


def _is_module(module: str) -> bool:
  return os.path.exists(_path(module))


def imports(module: str):
  """(package modules, external top-level packages) that `module` imports
  anywhere in its file (a function's import counts), parents included
  (importing a.b runs a/__init__.py)."""
  tree = ast.parse(open(_path(module)).read())
  inner, outer = set(), set()
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [f'{node.module}.{a.name}' for a in node.names]
      names = [n if _is_module(n[len(PACKAGE) + 1:]) else node.module
               for n in names] if node.module.startswith(PACKAGE) else [
                   node.module]
    for name in names:
      if name == PACKAGE or name.startswith(PACKAGE + '.'):
        parts = name[len(PACKAGE) + 1:].split('.')
        inner.update('.'.join(parts[:i]) for i in range(1, len(parts) + 1))
      else:
        outer.add(name.split('.')[0])
  return inner, outer


def closure(module: str):
  """(package modules, external packages) imported transitively."""
  seen, outer, todo = set(), set(), [module]
  while todo:
    name = todo.pop()
    if name in seen:
      continue
    seen.add(name)
    inner, more = imports(name)
    outer |= more
    todo += sorted(inner - seen)
  return seen, outer


def floor_of(module: str) -> str:
  return next(floor for floor, members in FLOORS.items() if module in members)


def package_modules() -> list:
  found = []
  for directory, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
    rel = os.path.relpath(directory, os.path.join(ROOT, PACKAGE))
    prefix = '' if rel == '.' else rel.replace(os.sep, '.') + '.'
    for name in files:
      if name.endswith('.py'):
        stem = name[:-3]
        if stem == '__init__':
          if prefix:
            found.append(prefix[:-1])
        else:
          found.append(prefix + stem)
  return sorted(found)


def test_every_module_has_a_floor():
  placed = [m for members in FLOORS.values() for m in members]
  assert sorted(placed) == package_modules()
  assert len(set(placed)) == len(placed)


@pytest.mark.parametrize('module', package_modules())
def test_no_floor_imports_a_floor_above(module):
  inner, _ = imports(module)
  allowed = ALLOWED[floor_of(module)]
  above = sorted(m for m in inner if floor_of(m) not in allowed)
  assert not above, f'{module} ({floor_of(module)}) imports {above}'


@pytest.mark.parametrize('module', LIVE_RUN)
def test_the_live_run_imports_no_analysis(module):
  inner, _ = closure(module)
  assert not [m for m in inner if m.startswith('analysis')]


@pytest.mark.parametrize('module', TF_FREE)
def test_results_records_and_analysis_import_no_tensorflow(module):
  inner, outer = closure(module)
  assert not set(TENSORFLOW) & outer, (module, sorted(inner))
  assert 'board' not in inner and 'recording' not in inner


def test_the_walk_sees_tensorflow_where_it_is():
  """The import walk is not blind: it finds TF behind training and the
  TensorBoard edge, and the package's own import of a submodule."""
  assert 'tensorflow' in closure('training')[1]
  assert 'tensorflow' in closure('recording')[1]
  assert 'sweep.grid' in closure('suite')[0]


_BLOCKED = '''import sys
sys.modules['tensorflow'] = None
sys.modules['tensorflow_federated'] = None
import importlib
for name in sys.argv[1:]:
  importlib.import_module(name)
print('imported', len(sys.argv) - 1)
'''


def test_the_tf_free_modules_import_with_tensorflow_blocked():
  modules = [f'{PACKAGE}.{m}' for m in TF_FREE] + [
      f'{PACKAGE}.reporting', 'benchmarks.report']
  done = subprocess.run([sys.executable, '-c', _BLOCKED, *modules], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.split() == ['imported', str(len(modules))]


def test_blocking_tensorflow_does_block_it():
  done = subprocess.run([sys.executable, '-c', _BLOCKED,
                         f'{PACKAGE}.training'], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode != 0
  assert 'import of tensorflow halted' in done.stderr


# Modules longer than ~400 lines, at most as long as today, each to be
# split by role: the data (synthetic, real data sets with digits_binary,
# partitions) and the
# diagnostic computations (the lockstep round, the model's measures).
LONGER = {'data.py': 567, 'diagnostic_process.py': 504}


def test_no_module_is_over_400_lines_unless_named():
  for module in package_modules():
    rel = os.path.relpath(_path(module), os.path.join(ROOT, PACKAGE))
    lines = sum(1 for _ in open(_path(module)))
    assert lines <= LONGER.get(rel, 420), (rel, lines)
