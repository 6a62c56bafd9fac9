"""Wall time and numerical stability of one Dreamer train step per precision.

Prints figures; it is not a test. Each Keras mixed-precision policy runs in a
fresh worker process (the global policy must be set before the agent is
built). The workers are built one after another and then stepped in turn
(round robin), so a change in background load hits every policy alike.

  python benchmarks/train_step.py                     # paper size, 3 policies
  python benchmarks/train_step.py --batch_size 4 --batch_length 16 --steps 2 \
      --stability_steps 5                             # a quick smoke run

Speed: the agent is built at define_config() defaults (batch 50 x length 50,
horizon 15, full networks) on synthetic walker-shaped episodes. "build" is the
Dreamer constructor, which traces the train step and runs it once; "step" is
one further `agent.train(next(agent._dataset))` inside the strategy scope,
timed until the losses are fetched as Python floats.

Stability: for each policy a second worker trains a number of steps at a
small batch with full-size networks, on the same episodes with the same seed,
and reports the model loss trajectory against float32's.
"""

import argparse
import json
import os
import pathlib
import platform
import queue
import resource
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('MUJOCO_GL', 'egl')

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from support import onednn  # noqa: E402,F401  The kernels dreamer.py runs.
POLICIES = ('float32', 'mixed_float16', 'mixed_bfloat16')
TAG = '@@BENCH '


# ---------------------------------------------------------------- worker side

def worker(spec):
  """Builds one agent under one policy, then steps it on request."""
  os.environ.update(spec.get('env', {}))  # Before TensorFlow reads them.
  sys.path.insert(0, spec.get('root') or str(ROOT))
  import numpy as np
  import tensorflow as tf
  import tf_keras
  tf_keras.mixed_precision.set_global_policy(spec['policy'])
  if spec.get('deterministic'):
    tf.config.experimental.enable_op_determinism()
  np.random.seed(spec['seed'])
  tf.random.set_seed(spec['seed'])

  def send(**msg):
    sys.stdout.write(TAG + json.dumps(msg) + '\n')
    sys.stdout.flush()

  start = time.perf_counter()
  agent = make_agent(
      spec['policy'], spec['config'], spec['datadir'], spec['logdir'])
  build = time.perf_counter() - start
  send(kind='ready', build=build, rss=_rss_gb(),
       policy=tf_keras.mixed_precision.global_policy().name,
       traces=agent.train.experimental_get_tracing_count())
  for line in sys.stdin:
    command = line.strip()
    if command == 'quit':
      break
    if command != 'step':
      continue
    start = time.perf_counter()
    with agent._strategy.scope():  # Outside it, train() would retrace.
      data = next(agent._dataset)
      fetched = time.perf_counter()
      losses = agent.train(data)
      losses = {k: float(v) for k, v in losses.items()}
    end = time.perf_counter()
    opt = agent._model_opt._opt
    scale = float(opt.loss_scale) if hasattr(opt, 'loss_scale') else None
    send(kind='step', time=end - start, data_time=fetched - start,
         losses=losses, rss=_rss_gb(), loss_scale=scale,
         traces=agent.train.experimental_get_tracing_count())


def make_agent(policy, overrides, datadir, logdir):
  """Dreamer at define_config() plus `overrides`, with walker's actions."""
  import gymnasium
  import numpy as np
  import tensorflow as tf
  import dreamer
  config = dreamer.define_config()
  config.update(overrides)
  config.logdir = pathlib.Path(logdir)
  config.logdir.mkdir(parents=True, exist_ok=True)
  config.precision = 32 if policy == 'float32' else 16
  actspace = gymnasium.spaces.Box(-1, 1, (6,), np.float32)
  writer = tf.summary.create_file_writer(str(config.logdir))
  return dreamer.Dreamer(config, datadir, actspace, writer)


def _rss_gb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


# ---------------------------------------------------------------- parent side

