"""TensorFlow's set-up for a run: precision policy, seeds and devices."""

import functools

import tensorflow as tf
import tf_keras
from tf_keras import mixed_precision as prec


def dataset_options():
  # Nothing in the pipeline is tuned (fixed prefetch, sequential map), and the
  # tuning thread made deleting the iterator wait ~15 s at every exit.
  options = tf.data.Options()
  options.autotune.enabled = False
  return options


@functools.lru_cache(None)
def process_writer(logdir):
  # Environments in worker processes cannot share the main process's writer.
  return tf.summary.create_file_writer(str(logdir), max_queue=1000)


def set_precision(config):
  """Returns the Keras mixed precision policy used for --precision."""
  if config.precision == 32:
    name = 'float32'
  elif tf.config.list_physical_devices('GPU'):
    name = 'mixed_float16'
  else:
    name = cpu_policy_for_16()
  prec.set_global_policy(name)
  return name


def cpu_policy_for_16(cpuinfo='/proc/cpuinfo'):
  # Without a GPU, float16 math is emulated: 40x slower than float32 here (the
  # original took minutes per update). At the paper's sizes bfloat16 took
  # 0.57x float32's time per update with AMX and 0.82x with AVX512_BF16 alone,
  # and trained alike; on CPUs without either it may be slower, so they keep
  # float32 (docs/benchmarks.md).
  try:
    with open(cpuinfo) as f:
      flags = set(f.read().split())
  except OSError:
    return 'float32'
  native = {'avx512_bf16', 'amx_bf16'}
  return 'mixed_bfloat16' if flags & native else 'float32'


def set_seed(seed, deterministic=False):
  # Python's, NumPy's and TensorFlow's generators (Keras draws from Python's).
  tf_keras.utils.set_random_seed(seed)
  if deterministic:
    # Same seed, same run: TensorFlow picks deterministic kernels and refuses
    # ops that have none (docs/benchmarks.md has the cost).
    tf.config.experimental.enable_op_determinism()
