"""Interleaved A/B of round variants in one process: python ab.py m VARIANT... ; VARIANT = name:ENV=1,ENV2=0"""
import sys, time, statistics, os, gc
import numpy as np
import tensorflow as tf
from tff_localsgd import config as config_lib, data as data_lib, models, process, engines
from tff_localsgd.engines import inprocess

m = int(sys.argv[1]); R = int(os.environ.get('R', 30)); K = int(os.environ.get('K', 5))
specs = sys.argv[2:]
from common import suite_round
config, data, spec, values = suite_round(m)
def env(s):
  for kv in filter(None, s.split(',')):
    k, v = kv.split('='); os.environ[k] = v
variants = {}
with engines.engine(config) as ctx:
  for sp in specs:
    name, e = sp.split(':') if ':' in sp else (sp, '')
    if name.startswith('plain'):
      continue
    env(e)
    proc = process.LocalSGDProcess(spec, config, data.input_shape, data.output_dim)
    engines.prepare(ctx, [proc.iterative_process.next])
    def fn(w, v, proc=proc, e=e):
      env(e); return proc.next(w, v)
    variants[name] = fn
  w0 = proc.initialize()
  if any(sp.startswith('plain') for sp in specs):
    exec(open('reports/perf/profile/extra_plain.py').read())
    variants = {k: v for k, v in variants.items() if k in [s.split(':')[0] for s in specs]}
  ws = {k: w0 for k in variants}; ts = {k: [] for k in variants}
  for t in range(R + 1):
    v = values(t)
    for k, fn in variants.items():
      tick = time.perf_counter(); out = fn(ws[k], v); dt = time.perf_counter() - tick
      if t: ts[k].append(dt)
      ws[k] = out[0]
  ref = list(variants)[0]
  for k in variants:
    same = all(np.array_equal(a, b) for a, b in zip(ws[k], ws[ref]))
    maxdiff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(ws[k], ws[ref]))
    print(f'm={m} {k:18s} median {1e3*statistics.median(ts[k]):8.3f} ms  min {1e3*min(ts[k]):8.3f}  ={ref}: {same} maxdiff {maxdiff:.3g}')
