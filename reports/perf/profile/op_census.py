"""Op census of the fused round against plain_tf_clients (Session step stats): python op_census.py m"""
import sys, os, time, statistics, collections as _c, gc
import numpy as np, tensorflow as tf
from tff_localsgd import config as config_lib, data as data_lib, models, process, engines
from tff_localsgd.engines import inprocess
from tff_localsgd.engines import tf_graph
m = int(sys.argv[1]); K = 5
from common import suite_round
config, data, spec, values = suite_round(m)
def stats(fn, flat):
  feeds = {t.name: a for t, a in zip(fn.inputs, flat)}; outs = [t.name for t in fn.outputs]
  cnt = _c.Counter()
  with tf.compat.v1.Session(graph=fn.graph) as sess:
    sess.run(outs, feeds)
    md = tf.compat.v1.RunMetadata()
    sess.run(outs, feeds, options=tf.compat.v1.RunOptions(trace_level=3), run_metadata=md)
    for dev in md.step_stats.dev_stats:
      for ns in dev.node_stats:
        op = ns.timeline_label.split(' = ')[1].split('(')[0] if ' = ' in ns.timeline_label else ns.node_name
        cnt[op] += 1
  return cnt
from benchmarks import throughput
rt = throughput.plain_round_fn(spec, config, data.client_x, data.client_y, stacked=False)
cf = rt.get_concrete_function([tf.TensorSpec(w.shape, tf.float32) for w in spec.initial_weights])
plain = stats(cf, list(spec.initial_weights) + [c.numpy() for c in cf.captured_inputs])
proc = process.LocalSGDProcess(spec, config, data.input_shape, data.output_dim)
v = values(0)
with engines.engine(config) as ctx:
  engines.prepare(ctx, [proc.iterative_process.next])
  proc.next(spec.initial_weights, v)
  mr = [o for o in gc.get_objects() if isinstance(o, inprocess.MapReduceRound)][0]
  fn = mr._call(4, True, True)
  flat = [np.asarray(a) for a in tf_graph.flatten(spec.initial_weights, mr.parameter_type[0])]
  for c in v: flat += [np.asarray(a) for a in tf_graph.flatten(c, mr.parameter_type[1].member)]
  ours = stats(fn, flat)
print('ours', sum(ours.values()), 'plain', sum(plain.values()))
for op in sorted(set(ours) | set(plain), key=lambda o: -ours[o]):
  print(f'  {op:25s} ours {ours[op]:4d}  plain {plain[op]:4d}')
