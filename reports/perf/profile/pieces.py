"""The rounds of the old engine (main at cd39451: one call per piece), timed per piece: python pieces.py m"""
import sys, time, statistics, collections
import numpy as np
import tensorflow as tf
from tff_localsgd import config as config_lib, data as data_lib, models, process, engines
from tff_localsgd.engines import inprocess
from tff_localsgd.engines import tf_graph

m = int(sys.argv[1])
from common import suite_round
config, data, spec, values = suite_round(m)
proc = process.LocalSGDProcess(spec, config, data.input_shape, data.output_dim)
acc = collections.defaultdict(float); cnt = collections.Counter()
orig = tf_graph.TFGraph.__call__
names = {}
def timed(self, *flat):
  tick = time.perf_counter(); out = orig(self, *flat); acc[names.get(id(self), '?')] += time.perf_counter() - tick; cnt[names.get(id(self), '?')] += 1; return out
tf_graph.TFGraph.__call__ = timed
with engines.engine(config) as ctx:
  engines.prepare(ctx, [proc.iterative_process.next])
  runner_key = (id(proc.iterative_process.next), ctx.device)
  w = proc.initialize()
  import gc
  for o in gc.get_objects():
    if isinstance(o, inprocess.MapReduceRound):
      for nm in ('prepare', 'work', 'zero', 'accumulate', 'report', 'update'):
        names[id(getattr(o, nm))] = nm
      mr = o
  print('work graph ops', len(mr.work._fn.graph.get_operations()), 'num leaves acc', len(mr.zero()), 'work results', mr.work.num_results)
  w, _ = proc.next(w, values(0))
  acc.clear(); cnt.clear()
  total = 0
  R = 30
  for t in range(1, R + 1):
    v = values(t); tick = time.perf_counter(); w, out = proc.next(w, v); total += time.perf_counter() - tick
  print(m, 'round ms', 1e3 * total / R)
  for k in acc: print('  ', k, 'ms/round', round(1e3 * acc[k] / R, 3), 'calls/round', cnt[k] / R)
  print('  outside graphs ms/round', round(1e3 * (total - sum(acc.values())) / R, 3))
