"""The check to run on a GPU machine before a long sweep.

Says whether TensorFlow sees a GPU (and, when `nvidia-smi` exists but
TensorFlow sees none, that the CUDA libraries are missing), then in a fresh
process per policy (the global policy must be set before the agent is built)
builds the agent at the paper's sizes and batch, runs a few updates under
`mixed_float16` (what `--precision 16` means on a GPU) and under `float32`,
and reports seconds per update, whether every loss stayed finite, the
optimizers' loss scales and skipped updates, and peak device memory. It also
times the environment and projects the hours of a paper-length run (5e6
frames at the paper's schedule). Writes everything to a JSON file.

  python benchmarks/gpu_check.py                 # paper sizes
  python benchmarks/gpu_check.py --tiny          # seconds on a CPU (CI)

Without a GPU it says so and runs on the CPU, where float16 is emulated: an
update at the paper's sizes takes minutes there, so use --tiny.
"""

import argparse
import json
import math
import os
import pathlib
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('MUJOCO_GL', 'egl')

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from support import onednn  # noqa: E402,F401  The kernels dreamer.py runs.
TAG = '@@GPU_CHECK '
POLICIES = ('mixed_float16', 'float32')
# Small enough for seconds per update on a CPU, even in emulated float16.
TINY = dict(batch_size=4, batch_length=10, horizon=5, cnn_depth=8,
            num_units=32, deter_size=24, stoch_size=6)
OPTIMIZERS = ('model', 'actor', 'value')


# ---------------------------------------------------------------- worker side

def worker(spec):
  """Builds the agent under one policy and times `spec['updates']` updates."""
  import gymnasium
  import numpy as np
  import tensorflow as tf
  import tf_keras
  tf_keras.mixed_precision.set_global_policy(spec['policy'])
  import dreamer
  config = dreamer.define_config()
  config.update(spec['config'])
  config.logdir = pathlib.Path(spec['logdir'])
  config.logdir.mkdir(parents=True, exist_ok=True)
  config.precision = 32 if spec['policy'] == 'float32' else 16
  space = gymnasium.spaces.Box(-1, 1, (6,), np.float32)
  writer = tf.summary.create_file_writer(str(config.logdir))
  start = time.perf_counter()
  agent = dreamer.Dreamer(config, spec['datadir'], space, writer)
  build = time.perf_counter() - start
  states = [optimizer_state(agent)]
  times, finite = [], True
  for _ in range(spec['updates']):
    start = time.perf_counter()
    with agent._strategy.scope():  # Outside it, train() would retrace.
      losses = agent.train(next(agent._dataset))
      losses = {k: float(v) for k, v in losses.items()}
    times.append(time.perf_counter() - start)
    finite = finite and all(math.isfinite(v) for v in losses.values())
    states.append(optimizer_state(agent))
  result = dict(
      policy=tf_keras.mixed_precision.global_policy().name, build=build,
      times=times, losses=losses, finite=finite,
      optimizers={name: check_loss_scale([s[name] for s in states])
                  for name in OPTIMIZERS},
      memory=peak_memory(tf))
  sys.stdout.write(TAG + json.dumps(result) + '\n')


def optimizer_state(agent):
  state = {}
  for name in OPTIMIZERS:
    opt = getattr(agent, f'_{name}_opt')._opt
    scaled = hasattr(opt, 'loss_scale')
    scale = float(opt.loss_scale.numpy()) if scaled else None
    state[name] = dict(iterations=int(opt.iterations.numpy()), scale=scale)
  return state


def check_loss_scale(states):
  """Skipped updates, and whether each moved the scale as it must.

  A skipped update (gradients not finite) leaves the iteration count alone
  and halves the scale; an applied one counts and keeps the scale, or doubles
  it after 2000 finite updates in a row. At the start the model's scale
  usually halves a few times until its gradients fit float16; the check
  fails if the scale breaks these rules, falls to 1, or the last update was
  still skipped (more updates would show whether it settles).
  """
  skipped, consistent = 0, True
  for before, after in zip(states, states[1:]):
    applied = after['iterations'] == before['iterations'] + 1
    if before['scale'] is None:
      consistent &= applied
    elif applied:
      consistent &= after['scale'] in (before['scale'], 2 * before['scale'])
    else:
      consistent &= after['iterations'] == before['iterations']
      consistent &= after['scale'] == max(before['scale'] / 2, 1.0)
    skipped += not applied
  last = states[-1]
  settled = last['iterations'] == states[-2]['iterations'] + 1
  ok = consistent and settled and (last['scale'] is None or last['scale'] > 1)
  return dict(scale=last['scale'], skipped=skipped,
              scales=[s['scale'] for s in states],
              iterations=[s['iterations'] for s in states],
              consistent=consistent, settled=settled, ok=ok)


