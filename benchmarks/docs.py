"""Rewrites the generated blocks of README.md and docs/*.md, or checks them.

  python -m benchmarks.docs           rewrite every stale block
  python -m benchmarks.docs --check   exit 1 naming each stale block

A block is `<!-- generated: NAME [SOURCE] -->` ... `<!-- end generated -->`
(tff_localsgd/docs_blocks.py renders each NAME). Its source is read relative
to --root: a report directory's results.json and suite.json, a Markdown
artifact, or a preset of tff_localsgd/suite.py. A missing or unreadable
source, or a marker that does not pair, exits 2 naming the file.
"""

import dataclasses
import glob
import json
import os

from absl import app
from absl import flags

from benchmarks import flags as flag_defs
from tff_localsgd import docs_blocks
from tff_localsgd import files
from tff_localsgd import suite

flags.DEFINE_bool('check', False, 'change nothing; exit 1 naming every stale '
                  'block')
flags.DEFINE_string('root', os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'the repository: README.md, docs/ and the '
    'sources the blocks name are read relative to it')
FLAGS = flags.FLAGS


class DiskSources:
  """docs_blocks.Sources read from the repository at `root`."""

  def __init__(self, root: str):
    self.root = root

  def text(self, path: str) -> str:
    try:
      with open(os.path.join(self.root, path), encoding='utf-8') as f:
        return f.read()
    except OSError as e:
      raise docs_blocks.BlockError(f'source {path}: {e.strerror}') from e

  def json(self, path: str):
    try:
      return json.loads(self.text(path))
    except json.JSONDecodeError as e:
      raise docs_blocks.BlockError(f'source {path}: {e}') from e

  def report(self, directory: str) -> tuple:
    """(results.json, suite.json) of a report directory."""
    return tuple(self.json(os.path.join(directory, name))
                 for name in ('results.json', 'suite.json'))

  def plan(self, preset: str) -> list:
    if preset not in suite.PRESETS:
      raise docs_blocks.BlockError(f'source {preset!r} is no preset; one of '
                                   f'{", ".join(suite.PRESETS)}')
    return suite.plan(preset)

  def presets(self) -> tuple:
    return suite.PRESETS


def document_paths(root: str) -> list:
  """README.md and docs/*.md, relative to root."""
  found = [os.path.relpath(p, root)
           for p in sorted(glob.glob(os.path.join(root, 'docs', '*.md')))]
  return ['README.md'] + found


@dataclasses.dataclass(frozen=True)
class Document:
  path: str  # relative to the root
  stale: tuple  # docs_blocks.Block whose body differs from its rendering
  fresh: str  # the text with every block rendered


def read_document(path: str, sources: DiskSources) -> Document:
  """A document and what its blocks should hold; BlockError on bad input."""
  text = sources.text(path)
  found = docs_blocks.blocks(text)
  rendered = [docs_blocks.render(block, sources) for block in found]
  stale = tuple(b for b, body in zip(found, rendered) if b.body != body)
  return Document(path, stale, docs_blocks.rewrite(text, rendered))


def main(argv):
  if len(argv) > 1:
    flag_defs.exit_bad_input(f'unexpected arguments {argv[1:]}')
  sources = DiskSources(FLAGS.root)
  documents = []
  for path in document_paths(FLAGS.root):  # every source read before writing
    try:
      documents.append(read_document(path, sources))
    except docs_blocks.BlockError as e:
      flag_defs.exit_bad_input(f'{path}: {e}')
  for doc in documents:
    if doc.stale and not FLAGS.check:
      files.atomic_write(os.path.join(FLAGS.root, doc.path), doc.fresh)
    for block in doc.stale:
      done = 'is stale' if FLAGS.check else 'rewritten'
      print(f'{doc.path}:{block.line}: block {block.label} {done}')
  if FLAGS.check and any(doc.stale for doc in documents):
    print('run `python -m benchmarks.docs` to regenerate them')
    return 1
  return 0


if __name__ == '__main__':
  app.run(main, flags_parser=flag_defs.parse_flags)