class Worker:

  def __init__(self, name, spec, logfile):
    self.name = name
    self.log = open(logfile, 'w')
    self.proc = subprocess.Popen(
        [sys.executable, '-u', __file__, '--worker', json.dumps(spec)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
        text=True, cwd=spec.get('root') or str(ROOT))
    self.messages = queue.Queue()
    self.dead = None  # Reason it stopped, if it did.
    threading.Thread(target=self._read, daemon=True).start()

  def _read(self):
    for line in self.proc.stdout:
      if line.startswith(TAG):
        self.messages.put(json.loads(line[len(TAG):]))
      else:
        self.log.write(line)
        self.log.flush()
    self.messages.put(None)

  def wait(self, timeout):
    """The next message, or None after killing the worker on a timeout."""
    try:
      msg = self.messages.get(timeout=timeout)
    except queue.Empty:
      self.kill(f'timeout {timeout:.0f} s')
      return None
    if msg is None:
      self.proc.wait()
      self.dead = f'exited with code {self.proc.returncode}'
    return msg

  def step(self, timeout):
    self.proc.stdin.write('step\n')
    self.proc.stdin.flush()
    return self.wait(timeout)

  def kill(self, reason):
    self.dead = reason
    if self.proc.poll() is None:
      self.proc.kill()  # This worker's own process id.
      self.proc.wait()

  def close(self):
    if self.proc.poll() is None:
      try:
        self.proc.stdin.write('quit\n')
        self.proc.stdin.flush()
        self.proc.wait(timeout=60)
      except (OSError, subprocess.TimeoutExpired):
        self.kill('closed')
    self.log.close()


def write_episodes(datadir, count, length, seed):
  """Walker-shaped episodes with something to learn.

  Pure noise images sit at the optimum of a zero-mean decoder from the first
  step, so the model loss would not fall and could not tell a stable policy
  from a broken one. Here each frame is a per-episode colour gradient with a
  bright square that moves with the actions, plus uint8 noise; the reward is
  the square's horizontal position.
  """
  sys.path.insert(0, str(ROOT))
  import numpy as np
  import tools
  random = np.random.RandomState(seed)
  grid = np.linspace(0, 1, 64)
  episodes = []
  for _ in range(count):
    action = random.uniform(-1, 1, (length, 6)).astype(np.float32)
    action[0] = 0
    lo, hi = random.uniform(0, 120, 3), random.uniform(120, 255, 3)
    back = lo + (hi - lo) * (grid[:, None, None] + grid[None, :, None]) / 2
    pos = np.clip(np.cumsum(3 * action[:, :2], 0) + 28, 0, 56).astype(int)
    image = np.repeat(back[None], length, 0)
    for t, (y, x) in enumerate(pos):
      image[t, y:y + 8, x:x + 8] = 255
    image += random.uniform(-16, 16, image.shape)
    episodes.append(dict(
        image=np.clip(image, 0, 255).astype(np.uint8),
        action=action.astype(np.float16),
        reward=(pos[:, 1] / 56).astype(np.float16),
        discount=np.ones((length,), np.float16)))
  tools.save_episodes(datadir, episodes)


def run_group(label, policies, config, args, tmp, steps, build_timeout,
              step_timeout, budget):
  """Builds one worker per policy and variant, then steps them round robin."""
  workers, results = {}, {}
  for policy, (variant, root, env) in [
      (p, v) for p in policies for v in parse_variants(args.variants)]:
    spec = dict(
        policy=policy, seed=args.seed, config=config, root=root, env=env,
        deterministic=args.deterministic,
        datadir=str(tmp / 'episodes'), logdir=str(tmp / f'{label}-{policy}'))
    policy = f'{policy} {variant}'.strip()  # The row's name from here on.
    log = tmp / f'{label}-{policy.replace(" ", "-")}.log'
    print(f'[{label}] building {policy} ...', flush=True)
    w = Worker(policy, spec, log)
    res = results[policy] = dict(steps=[], log=str(log))
    msg = w.wait(build_timeout)
    if not msg or msg.get('kind') != 'ready':
      res['error'] = w.dead or f'unexpected {msg}'
      res['build'] = None
      res['build_limit'] = build_timeout
      print(f'[{label}] {policy}: build failed ({res["error"]})', flush=True)
      _print_tail(log)
      w.close()
      continue
    res['build'], res['rss'] = msg['build'], msg['rss']
    res['build_traces'] = msg['traces']
    print(f'[{label}] {policy}: build + first step {msg["build"]:.1f} s, '
          f'peak RSS {msg["rss"]:.2f} GB', flush=True)
    workers[policy] = w
  for index in range(steps):
    for policy, w in list(workers.items()):
      if w.dead:
        continue
      spent = sum(s['time'] for s in results[policy]['steps'])
      if spent > budget:
        w.kill(f'stopped after {index} steps: step budget of {budget:.0f} s '
               'spent')
        results[policy]['error'] = w.dead
        print(f'[{label}] {policy}: {w.dead}', flush=True)
        continue
      msg = w.step(min(step_timeout, budget - spent + 60))
      res = results[policy]
      if not msg or msg.get('kind') != 'step':
        res['error'] = w.dead or f'unexpected {msg}'
        res['step_limit'] = step_timeout
        print(f'[{label}] {policy}: step {index + 1} failed '
              f'({res["error"]})', flush=True)
        _print_tail(w.log.name)
        continue
      res['steps'].append(msg)
      res['rss'] = msg['rss']
      if label == 'speed' or index in (0, steps - 1) or (index + 1) % 10 == 0:
        loss = msg['losses']['model']
        print(f'[{label}] {policy}: step {index + 1}/{steps} '
              f'{msg["time"]:.2f} s (data {msg["data_time"]:.2f} s), '
              f'model loss {loss:.2f}, traces {msg["traces"]}', flush=True)
  for w in workers.values():
    w.close()
  return results


def _print_tail(path, lines=15):
  try:
    text = pathlib.Path(path).read_text().splitlines()[-lines:]
  except OSError:
    return
  for line in text:
    print('    | ' + line)


def summarize_stability(results):
  import math
  out = {}
  for policy, res in results.items():
    model = [s['losses']['model'] for s in res['steps']]
    finite = all(math.isfinite(v) for s in res['steps']
                 for v in s['losses'].values())
    n = max(1, min(5, len(model) // 4))
    out[policy] = dict(
        n=len(model), finite=finite,
        first=model[0] if model else None, last=model[-1] if model else None,
        head=sum(model[:n]) / n if model else None,
        tail=sum(model[-n:]) / n if model else None,
        traj=model, error=res.get('error'),
        loss_scale=res['steps'][-1]['loss_scale'] if res['steps'] else None,
        step=(min(s['time'] for s in res['steps']) if res['steps'] else None))
  ref = out.get('float32')
  for policy, s in out.items():
    if not s['n']:
      s['stable'] = None
      continue
    drop = s['head'] - s['tail']
    s['drop'] = drop
    if s['error']:  # Stopped early: too few steps to judge the trend.
      s['stable'] = None
      continue
    if ref and ref['n'] and not ref['error'] and policy != 'float32':
      ref_drop = ref['head'] - ref['tail']
      s['ref_drop'] = ref_drop
      # Finite, and falls at least half as far as float32 over the run.
      s['stable'] = s['finite'] and drop >= 0.5 * ref_drop and drop > 0
    else:
      s['stable'] = s['finite'] and drop > 0
    s['drop'] = drop
  return out


def parse_variants(items):
  """[(name, code root or None, env)] from 'NAME[:root=DIR][,KEY=VALUE...]'."""
  variants = []
  for item in items:
    name, _, rest = item.partition(':')
    settings = dict(pair.split('=', 1) for pair in rest.split(',') if pair)
    root = settings.pop('root', None)
    variants.append((name, root and str(pathlib.Path(root).resolve()),
                     settings))
  return variants


def parse_overrides(items):
  sys.path.insert(0, str(ROOT))
  import tools
  defaults = dict(tools.AttrDict(_define_config()))
  overrides = {}
  for item in items:
    key, sep, value = item.partition('=')
    if not sep or key not in defaults:
      raise SystemExit(f'--set {item}: expected FLAG=VALUE with a flag of '
                       'define_config(), e.g. cnn_depth=16.')
    overrides[key] = tools.args_type(defaults[key])(value)
  return overrides


def _define_config():
  import dreamer
  return dreamer.define_config()


def fmt(value, limit=None, digits=1):
  if value is None:
    return f'> {limit:.0f}' if limit else 'n/a'
  return f'{value:.{digits}f}'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--policies', nargs='+', default=list(POLICIES),
                      choices=POLICIES)
  parser.add_argument('--steps', type=int, default=3,
                      help='timed train steps after the build')
  parser.add_argument('--batch_size', type=int, default=50)
  parser.add_argument('--batch_length', type=int, default=50)
  parser.add_argument('--build_timeout', type=float, default=480,
                      help='seconds allowed for build + first step')
  parser.add_argument('--step_timeout', type=float, default=300,
                      help='seconds allowed for one further step')
  parser.add_argument('--speed_budget', type=float, default=600,
                      help='stepping seconds per policy in the speed phase')
  parser.add_argument('--stability_steps', type=int, default=40,
                      help='train steps of the stability phase; 0 skips it')
  parser.add_argument('--stability_batch_size', type=int, default=8)
  parser.add_argument('--stability_batch_length', type=int, default=32)
  parser.add_argument('--stability_budget', type=float, default=300,
                      help='stepping seconds per policy in the stability '
                      'phase; a slower policy is stopped and reported with '
                      'the steps it made')
  parser.add_argument('--set', nargs='+', default=[], metavar='FLAG=VALUE',
                      help='other define_config() flags for both phases, '
                      'e.g. --set cnn_depth=16 num_units=200 (network sizes '
                      'of a CPU preset)')
  parser.add_argument('--deterministic', action='store_true',
                      help="TensorFlow's op determinism, as --deterministic")
  parser.add_argument(
      '--variants', nargs='+', default=[''], metavar='NAME[:SETTINGS]',
      help='run each policy once per variant, stepped in turn: SETTINGS are '
      'comma-separated KEY=VALUE environment variables (e.g. '
      'TF_NUM_INTEROP_THREADS=1) and root=DIR, a copy of the code such as '
      'a git worktree of the commit before a change')
  parser.add_argument('--skip_speed', action='store_true')
  parser.add_argument('--episodes', type=int, default=5)
  parser.add_argument('--episode_length', type=int, default=501)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--tmpdir', default=None,
                      help='keep worker logs here (default: a temp dir)')
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    return worker(json.loads(args.worker))
  overrides = parse_overrides(args.set)

  import tensorflow as tf
  cpu = 'unknown'
  with open('/proc/cpuinfo') as f:
    for line in f:
      if line.startswith('model name'):
        cpu = line.split(':', 1)[1].strip()
        break
  flags = ''
  with open('/proc/cpuinfo') as f:
    for line in f:
      if line.startswith('flags'):
        have = set(line.split(':', 1)[1].split())
        flags = ' '.join(x for x in (
            'avx512f', 'avx512_bf16', 'avx512_fp16', 'amx_bf16', 'amx_fp16')
            if x in have)
        break
  print('Dreamer train step benchmark')
  print(f'  nproc {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), '
        f'CPU {cpu} [{flags}]')
  print(f'  TensorFlow {tf.__version__}, Python {platform.python_version()}, '
        f'oneDNN opts {os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")}, '
        f'GPUs {len(tf.config.list_physical_devices("GPU"))}')
  try:
    print(f'  load average {os.getloadavg()[0]:.2f} at start')
  except OSError:
    pass
  sizes = ', '.join(f'{k} {v}' for k, v in overrides.items())
  sizes = sizes or 'full networks'
  print(f'  speed: batch {args.batch_size} x length {args.batch_length}, '
        f'horizon 15, {sizes}, {args.steps} timed steps')
  if args.stability_steps:
    print(f'  stability: batch {args.stability_batch_size} x length '
          f'{args.stability_batch_length}, {sizes}, '
          f'{args.stability_steps} steps, seed {args.seed}')
  print(flush=True)

  context = tempfile.TemporaryDirectory(prefix='dreamer-bench-')
  tmp = pathlib.Path(args.tmpdir or context.name)
  tmp.mkdir(parents=True, exist_ok=True)
  write_episodes(tmp / 'episodes', args.episodes, args.episode_length,
                 args.seed)

  speed = {}
  if not args.skip_speed:
    config = dict(
        overrides, batch_size=args.batch_size, batch_length=args.batch_length)
    speed = run_group(
        'speed', args.policies, config, args, tmp, args.steps,
        args.build_timeout, args.step_timeout, args.speed_budget)
  stab = {}
  if args.stability_steps:
    config = dict(overrides, batch_size=args.stability_batch_size,
                  batch_length=args.stability_batch_length)
    stab = summarize_stability(run_group(
        'stability', args.policies, config, args, tmp, args.stability_steps,
        args.build_timeout, args.step_timeout, args.stability_budget))

  if stab:
    print('\nStability (model loss; start/end = first/last step, '
          'head/tail = mean of first/last few steps)')
    print(f'{"policy":16} {"steps":>5} {"start":>10} {"end":>10} '
          f'{"head":>10} {"tail":>10} {"drop":>8} {"finite":>6} '
          f'{"loss scale":>10} {"stable":>6}')
    for policy, s in stab.items():
      if s['error'] and not s['n']:
        print(f'{policy:16} failed: {s["error"]}')
        continue
      print(f'{policy:16} {s["n"]:5d} {fmt(s["first"], digits=2):>10} '
            f'{fmt(s["last"], digits=2):>10} {fmt(s["head"], digits=2):>10} '
            f'{fmt(s["tail"], digits=2):>10} '
            f'{fmt(s.get("drop"), digits=2):>8} '
            f'{"yes" if s["finite"] else "NO":>6} '
            f'{fmt(s["loss_scale"], digits=0):>10} '
            f'{"yes" if s["stable"] else "no" if s["stable"] is False else "n/a":>6}'
            + (f'  ({s["error"]})' if s['error'] else ''))
    ref = stab.get('float32')
    if ref and ref['traj']:
      for policy, s in stab.items():
        if policy == 'float32' or not s['traj']:
          continue
        n = min(len(s['traj']), len(ref['traj']))
        diff = max(abs(a - b) for a, b in zip(s['traj'][:n], ref['traj'][:n]))
        print(f'  {policy}: largest |model loss - float32 model loss| over '
              f'{n} steps: {diff:.3f}')

  if speed:
    ref = speed.get('float32') or next(iter(speed.values()))
    ref_mean = None
    if ref and ref['steps']:
      ref_mean = sum(s['time'] for s in ref['steps']) / len(ref['steps'])
    print(f'\nTrain step on CPU: batch {args.batch_size} x length '
          f'{args.batch_length}, {args.steps} timed steps per policy')
    base = 'float32' if 'float32' in speed else next(iter(speed))
    header = (f'| policy | build + first step (s) | mean step (s) | '
              f'min step (s) | mean step / {base} | stable |')
    print(header)
    print('|---|---:|---:|---:|---:|---|')
    for policy, res in speed.items():
      times = [s['time'] for s in res['steps']]
      mean = sum(times) / len(times) if times else None
      low = min(times) if times else None
      if mean is not None and ref_mean:
        ratio = f'{mean / ref_mean:.2f}'
      elif mean is None and res.get('step_limit') and ref_mean:
        ratio = f'> {res["step_limit"] / ref_mean:.0f}'
      else:
        ratio = 'n/a'
      s = stab.get(policy, {})
      stable = {True: 'yes', False: 'no'}.get(s.get('stable'), 'n/a')
      if s.get('stable') is None and s.get('n'):
        stable = (f'n/a ({s["n"]} steps, '
                  f'{"all finite" if s["finite"] else "NON-FINITE"})')
      limit = res.get('step_limit') if not times else None
      print(f'| {policy} | {fmt(res["build"], res.get("build_limit"))} | '
            f'{fmt(mean, limit, 2)} | {fmt(low, limit, 2)} | {ratio} | '
            f'{stable} |')
    for policy, res in speed.items():
      notes = []
      if res['steps']:
        traces = res['steps'][-1]['traces'] - res['build_traces']
        notes.append(f'retraces in timed steps {traces} (build traced '
                     f'{res["build_traces"]}x)')
        data = max(s['data_time'] for s in res['steps'])
        notes.append(f'max data wait {data:.2f} s')
        notes.append(f'peak RSS {res["rss"]:.2f} GB')
      if res.get('error'):
        notes.append(res['error'])
      print(f'  {policy}: ' + ', '.join(notes))
  try:
    print(f'  load average {os.getloadavg()[0]:.2f} at end')
  except OSError:
    pass
  if not args.tmpdir:
    context.cleanup()


if __name__ == '__main__':
  sys.exit(main())