def peak_memory(tf):
  if tf.config.list_physical_devices('GPU'):
    info = tf.config.experimental.get_memory_info('GPU:0')
    return dict(device='GPU:0', peak_gb=info['peak'] / 2 ** 30)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
  return dict(device='CPU (process peak RSS)', peak_gb=peak)


# ---------------------------------------------------------------- parent side

def devices():
  """TensorFlow's devices, and a hint when the CUDA libraries are missing."""
  from support import console  # noqa: F401  TensorFlow, quietly.
  from support import runtime
  import tensorflow as tf
  gpus = [d.name for d in tf.config.list_physical_devices('GPU')]
  info = dict(tensorflow=tf.__version__, gpus=gpus,
              cpus=len(tf.config.list_physical_devices('CPU')),
              nvidia_smi=bool(shutil.which('nvidia-smi')),
              cuda_build=tf.test.is_built_with_cuda())
  if gpus:
    info['message'] = f'GPU found: {", ".join(gpus)}.'
  elif runtime.missing_cuda_hint():
    info['message'] = 'No GPU found. ' + runtime.missing_cuda_hint()
  else:
    info['message'] = 'No GPU found: running on the CPU.'
  return info


def run_worker(policy, config, updates, tmp, timeout):
  spec = dict(policy=policy, config=config, updates=updates,
              datadir=str(tmp / 'episodes'), logdir=str(tmp / policy))
  log = tmp / f'{policy}.log'
  try:
    with open(log, 'w') as stderr:
      proc = subprocess.run(
          [sys.executable, '-u', __file__, '--worker', json.dumps(spec)],
          stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=str(ROOT),
          timeout=timeout)
  except subprocess.TimeoutExpired:
    return dict(policy=policy, error=f'timeout after {timeout:.0f} s')
  for line in proc.stdout.splitlines():
    if line.startswith(TAG):
      return json.loads(line[len(TAG):])
  tail = log.read_text().splitlines()[-10:]
  return dict(policy=policy, error=f'exit code {proc.returncode}',
              log_tail=tail)


def env_step_seconds(task, steps):
  """Seconds per agent step of the environment, random actions, 64x64."""
  import numpy as np
  import dreamer
  config = dreamer.define_config()
  config.task = task
  suite, name = task.split('_', 1)
  import wrappers
  if suite != 'dmc':
    raise SystemExit('--task: only dmc_* tasks are timed here.')
  env = wrappers.ActionRepeat(
      wrappers.DeepMindControl(name, seed=0), config.action_repeat)
  env.reset()
  random = np.random.RandomState(0)
  shape = env.action_space.shape
  start = time.perf_counter()
  for _ in range(steps):
    _, _, done, _ = env.step(random.uniform(-1, 1, shape))
    if done:
      env.reset()
  return (time.perf_counter() - start) / steps


