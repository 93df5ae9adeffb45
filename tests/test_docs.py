"""The generated blocks of README.md and docs/ (tff_localsgd/docs_blocks.py,
benchmarks/docs.py): the committed docs are fresh, a stale block fails the
check, every renderer against values worked out by hand, and the Docker
commands the container check runs are in docs/docker.md."""

import json
import math
import os
import re
import subprocess
import sys

import pytest

from benchmarks import docs as docs_binary
from tff_localsgd import docs_blocks
from tff_localsgd import metrics
from tff_localsgd import suite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = os.path.join(ROOT, 'tests', 'container', 'commands.sh')


def run_docs(*args):
  return subprocess.run([sys.executable, '-m', 'benchmarks.docs', *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)


def claim(cid, verdict, text='a claim', criterion='a criterion'):
  return dict(id=cid, verdict=verdict, claim=text, criterion=criterion)


def results(claims, statuses=('completed',)):
  return dict(
      preset='quick', epsilon=0.01, claims=claims,
      trials=[dict(status=s) for s in statuses],
      determinism=dict(trial='S1/all/t_seed-0', identical=True),
      provenance=dict(git_commit='0123456789abcdef', git_dirty=False,
                      python='3.11.7', tensorflow='2.14.1',
                      tensorflow_federated='0.87.0', cpu='a CPU', cpu_cores=2,
                      gpus=['none']))


SUITE = dict(planned_trials=5, wall_time_s=3725.4, parallel=2,
             core_s=7450.8, cpu_s=7000.2,
             trial_s={'S1': 100.0, 'S2': 50.0},
             phases_s={'S1': dict(trials=3, processes=1, rounds_s=60.0,
                                  diagnostics_s=20.0, writing_s=5.0),
                       'S2': dict(trials=2, processes=0, rounds_s=10.0,
                                  writing_s=4.0)})


# --- the markers ---------------------------------------------------------

TEXT = ('intro\n<!-- generated: claims reports/x -->\nold\n'
        '<!-- end generated -->\nmiddle `<!-- generated: metrics -->` '
        'quoted\n<!-- generated: metrics -->\n<!-- end generated -->\nend\n')


def test_blocks_are_found_and_rewritten_in_place():
  found = docs_blocks.blocks(TEXT)
  assert [(b.name, b.source, b.line, b.body) for b in found] == [
      ('claims', 'reports/x', 2, 'old\n'), ('metrics', None, 6, '')]
  new = docs_blocks.rewrite(TEXT, ['A\nB\n', 'C\n'])
  assert new == TEXT.replace('old\n', 'A\nB\n').replace(
      'metrics -->\n<!--', 'metrics -->\nC\n<!--')
  assert [b.body for b in docs_blocks.blocks(new)] == ['A\nB\n', 'C\n']


@pytest.mark.parametrize('text, line', [
    ('<!-- generated: metrics -->\nx\n', 1),
    ('x\n<!-- end generated -->\n', 2),
    ('<!-- generated: metrics -->\n<!-- generated: metrics -->\n', 2)])
def test_unpaired_markers_are_refused_naming_the_line(text, line):
  with pytest.raises(docs_blocks.BlockError, match=f'^line {line}:'):
    docs_blocks.blocks(text)


class NoSources:
  """Sources for renderers that must not read any."""


@pytest.mark.parametrize('marker, problem', [
    ('<!-- generated: nonsense -->', "unknown block 'nonsense'"),
    ('<!-- generated: metrics reports/x -->', 'takes no source'),
    ('<!-- generated: claims -->', 'takes a source')])
def test_bad_blocks_are_refused(marker, problem):
  block, = docs_blocks.blocks(marker + '\n<!-- end generated -->\n')
  with pytest.raises(docs_blocks.BlockError, match=problem):
    docs_blocks.render(block, NoSources())


class ReportSources:
  """Sources whose one report is `results` and SUITE."""

  def __init__(self, results_dict):
    self.results = results_dict

  def report(self, directory):
    return self.results, SUITE


def test_an_artifact_of_another_shape_names_the_missing_key():
  block, = docs_blocks.blocks('\n\n<!-- generated: run-summary r -->\n'
                              '<!-- end generated -->\n')
  broken = results([claim('C1', 'PASS')])
  del broken['determinism']
  with pytest.raises(docs_blocks.BlockError,
                     match="^line 3: block run-summary r: its source has no "
                           "'determinism'$"):
    docs_blocks.render(block, ReportSources(broken))


# --- the renderers, against values worked out by hand ---------------------

def test_claims_of_any_id_and_verdict_in_the_reports_order():
  claims = [claim('C20', 'INCONCLUSIVE'), claim('new.name', 'PASS', 'a|b'),
            claim('C1', 'SKIPPED'), claim('C2', 'PASS')]
  assert docs_blocks.verdict_counts(claims) == (
      '2 PASS, 1 INCONCLUSIVE, 1 SKIPPED')
  table = docs_blocks.claims_table(results(claims)).splitlines()
  assert table[2:] == ['| C20 | **INCONCLUSIVE** | a claim |',
                       '| new.name | **PASS** | a\\|b |',
                       '| C1 | **SKIPPED** | a claim |',
                       '| C2 | **PASS** | a claim |']
  assert docs_blocks.criteria_table(results(claims)).splitlines()[3] == (
      '| new.name | a\\|b | a criterion |')


def test_the_headline_block_quotes_the_reports_sentence():
  block, = docs_blocks.blocks('\n\n<!-- generated: headline r -->\n'
                              '<!-- end generated -->\n')
  given = dict(results([claim('C1', 'PASS')]), headline='Within 5%.')
  assert docs_blocks.render(block, ReportSources(given)) == 'Within 5%.\n'
  with pytest.raises(docs_blocks.BlockError, match="has no 'headline'"):
    docs_blocks.render(block, ReportSources(results([claim('C1', 'PASS')])))


def test_run_summary_quotes_the_artifacts():
  text = docs_blocks.run_summary(
      results([claim('C1', 'PASS'), claim('C2', 'FAIL')],
              statuses=('completed', 'failed', 'completed')), SUITE)
  assert 'commit `0123456`;' in text
  assert '- 3 of 5 planned trials on disk (2 completed, 1 failed)' in text
  # 3725.4 s = 62 * 60 + 5.4 s
  assert '3725 s (62 min 5 s) of wall time, 2 at a time' in text
  assert '7451 core-seconds' in text and '7000 CPU seconds' in text
  assert '- claims: 1 PASS, 1 FAIL' in text
  assert 'bit-identical' in text
  dirty = results([])
  dirty['provenance']['git_dirty'] = True
  dirty['determinism']['identical'] = False
  text = docs_blocks.run_summary(dirty, SUITE)
  assert 'uncommitted changes' in text and 'DIFFER' in text


def test_phase_table_sums_and_shares():
  lines = docs_blocks.phase_table(SUITE).splitlines()
  assert lines[0] == ('| study | trials | trial-s | diagnostics | rounds | '
                      'writing | rounds + diagnostics |')
  # S1: (60 + 20) / 100; S2: 10 / 50; all: 90 / 150
  assert lines[2] == '| S1 | 3 | 100 | 20 | 60 | 5 | 80% |'
  assert lines[3] == '| S2 | 2 | 50 | 0 | 10 | 4 | 20% |'
  assert lines[4] == '| all | 5 | 150 | 20 | 70 | 9 | 60% |'


def test_presets_and_studies_from_constructed_plans():
  wide = suite.StudySpec('S1', 'widths', dict(dataset='synthetic', num_examples=8,
                                   eps=0.1), dict(width=[64, 32]),
              (dict(label='a'), dict(label='b', width=16, seeds=3)), 2)
  real = suite.StudySpec('S2', 'real', dict(dataset='digits', num_examples=400,
                                 width=128, eps=0.1), {}, (), 1)
  plan = [(wide, 'a', [0] * 4), (wide, 'b', [0] * 6), (real, 'all', [0])]
  assert docs_blocks.presets_table({'p': plan}).splitlines()[2] == (
      '| p | 2 | 11 | 32, 64, 128 | 8 | 1, 2, 3 | 0.1 |')
  assert docs_blocks.studies_table(plan).splitlines()[2:] == [
      '| S1 | widths | width = 32, 64; groups a, b | 2 (b 3) | 10 |',
      '| S2 | real | - | 1 | 1 |']


@pytest.mark.parametrize('preset', suite.PRESETS)
def test_presets_table_counts_the_suites_trials(preset):
  # Counted from the studies' definitions, not from the plan's expansion.
  # A group may cross its own grid (E3's extra-n group).
  expected = sum(spec.seeds_for(label) * math.prod(
      len(v) for v in spec.grid_for(label).values())
                 for spec in suite.suite(preset) for label, _ in spec.groups())
  plans = {preset: suite.plan(preset)}
  row = docs_blocks.presets_table(plans).splitlines()[2].split(' | ')
  assert row[0] == f'| {preset}' and int(row[2]) == expected


def test_include_drops_title_and_images():
  md = '# Title\n\nGenerated by `x`.\n\n\n![p](p.png)\n\n| a |\n|---|\n'
  assert docs_blocks.include(md) == 'Generated by `x`.\n\n| a |\n|---|\n'


def perf_cell(width, setting, **more):
  return dict(width=width, num_clients=10, local_steps=5, setting=setting,
              **more)


def test_peak_rss_by_row_and_setting():
  cells = [perf_cell(256, 'native', peak_rss_gb=1.234),
           perf_cell(64, 'native', peak_rss_gb=0.5),
           perf_cell(64, 'plain_tf', error=['TypeError'])]
  assert docs_blocks.peak_rss_table(cells).splitlines() == [
      '| m | N | K | native | plain_tf |', '|---|---|---|---|---|',
      '| 64 | 10 | 5 | 0.50 | failed |', '| 256 | 10 | 5 | 1.23 | - |']


def test_duration():
  assert docs_blocks.duration(59.4) == '59 s'
  assert docs_blocks.duration(3600) == '3600 s (60 min 0 s)'


# --- the binary on the committed docs and on constructed ones ----------------

def test_committed_docs_are_fresh():
  done = run_docs('--check')
  assert done.returncode == 0, done.stdout + done.stderr


def test_committed_report_is_the_suites_plan():
  # A report made by other code than suite.py's quick plan is stale.
  with open(os.path.join(ROOT, 'reports', 'quick-cpu', 'suite.json')) as f:
    committed = json.load(f)
  planned = sum(len(trials) for _, _, trials in suite.plan('quick'))
  assert committed['planned_trials'] == planned, (
      'reports/quick-cpu was planned with a different suite: make reproduce')


def test_every_path_the_docs_name_exists():
  # `tff_localsgd/x.py`, `reports/perf/PERF.md`, ...: a renamed or moved
  # file leaves its old name in the docs otherwise.
  pattern = re.compile(
      r'`((?:tff_localsgd|benchmarks|tests|reports|docker|docs)/[^`\s<*]*)`')
  missing = []
  for doc in docs_binary.document_paths(ROOT):
    with open(os.path.join(ROOT, doc)) as f:
      missing += [f'{doc}: {m}' for m in pattern.findall(f.read())
                  if not os.path.exists(os.path.join(ROOT, m))]
  assert not missing


def write_tree(root, readme_block, doc_block):
  (root / 'docs').mkdir()
  (root / 'reports' / 'r').mkdir(parents=True)
  (root / 'reports' / 'r' / 'results.json').write_text(
      json.dumps(results([claim('C1', 'PASS'), claim('C21', 'FAIL')])))
  (root / 'reports' / 'r' / 'suite.json').write_text(json.dumps(SUITE))
  (root / 'README.md').write_text(
      f'# x\n<!-- generated: metrics -->\n{readme_block}'
      '<!-- end generated -->\n')
  (root / 'docs' / 'a.md').write_text(
      f'a\n\n<!-- generated: claims reports/r -->\n{doc_block}'
      '<!-- end generated -->\ntail\n')


def test_a_stale_block_fails_the_check_and_is_rewritten(tmp_path):
  write_tree(tmp_path, metrics.markdown_table(), '| C1 | **PASS** | old |\n')
  before = (tmp_path / 'docs' / 'a.md').read_text()
  done = run_docs('--check', f'--root={tmp_path}')
  assert done.returncode == 1, done.stdout + done.stderr
  assert 'docs/a.md:3: block claims reports/r is stale' in done.stdout
  assert 'README.md' not in done.stdout  # its block is fresh
  assert (tmp_path / 'docs' / 'a.md').read_text() == before  # untouched

  done = run_docs(f'--root={tmp_path}')
  assert done.returncode == 0, done.stderr
  assert 'docs/a.md:3: block claims reports/r rewritten' in done.stdout
  text = (tmp_path / 'docs' / 'a.md').read_text()
  assert '| C21 | **FAIL** | a claim |\n<!-- end generated -->\ntail\n' in text
  assert run_docs('--check', f'--root={tmp_path}').returncode == 0


def test_a_missing_source_exits_2_and_writes_nothing(tmp_path):
  write_tree(tmp_path, 'stale\n', '')
  (tmp_path / 'docs' / 'b.md').write_text(
      '<!-- generated: include reports/none.md -->\n<!-- end generated -->\n')
  done = run_docs(f'--root={tmp_path}')
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [
      'error: docs/b.md: source reports/none.md: No such file or directory']
  assert 'stale' in (tmp_path / 'README.md').read_text()  # not rewritten


# --- the container check's commands ---------------------------------------

def check_doc(doc=''):
  return subprocess.run(
      ['bash', '-c', f'source {COMMANDS}; check_doc {doc}'],
      capture_output=True, text=True, timeout=60)


def test_docker_doc_holds_the_container_checks_commands():
  done = check_doc()
  assert done.returncode == 0, done.stdout
  listed = subprocess.run(
      ['bash', '-c', f'source {COMMANDS}; printf "%s\\n" "${{DOC_CMDS[@]}}"'],
      capture_output=True, text=True, check=True).stdout.splitlines()
  assert len(listed) == 8 and len(set(listed)) == 8
  with open(os.path.join(ROOT, 'docs', 'docker.md')) as f:
    lines = f.read().splitlines()
  assert all(cmd in lines for cmd in listed)


def test_a_changed_command_fails_the_container_check(tmp_path):
  with open(os.path.join(ROOT, 'docs', 'docker.md')) as f:
    text = f.read()
  changed = tmp_path / 'docker.md'
  changed.write_text(text.replace('--preset=smoke\n', '--preset=smoke  # x\n'))
  done = check_doc(str(changed))
  assert done.returncode == 1
  assert done.stdout.splitlines() == [
      f'not in {changed} verbatim: docker run --rm -v "$PWD/out:/out" --user '
      '"$(id -u):$(id -g)" tff-localsgd reproduce --preset=smoke']
