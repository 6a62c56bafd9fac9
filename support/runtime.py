"""TensorFlow's set-up for a run: precision, loss scaling, seeds, devices."""

import copy
import functools
import json
import os
import pathlib
import shutil

import numpy as np
import tensorflow as tf
import tf_keras
from tf_keras import mixed_precision as prec
# The class behind prec.LossScaleOptimizer for tf_keras' (new) optimizers; the
# public name is a factory and cannot be subclassed.
from tf_keras.src.mixed_precision import loss_scale_optimizer as lso

from support import storage


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


# Set to 1, --precision 16 takes the GPU's policy (mixed_float16) on any
# machine, so that the GPU's code path can run on a CPU (tests, CI).
FORCE_FLOAT16 = 'DREAMER_FORCE_FLOAT16'


def set_precision(config):
  """Returns the Keras mixed precision policy used for --precision."""
  hint = missing_cuda_hint()  # A GPU that TensorFlow cannot use.
  if hint:
    print(hint)
  if config.precision == 32:
    name = 'float32'
  elif tf.config.list_physical_devices('GPU'):
    name = 'mixed_float16'
  elif os.environ.get(FORCE_FLOAT16) == '1':
    name = 'mixed_float16'
  else:
    name = cpu_policy_for_16()
  name = policy_of_run(config, name)
  prec.set_global_policy(name)
  return name


def policy_of_run(config, chosen):
  """After a resume, float32 if the run's last start used it; else `chosen`.

  --precision 16 picks its policy by machine, so a run resumed on another
  kind of machine would change its arithmetic midway without being asked
  to. A run in float32 (started on a CPU without native bfloat16) stays in
  float32 wherever it is resumed with the same --precision: float32 runs at
  full speed on any CPU. The other policies cannot follow a run everywhere:
  float16 is emulated without a GPU (40x float32's time), and bfloat16
  convolutions without native instructions took 32x float32's time on an
  AVX2 CPU (a transposed convolution of the decoder). So there the machine's
  policy is taken, and the change printed; seeds.jsonl lists each start's.
  DREAMER_FORCE_FLOAT16=1 takes mixed_float16 in any case, the way for a
  float32 run moved to a GPU to use it.
  """
  logdir = (config.get('logdir') if isinstance(config, dict)
            else getattr(config, 'logdir', None))  # None: a benchmark's.
  try:
    starts = read_starts(pathlib.Path(logdir) / SEEDS) if logdir else []
  except SeedsError:
    return chosen  # dreamer.py refuses the file in seed_of_start.
  starts = [s for s in starts if 'policy' in s]  # Older code recorded none.
  if not starts or starts[-1]['policy'] == chosen:
    return chosen
  last = starts[-1]
  was = (f'This run\'s last start ({last.get("frames")} frames) used '
         f'{last["policy"]}')
  if last.get('precision') != config.precision:
    print(f'{was} under --precision {last.get("precision")}; this start uses '
          f'{chosen} for --precision {config.precision}.')
  elif last['policy'] == 'float32' and os.environ.get(FORCE_FLOAT16) != '1':
    print(f'{was}; keeping it (this machine picks {chosen} for a new run with '
          f'--precision {config.precision}), so the run\'s arithmetic does '
          f'not change with the machine. {FORCE_FLOAT16}=1 picks '
          'mixed_float16 instead.')
    return 'float32'
  else:
    print(f'{was}; this start uses {chosen}, this machine\'s policy for '
          f'--precision {config.precision} (float16 is emulated without a '
          'GPU, bfloat16 slow without native instructions, and '
          f'{FORCE_FLOAT16}=1 asks for float16): the run mixes precisions '
          f'from here ({SEEDS} lists each start\'s).')
  return chosen


class LossScaleOptimizer(lso.LossScaleOptimizerV3):
  """Keras' dynamic loss scaling with the original's (TF 2.2) skipped step.

  As in the original: the scale starts at 2**15, halves when a gradient is not
  finite (that update is skipped) and doubles after 2000 finite steps in a
  row. Unlike tf-keras, a skipped update leaves Adam's iteration count alone,
  as TF 2.2 did; counting it would make the next real update Adam's second
  step with empty moments, 0.744x as large as a first step (oracle small16).
  """

  def __init__(self, inner_optimizer):
    super().__init__(
        inner_optimizer, dynamic=True, initial_scale=2 ** 15,
        dynamic_growth_steps=2000)

  def apply_gradients(self, grads_and_vars, **kwargs):
    # Keras adds one to the count on either branch of its skip condition;
    # the applied branch adds one more below, so after the subtraction only
    # an applied update has counted.
    super().apply_gradients(grads_and_vars, **kwargs)
    self.iterations.assign_sub(1, read_value=False)

  def _apply_gradients(self, grads, wrapped_vars):
    super()._apply_gradients(grads, wrapped_vars)
    self.iterations.assign_add(1, read_value=False)


