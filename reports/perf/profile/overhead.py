"""Where the Python side of a fused round goes: python overhead.py m ENV"""
import sys, os, time, statistics, gc
import numpy as np, tensorflow as tf
for kv in filter(None, sys.argv[2].split(',')):
  k, v = kv.split('='); os.environ[k] = v
from tff_localsgd import config as config_lib, data as data_lib, models, process, engines
from tff_localsgd.engines import inprocess
from tff_localsgd.engines import tf_graph
m = int(sys.argv[1])
from common import suite_round
config, data, spec, values = suite_round(m)
proc = process.LocalSGDProcess(spec, config, data.input_shape, data.output_dim)
with engines.engine(config) as ctx:
  engines.prepare(ctx, [proc.iterative_process.next])
  w = proc.initialize(); w, _ = proc.next(w, values(0))
  mr = [o for o in gc.get_objects() if isinstance(o, inprocess.MapReduceRound)][0]
  fn = mr._call(4, True, True)
  T = {k: [] for k in ('proc.next', 'mr.__call__', 'flatten+convert', 'fused call', 'unflatten(.numpy)', 'fused call (tensors in, tensors out)')}
  for t in range(1, 60):
    v = values(t)
    tick = time.perf_counter(); w2, out = proc.next(w, v); T['proc.next'].append(time.perf_counter() - tick)
    tick = time.perf_counter(); mr(w, v); T['mr.__call__'].append(time.perf_counter() - tick)
    tick = time.perf_counter()
    flat = [tf.convert_to_tensor(a) for a in tf_graph.flatten(w, mr.parameter_type[0])]
    for c in v: flat.extend(tf.convert_to_tensor(a) for a in tf_graph.flatten(c, mr.parameter_type[1].member))
    T['flatten+convert'].append(time.perf_counter() - tick)
    tick = time.perf_counter(); res = fn(*flat); T['fused call'].append(time.perf_counter() - tick)
    tick = time.perf_counter(); tf_graph.unflatten(mr.result_type, iter(res)); T['unflatten(.numpy)'].append(time.perf_counter() - tick)
    tick = time.perf_counter(); res = fn(*flat); T['fused call (tensors in, tensors out)'].append(time.perf_counter() - tick)
    w = w2
  for k, v in T.items(): print(f'm={m} {k:40s} median {1e3*statistics.median(v):7.3f} ms  min {1e3*min(v):7.3f}')
