"""The one place flags are defined.

Every ExperimentConfig field is a flag of the same name, with the dataclass
default, so a flag, a config field, a config.json key and a README entry are
one word. Values are checked by ExperimentConfig.validate(), not by absl, so
every bad value gets the same treatment: exit 2, one line naming the flag.
"""

import dataclasses
import sys

from absl import flags

from tff_localsgd import config as config_lib

FLAGS = flags.FLAGS

_HELP = {
    'dataset': 'one of ' + ', '.join(config_lib.DATASETS),
    'num_examples': 'synthetic: n; real data: training subsample (0 = all)',
    'input_dim': 'synthetic: input dimension d (points on the unit sphere)',
    'output_dim': 'synthetic: output dimension c',
    'target': 'synthetic targets: teacher (random ReLU net) or noise',
    'data_dir': 'cache of <name>.npz files for mnist, fashion_mnist, cifar10',
    'num_clients': 'N, the number of clients',
    'partition': 'one of ' + ', '.join(config_lib.PARTITIONS),
    'dirichlet_alpha': 'label-skew concentration for --partition=dirichlet',
    'shards_per_client': 'label shards per client for --partition=shards',
    'model': 'mlp (the theory) or cnn (image data)',
    'depth': 'L: number of m x m hidden weight matrices (mlp)',
    'width': 'm: hidden width (mlp) or first conv channels (cnn)',
    'train_layers': 'all, or hidden (first and last layer frozen at init)',
    'loss': 'mse (1/2 squared error, the theory) or xent',
    'algorithm': 'one of ' + ', '.join(config_lib.ALGORITHMS),
    'local_steps': 'K: local steps per round',
    'batch_size': 'B: minibatch size of a local SGD step',
    'client_lr': 'client step size; with --lr_scale=width it is c in c/m',
    'lr_scale': 'none (eta = client_lr) or width (eta = client_lr / width)',
    'server_lr': 'server step on the averaged delta (1 = plain averaging)',
    'clients_per_round': 'cohort size, sampled per round (0 = all clients)',
    'rounds': 'T: communication rounds',
    'eval_every': 'evaluate train/test loss every this many rounds',
    'seed': 'seeds every random stream (data, partition, init, sampling)',
    'eps': 'target: train/loss <= eps x the zero predictor\'s loss '
           '(rounds to epsilon, and its prediction)',
    'diag_every': 'measure the diagnostics every this many rounds (0 = off)',
    'lockstep_drift': 'on diagnostic rounds, run the lockstep round that '
                      'measures drift/* at every local step',
    'diag_per_step': 'also record the drift of every local step '
                     '(TensorBoard drift_per_step/*, drift_steps.csv)',
    'probe_size': 'training examples (chosen by seed) for activation flips '
                  'and the NTK',
    'ntk_every': 'measure the empirical NTK every this many rounds (0 = off)',
    'engine': 'auto, native (TFF C++ runtime), inprocess (MapReduceForm run '
              'in this process, on the GPU if there is one) or remote',
    'workers': 'remote engine: TFF workers as host:port,host:port',
    'device': 'inprocess engine: TensorFlow device, e.g. /CPU:0 or /GPU:0 '
              '(empty: the GPU if TensorFlow sees one)',
    'clients_per_pack': 'P: clients trained together by one TFF client '
                        '(stacked weights, batched matmuls)',
    'jit': 'compile the client computation with XLA',
    'checkpoint_every': 'write <run dir>/checkpoints/ every this many rounds '
                        '(0 = only when stopped by a signal)',
    'root_dir': 'runs are written to <root_dir>/<experiment>/',
    'experiment': 'name of this run\'s output directory',
}

_DEFINE = {int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string, bool: flags.DEFINE_bool}


def define_config_flags():
  """Defines one flag per ExperimentConfig field."""
  for field in dataclasses.fields(config_lib.ExperimentConfig):
    kind = {'int': int, 'float': float, 'str': str, 'bool': bool}.get(
        field.type, field.type)
    _DEFINE[kind](field.name, field.default, _HELP[field.name])


def config_from_flags() -> config_lib.ExperimentConfig:
  """The ExperimentConfig the flags describe (not yet validated)."""
  return config_lib.ExperimentConfig(**{
      f.name: FLAGS[f.name].value
      for f in dataclasses.fields(config_lib.ExperimentConfig)})


def exit_bad_input(message: str):
  """Bad input: one line on stderr, exit status 2, nothing written."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def parse_flags(argv):
  """absl's flag parser, exiting 2 (not 1) on a malformed flag value."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    exit_bad_input(str(e))
