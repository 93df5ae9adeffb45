"""`initialize` (w^0 of a fresh seed) on the native worker against in-process
(federated_graph.py), taking turns in one process; common.py's shape. Each
call is a new seed's computation, as each trial's is (w^0 is its constant).

    PYTHONPATH=.:reports/perf/profile python reports/perf/profile/initialize.py 2048 [calls]
"""
import dataclasses
import statistics
import sys
import time

import common
from tff_localsgd import models
from tff_localsgd import process
from tff_localsgd.engines import inprocess


def main(width: int, calls: int):
  config, data, spec, _ = common.suite_round(width)
  proc = process.LocalSGDProcess(spec, config, data.input_shape,
                                 data.output_dim)
  seeds = iter(range(100, 100 + 2 * calls + 2))

  def fresh():
    seed_spec = models.build_model(
        dataclasses.replace(config, seed=next(seeds)), data.input_shape,
        data.output_dim)
    return proc.with_initial(seed_spec).iterative_process.initialize

  times = {'native': [], 'inprocess': []}
  with inprocess.inprocess_engine('/CPU:0') as context:
    runs = {'native': lambda comp: context.fallback.invoke(comp, None),
            'inprocess': lambda comp: context.invoke(comp, None)}
    for run in runs.values():
      run(fresh())  # the first call of each pays the start-up
    for _ in range(calls):
      for name, run in runs.items():
        comp = fresh()
        tick = time.perf_counter()
        run(comp)
        times[name].append(time.perf_counter() - tick)
  print(f'm = {width}, {calls} fresh seeds each, taking turns')
  for name, values in times.items():
    print(f'  {name:10s} {statistics.median(values):.4f} s '
          f'({min(values):.4f})')


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 5)
