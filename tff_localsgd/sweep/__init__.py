"""Sweeps: a grid of experiments, each trained as `benchmarks.train` would
into a directory of its own, in long-lived trial processes (or a fresh
process per trial), resumable, with TensorBoard HParams summaries.

  from tff_localsgd.sweep import grid, pool
  trials = grid.expand_grid({'width': ['64', '256']}, seeds=[0, 1],
                            base_flags={})
  results = pool.run_sweep(trials, 'runs/demo', parallel=2)

One module per role:
  grid        the trials of a grid x seeds, validated before anything runs
  records     trial.json, the final/* metrics and phases read back
              (sweep_index); what a finished trial is
  hparams     the TensorBoard HParams experiment and sessions
  processes   the processes trials run in (a trial worker or a
              benchmarks.train process each), their launch and signals
  pool        running the trials, `parallel` at a time, SIGINT/SIGTERM

Output under the sweep directory:
  logs/<trial>.log                the trial's stdout and stderr
  logs/processes.log              trial processes' output between trials
  <trial>/                        the training binary's run directory
                                  (tff_localsgd/rundir.py) with trial.json
                                  and the trial's HParams session

The package imports none of its modules, so the grid and the records are
read without TensorFlow (the suite, the report); hparams and pool import it.
"""
