"""A sweep's long-lived trial process: trains the trials tff_localsgd/sweep/
sends on stdin, one after another, each into its run directory as
`benchmarks.train --overwrite` would (protocol: tff_localsgd/trial_worker.py).

  python -m benchmarks.trial_worker    # started by the sweep, not by hand
"""

from absl import app
import tensorflow as tf  # noqa: F401  (imported once, before any trial)

from tff_localsgd import trial_worker


def main(argv):
  del argv
  return trial_worker.serve()


if __name__ == '__main__':
  app.run(main)
