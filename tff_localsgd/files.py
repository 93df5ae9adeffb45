"""The one atomic file writer, and its append (no TensorFlow, so data.py can
use it too)."""

import os
import secrets


def atomic_write(path: str, content):
  """Writes `content` to `path` so that readers see the old or the new file.

  content: a str, or a function that writes to a binary file object. The file
  gets the mode open() would give it, 0o666 less the umask.
  """
  fd, tmp = _create_beside(path)
  try:
    with os.fdopen(fd, 'w' if isinstance(content, str) else 'wb') as f:
      if isinstance(content, str):
        f.write(content)
      else:
        content(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def append_line(path: str, line: str):
  """Appends `line` (ending in a newline) to the existing file at `path` with
  one write(2) on an O_APPEND descriptor, then fsync: a reader sees the file
  with the whole line or without it, as atomic_write would leave it."""
  data = line.encode()
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
  try:
    if os.write(fd, data) != len(data):
      raise OSError(f'{path}: short write')
    os.fsync(fd)
  finally:
    os.close(fd)


def _create_beside(path: str):
  """(fd, name) of a new hidden temporary file in path's directory.

  Unlike tempfile.mkstemp (always 0o600) it asks for 0o666 and lets the
  kernel apply the umask, which reading the umask would race with threads.
  """
  directory, name = os.path.split(os.path.abspath(path))
  flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
  while True:
    tmp = os.path.join(directory, f'.{name}.{secrets.token_hex(4)}.tmp')
    try:
      return os.open(tmp, flags, 0o666), tmp
    except FileExistsError:
      continue  # another writer drew the same name
