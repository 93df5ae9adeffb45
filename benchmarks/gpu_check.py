"""The GPU self-check: run it first on a new GPU machine.

  python -m benchmarks.gpu_check             # or the image's gpu-check
  python -m benchmarks.gpu_check --cpu_pair  # the check's own test, no GPU

Prints the devices TensorFlow sees and its CUDA build; where one round's
matmuls ran; the round on the GPU and on the CPU and their agreement (w^1 and
the loss, relative, within 1e-5, TF32 off); seconds per round of the kit's
round and of plain TensorFlow on the GPU; a verdict (tff_localsgd/gpu_check.py
says how, and why that tolerance).

Exit status: 0 the GPU is used and agrees with the CPU; 1 it is not used, or
it disagrees (the verdict names which); 2 TensorFlow sees no GPU (with a hint)
or a bad flag.
"""

from absl import app
from absl import flags
import tensorflow as tf

from benchmarks import flags as flag_defs
from tff_localsgd import gpu_check

flags.DEFINE_integer('width', 1024, 'm: hidden width of the checked round')
flags.DEFINE_integer('rounds', 5, 'timed rounds per setting (after a '
                     'warm-up)')
flags.DEFINE_bool('cpu_pair', False, 'split the CPU into two logical devices '
                  'and check /CPU:1 against /CPU:0: tests the check itself on '
                  'a machine without a GPU')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    flag_defs.exit_bad_input(f'unexpected arguments {argv[1:]}')
  for name in ('width', 'rounds'):
    if FLAGS[name].value <= 0:
      flag_defs.exit_bad_input(f'--{name}: must be > 0, got '
                               f'{FLAGS[name].value}')
  if FLAGS.cpu_pair:
    gpu_check.split_cpu()  # before TensorFlow initializes its devices
    target = '/CPU:1'
  else:
    target = '/GPU:0'
  print('\n'.join(gpu_check.describe_tensorflow()), flush=True)
  if not FLAGS.cpu_pair and not tf.config.list_physical_devices('GPU'):
    verdict = gpu_check.no_gpu_verdict()
    print(verdict.line, flush=True)
    return verdict.exit_code
  result = gpu_check.run_check(gpu_check.check_setup(FLAGS.width), target,
                               '/CPU:0', FLAGS.rounds)
  print('\n'.join(result.lines()), flush=True)
  return result.verdict.exit_code


if __name__ == '__main__':
  app.run(main, flags_parser=flag_defs.parse_flags)
