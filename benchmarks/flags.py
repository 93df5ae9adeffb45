"""The one place flags are defined.

Every ExperimentConfig field is a flag of the same name, with the dataclass
default, so a flag, a config field, a config.json key and a README entry are
one word. Values are checked by ExperimentConfig.validate(), not by absl, so
every bad value gets the same treatment: exit 2, one line naming the flag.
"""

import dataclasses
import inspect
import itertools
import os
import re
import sys
import tempfile
import textwrap

from absl import flags

from tff_localsgd import config as config_lib
from tff_localsgd import results
from tff_localsgd.sweep import grid
from tff_localsgd.sweep import processes

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
    _DEFINE[config_lib.field_type(field.name)](field.name, field.default,
                                               _HELP[field.name])


def define_trial_process_flags(point: str):
  """--stack and --trial_threads of a binary that runs trials in a pool
  (sweep, reproduce); point: what its seeds are seeds of."""
  flags.DEFINE_integer(
      'stack', 4, f'train up to this many seeds of one {point} as one '
      'stacked computation in one trial process (mlp, no diagnostics, '
      f'clients_per_pack=1, width <= {grid.STACK_MAX_WIDTH}); 1 = each '
      'trial on its own. Results are bit-identical either way')
  flags.DEFINE_string(
      'trial_threads', processes.ALL_THREADS,
      "TensorFlow's threads in each trial process: 'all' (its default, "
      "every core: the bits of a run alone), 'shared' (cores // --parallel: "
      "faster, but a float32 matmul's bits depend on its threads, so "
      'results agree only to a tolerance) or a number')


def config_from_flags() -> config_lib.ExperimentConfig:
  """The ExperimentConfig the flags describe (not yet validated)."""
  return config_lib.ExperimentConfig(**{
      f.name: FLAGS[f.name].value
      for f in dataclasses.fields(config_lib.ExperimentConfig)})


def exit_bad_input(message: str):
  """Bad input: one line on stderr, exit status 2, nothing written."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(results.EXIT_BAD_INPUT)


def check_writable_dir(path: str, flag: str):
  """Exits 2 naming --flag unless `path` is, or can be made, a writable
  directory: its nearest existing ancestor must be a directory where a
  directory can be created (tried, and removed: a pseudo file system such
  as /proc passes every permission check and still refuses). Leaves
  nothing behind."""
  path = os.path.abspath(os.path.expanduser(path))
  existing = path
  while not os.path.lexists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    problem = 'is not a directory'
  elif os.statvfs(existing).f_flag & os.ST_RDONLY:
    problem = 'is on a read-only file system'  # even for root
  else:
    try:
      os.rmdir(tempfile.mkdtemp(prefix='.writable-', dir=existing))
      return
    except OSError as e:
      problem = f'refuses a new directory ({e.strerror})'
  exit_bad_input(f'--{flag}: cannot write {path}: {existing} {problem}')


# absl's --help lists only the flags defined in the binary's own file.
_HELP_ARGS = {'-h', '-?', '--help', '-help', '--helpshort', '-helpshort'}
# In ExperimentConfig's body, a section is a comment line such as '# Data.'
# or '# Execution (see ...)' heading the fields below it.
_SECTION = re.compile(r'\s+# ([A-Z]\w*)(?:\.| \()')
_FIELD = re.compile(r'\s+(\w+): \w+ = ')


def parse_flags(argv):
  """absl's flag parser, exiting 2 (not 1) on a malformed flag value, and 0
  after printing `usage` for --help."""
  if _HELP_ARGS & set(itertools.takewhile(lambda a: a != '--', argv[1:])):
    print(usage(argv[0]))
    sys.exit(0)
  try:
    return FLAGS(argv)
  except flags.CantOpenFlagFileError as e:
    # absl's text is 'ERROR:: Unable to open flagfile: <the OSError>'.
    exit_bad_input('--flagfile: ' + str(e).split('flagfile: ', 1)[-1])
  except flags.Error as e:
    exit_bad_input(str(e))


def config_sections() -> list:
  """[(section, [field names])] in the order of config.py's sections."""
  names = {f.name for f in dataclasses.fields(config_lib.ExperimentConfig)}
  sections = []
  for line in inspect.getsource(config_lib.ExperimentConfig).splitlines():
    section, field = _SECTION.match(line), _FIELD.match(line)
    if section:
      sections.append((section.group(1).lower(), []))
    elif field and field.group(1) in names:
      sections[-1][1].append(field.group(1))
  return sections


def usage(binary: str) -> str:
  """The binary's docstring, then its flags: the config's by section, then
  the binary's own (absl files those under the binary's path)."""
  groups = [(title, [FLAGS[n] for n in names if n in FLAGS])
            for title, names in config_sections()]
  own = sorted(FLAGS.get_flags_for_module(binary), key=lambda f: f.name)
  main = sys.modules['__main__']
  groups.append((getattr(main.__spec__, 'name', binary), own))
  lines = [(main.__doc__ or '').strip(), '']
  for title, members in groups:
    if members:
      lines += [f'{title}:'] + [_describe(f) for f in members] + ['']
  lines.append('--flagfile=FILE reads flags from FILE, one per line;\n'
               '--helpfull lists every flag, absl\'s and TensorFlow\'s too.')
  return '\n'.join(lines)


def _describe(flag) -> str:
  name = f'--[no]{flag.name}' if flag.boolean else f'--{flag.name}'
  help_text = ' '.join(flag.help.split())  # multi flags add a line of their own
  return textwrap.fill(f'{name}: {help_text} (default: {flag.default_as_str})',
                       width=80, initial_indent='  ', subsequent_indent='    ')
