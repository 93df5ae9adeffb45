"""Where a result came from: code version, container image, software,
hardware. Collected by the process that runs the suite (it has TensorFlow),
written to provenance.json, read back by the report.
"""

import os
import platform
import subprocess

import tensorflow as tf

from tff_localsgd import training


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


def _nvidia_driver() -> str:
  """The kernel driver's version line, readable without nvidia-smi."""
  try:
    with open('/proc/driver/nvidia/version') as f:
      return f.readline().strip()
  except OSError:
    return ''


def _gpus() -> list:
  """Each GPU with its driver: from nvidia-smi when there is one (a container
  run with --gpus gets it from the host), else the GPUs TensorFlow sees."""
  out = _run(['nvidia-smi', '--query-gpu=name,memory.total,driver_version',
              '--format=csv,noheader'])
  gpus = []
  for line in out.splitlines():
    fields = [f.strip() for f in line.split(',')]
    if len(fields) == 3:
      gpus.append(f'{fields[0]}, {fields[1]}, driver {fields[2]}')
  if gpus:
    return gpus
  driver = _nvidia_driver() or 'driver unknown'
  for device in tf.config.list_physical_devices('GPU'):
    details = tf.config.experimental.get_device_details(device)
    gpus.append(f'{details.get("device_name", device.name)}, '
                f'compute capability {details.get("compute_capability")}, '
                f'{driver}')
  return gpus


def _tf_build() -> str:
  """The CUDA and cuDNN versions TensorFlow was built against, or 'CPU'."""
  info = tf.sysconfig.get_build_info()
  if not info.get('is_cuda_build'):
    return 'CPU'
  return f'CUDA {info.get("cuda_version")}, cuDNN {info.get("cudnn_version")}'


def _git(repo_dir: str):
  """(commit, dirty): from git when repo_dir is a checkout; else from
  TFF_LOCALSGD_COMMIT, which the image sets at build time to
  `git describe --always --dirty --abbrev=40` (a '-dirty' suffix: built from
  a tree with uncommitted changes)."""
  commit = _run(['git', 'rev-parse', 'HEAD'], cwd=repo_dir)
  if commit:
    dirty = bool(_run(['git', 'status', '--porcelain',
                       '--untracked-files=no'], cwd=repo_dir))
    return commit, dirty
  commit = os.environ.get('TFF_LOCALSGD_COMMIT', '') or 'unknown'
  if commit.endswith('-dirty'):
    return commit[:-len('-dirty')], True
  return commit, 'unknown' if commit == 'unknown' else False


def collect(repo_dir: str) -> dict:
  """Provenance of the current process: git, image, versions, hardware."""
  commit, dirty = _git(repo_dir)
  out = {
      'git_commit': commit,
      'git_dirty': dirty,
      'container_image': os.environ.get('TFF_LOCALSGD_IMAGE', 'none'),
  }
  if os.environ.get('TFF_LOCALSGD_BASE_IMAGE'):
    out['container_base_image'] = os.environ['TFF_LOCALSGD_BASE_IMAGE']
  return {
      **out,
      **training.versions(),
      'tensorflow_build': _tf_build(),
      'cpu': _cpu_model(),
      'cpu_cores': os.cpu_count(),
      'gpus': _gpus() or ['none'],
      'platform': platform.platform(),
  }
