"""What the kernel says of a process, for the benchmarks' memory figures."""


def peak_rss_bytes(pid) -> int | None:
  """VmHWM: the high-water mark of the process's resident set, or None if it
  is gone. pid may be 'self'."""
  try:
    with open(f'/proc/{pid}/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) * 1024
  except OSError:
    return None
  return None
