"""Where a result came from: code version, software, hardware."""

import os
import platform
import subprocess


def _run(cmd, cwd=None) -> str:
  try:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                          timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return ''


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown'


def _gpus() -> list:
  """GPU model and driver, from nvidia-smi when there is one."""
  out = _run(['nvidia-smi', '--query-gpu=name,driver_version',
              '--format=csv,noheader'])
  return [line.strip() for line in out.splitlines() if line.strip()]


def versions() -> dict:
  """The versions of Python and the numerical stack in this process."""
  import numpy as np  # imported here: the report need not load TF eagerly
  import tensorflow as tf
  import tensorflow_federated as tff
  return dict(python=platform.python_version(), tensorflow=tf.__version__,
              tensorflow_federated=tff.__version__, numpy=np.__version__)


def collect(repo_dir: str) -> dict:
  """Provenance of the current process: git, image, versions, hardware."""
  commit = _run(['git', 'rev-parse', 'HEAD'], cwd=repo_dir) or os.environ.get(
      'TFF_LOCALSGD_COMMIT', 'unknown')
  dirty = bool(_run(['git', 'status', '--porcelain', '--untracked-files=no'],
                    cwd=repo_dir))
  return {
      'git_commit': commit,
      'git_dirty': dirty,
      'container_image': os.environ.get('TFF_LOCALSGD_IMAGE', 'none'),
      **versions(),
      'cpu': _cpu_model(),
      'cpu_cores': os.cpu_count(),
      'gpus': _gpus() or ['none'],
      'platform': platform.platform(),
  }