def missing_cuda_hint():
  """A one-line hint when a GPU exists but TensorFlow cannot use it.

  `pip install -r requirements.txt` brings TensorFlow without the CUDA
  libraries; TensorFlow then trains on the CPU without a word.
  """
  if shutil.which('nvidia-smi') and not tf.config.list_physical_devices('GPU'):
    return ('nvidia-smi exists but TensorFlow sees no GPU, so this runs on the '
            'CPU: install the CUDA libraries with '
            '`pip install -r requirements-gpu.txt`.')
  return None


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


# One line per start of a run in its logdir: the frames stored then, the seed
# that start used, its --precision and the precision policy that gave.
SEEDS = 'seeds.jsonl'


def seed_of_start(config, frames):
  """The config of this start of a run: after the first, a seed of its own.

  The seed is handed to Python, NumPy, TensorFlow, each environment (seed +
  index), the random actions and the replay's sampling. A fresh run keeps
  --seed. Had a resume kept it too, it would replay the first start's draws:
  environments back at their first initial states, the same exploration
  noise, the same sampling stream, so the replay filled with near-copies of
  its first episodes and each evaluation after a resume repeated one before
  (scores/paper/README.md). So every later start draws its seed from --seed,
  the number of starts before it and the frames stored. Counting the starts
  (in seeds.jsonl) keeps two starts at the same frames apart, e.g. one
  stopped inside its first training phase and the next; the same command
  stopped at the same points still draws the same seeds, so --deterministic
  still repeats a run.
  """
  path = pathlib.Path(config.logdir) / SEEDS
  starts = read_starts(path)
  if starts or frames:  # A logdir of older code has frames but no list.
    key = [config.seed, len(starts), frames]
    # 31 bits leave room for the environments' offsets (seed + 1000 + index)
    # below 2**32, the most that NumPy's RandomState takes.
    derived = np.random.SeedSequence(key).generate_state(1)[0]
    config = copy.copy(config)  # config.json keeps the user's --seed.
    config.seed = int(derived) % 2 ** 31
    print(f'Resumed at {frames} frames (start {len(starts) + 1}): seed '
          f'{config.seed}, drawn from --seed, the start and the frames, for '
          f'new initial states and noise ({SEEDS}).')
  starts.append(dict(
      frames=frames, seed=config.seed, precision=config.precision,
      policy=prec.global_policy().name))  # Kept by policy_of_run.
  path.parent.mkdir(parents=True, exist_ok=True)
  storage.write_atomic(
      path, ''.join(json.dumps(s) + '\n' for s in starts).encode())
  return config


class SeedsError(Exception):
  """seeds.jsonl cannot be read; cli.py reports it as bad input."""


def read_starts(path):
  try:
    text = path.read_text()
  except FileNotFoundError:
    return []
  try:
    starts = [json.loads(line) for line in text.splitlines() if line.strip()]
    problem = next((repr(s) for s in starts if not is_start(s)), None)
  except json.JSONDecodeError as e:
    problem = str(e)
  if problem:
    raise SeedsError(
        f'{path} is not one JSON object a line ({problem}); it lists the '
        'seed of each start of this run. Restore it, or delete it to count '
        'this start as the first after the episodes stored.')
  return starts


def is_start(entry):
  # Frames and seed; the precision policy since it was recorded.
  policies = ('float32', 'mixed_bfloat16', 'mixed_float16')
  return (isinstance(entry, dict) and 'frames' in entry and 'seed' in entry
          and entry.get('policy', 'float32') in policies)


def set_seed(seed, deterministic=False):
  # Python's, NumPy's and TensorFlow's generators (Keras draws from Python's).
  tf_keras.utils.set_random_seed(seed)
  if deterministic:
    # Same seed, same run: TensorFlow picks deterministic kernels and refuses
    # ops that have none (docs/benchmarks.md has the cost).
    tf.config.experimental.enable_op_determinism()