def projection(update_seconds, env_seconds):
  """Hours for the paper's run: updates plus environment steps.

  Leaves out the policy's own forward pass per step and the summaries.
  """
  import dreamer
  c = dreamer.define_config()
  updates = c.steps / c.train_every * c.train_steps
  # Training episodes plus one evaluation episode every eval_every frames.
  agent_steps = c.steps / c.action_repeat
  agent_steps += c.steps / c.eval_every * c.time_limit / c.action_repeat
  return dict(frames=c.steps, updates=updates, env_steps=agent_steps,
              update_hours=updates * update_seconds / 3600,
              env_hours=agent_steps * env_seconds / 3600)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--updates', type=int, default=10,
                      help='timed updates per policy after the build')
  parser.add_argument('--tiny', action='store_true',
                      help='tiny networks and batch (CI on a CPU)')
  parser.add_argument('--policies', nargs='+', default=list(POLICIES),
                      choices=POLICIES)
  parser.add_argument('--task', default='dmc_walker_walk')
  parser.add_argument('--env_steps', type=int, default=None,
                      help='timed environment steps (default 500, tiny 20)')
  parser.add_argument('--timeout', type=float, default=3600,
                      help='seconds allowed per policy')
  parser.add_argument('--out', default='gpu_check.json')
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    return worker(json.loads(args.worker))
  sys.path.insert(0, str(ROOT / 'benchmarks'))
  import train_step  # Its synthetic walker-shaped episodes.

  info = devices()
  print(info['message'])
  print(f'TensorFlow {info["tensorflow"]} (built with CUDA: '
        f'{info["cuda_build"]}), Python {platform.python_version()}, '
        f'GPUs {len(info["gpus"])}, nvidia-smi '
        f'{"found" if info["nvidia_smi"] else "not found"}')
  config = dict(TINY) if args.tiny else {}
  batch = (f'batch {config.get("batch_size", 50)} x '
           f'{config.get("batch_length", 50)}')
  sizes = 'tiny' if args.tiny else "the paper's"
  print(f'Sizes: {sizes}, {batch}; '
        f'{args.updates} timed updates per policy.')
  if not info['gpus'] and not args.tiny and 'mixed_float16' in args.policies:
    print('Warning: float16 is emulated on a CPU; an update at the paper\'s '
          'sizes takes minutes. --tiny runs in seconds.')
  print(flush=True)

  results = dict(devices=info, tiny=args.tiny, config=config,
                 updates=args.updates, policies={})
  ok = True
  with tempfile.TemporaryDirectory(prefix='gpu-check-') as tmp:
    tmp = pathlib.Path(tmp)
    length = config.get('batch_length', 50) + 1
    train_step.write_episodes(tmp / 'episodes', 3, max(length, 101), 0)
    for policy in args.policies:
      res = run_worker(policy, config, args.updates, tmp, args.timeout)
      results['policies'][policy] = res
      ok = report(policy, res) and ok
    env_steps = args.env_steps or (20 if args.tiny else 500)
    env = env_step_seconds(args.task, env_steps)
    results['env_step_seconds'] = env
    print(f'\nEnvironment: {args.task}, {env * 1000:.1f} ms per agent step '
          f'(action repeat 2, rendering; {env_steps} steps).')
  for policy, res in results['policies'].items():
    if res.get('times'):
      seconds = min(res['times'])
      p = res['projection'] = projection(seconds, env)
      print(f'Projected for {p["frames"]:.0e} frames under {policy}'
            f'{" (tiny sizes: not a real projection)" if args.tiny else ""}: '
            f'{p["update_hours"] + p["env_hours"]:.1f} h ({p["updates"]:.0f} '
            f'updates {p["update_hours"]:.1f} h, {p["env_steps"]:.0f} env '
            f'steps {p["env_hours"]:.1f} h; policy inference not included).')
  results['ok'] = ok
  pathlib.Path(args.out).write_text(json.dumps(results, indent=1))
  print(f'\n{"OK" if ok else "FAILED"}; details in {args.out}.')
  return 0 if ok else 1


def report(policy, res):
  if res.get('error'):
    print(f'{policy}: FAILED ({res["error"]})')
    for line in res.get('log_tail', []):
      print('    | ' + line)
    return False
  times = res['times']
  memory = res['memory']
  print(f'{policy}: build + first update {res["build"]:.1f} s; update '
        f'{min(times):.3f} s (min), {sum(times) / len(times):.3f} s (mean); '
        f'losses {"finite" if res["finite"] else "NOT FINITE"}; peak memory '
        f'{memory["peak_gb"]:.2f} GB on {memory["device"]}')
  ok = res['finite']
  for name, opt in res['optimizers'].items():
    scale = 'none' if opt['scale'] is None else f'{opt["scale"]:.0f}'
    problem = '' if opt['ok'] else '  <- ' + (
        'scale does not follow the rules' if not opt['consistent'] else
        'still skipping at the last update' if not opt['settled'] else
        'scale fell to 1')
    print(f'  {name}: loss scale {scale}, skipped updates {opt["skipped"]} '
          f'of {len(times)}{problem}')
    ok = ok and opt['ok']
  return ok


if __name__ == '__main__':
  sys.exit(main())
