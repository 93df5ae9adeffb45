"""benchmarks.trial_worker for the sweep's tests: the real trial worker,
except that the trials $CHAOS names (name=action,name=action) misbehave, and
every trial it is asked for (each member of a stack) is appended to
$CHAOS_LAUNCHES as '<pid> <name>'.

  exit   prints 30 lines, then the process exits 7 (a crash)
  raise  prints 30 lines, then raises (a failing trial; the process lives)
  hang   starts `sleep 600`, writes its pid and ours to $CHAOS_PIDS, sleeps
"""

import os
import subprocess
import sys
import time

from absl import app

import benchmarks  # noqa: F401  (the binaries' environment, before TF)
from tff_localsgd import trial_worker


def _misbehave(action: str):
  for i in range(1, 31):
    print(f'line {i}')
  sys.stdout.flush()
  if action == 'exit':
    os._exit(7)
  if action == 'raise':
    raise RuntimeError('chaos: raise')
  sleeper = subprocess.Popen(['sleep', '600'])
  with open(os.environ['CHAOS_PIDS'], 'w') as f:
    f.write(f'{sleeper.pid} {os.getpid()}\n')
  time.sleep(600)


def chaos_trials(requests, stop, startup_s) -> list:
  """trial_worker.train_trials, after the misbehaviour of any member."""
  with open(os.environ['CHAOS_LAUNCHES'], 'a') as f:
    for request in requests:
      f.write(f'{os.getpid()} {request["name"]}\n')
  actions = dict(item.split('=') for item in
                 os.environ.get('CHAOS', '').split(',') if item)
  for request in requests:
    if request['name'] in actions:
      _misbehave(actions[request['name']])
  return trial_worker.train_trials(requests, stop, startup_s)


def main(argv):
  del argv
  return trial_worker.serve(chaos_trials)


if __name__ == '__main__':
  app.run(main)
