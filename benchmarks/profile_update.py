"""Where the time of one Dreamer update goes, and how far it is from the limit.

Prints figures; it is not a test. In one process: builds the agent at
define_config() defaults (batch 50 x 50, horizon 15, full networks) under one
Keras policy on walker-shaped synthetic episodes, counts the FLOPs of the
traced train step from its graph, times a few updates, profiles more with
TensorFlow's profiler, and times tf.matmul on the same machine. The limit is
the update's FLOPs at the best matmul rate; the ratio is update time / limit.

  python benchmarks/profile_update.py --policy mixed_bfloat16
  python benchmarks/profile_update.py --policy float32 --batch_size 4 \
      --batch_length 16 --steps 2                      # a quick smoke run
"""

import argparse
import collections
import glob
import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('MUJOCO_GL', 'egl')

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))
from support import onednn  # noqa: E402,F401  The kernels dreamer.py runs.

def matmul_flops(op):
  """FLOPs of one matmul or convolution op from its static shapes."""
  shape = lambda t: t.shape.as_list()
  if op.type in ('MatMul', 'BatchMatMulV2', 'BatchMatMulV3', 'BatchMatMul'):
    out = shape(op.outputs[0])
    a = shape(op.inputs[0])
    adj = op.get_attr('transpose_a' if op.type == 'MatMul' else 'adj_x')
    inner = a[-2] if adj else a[-1]
    count = 1
    for size in out:
      count *= size
    return 2 * count * inner
  if op.type == 'Conv2D':
    kh, kw, cin, _ = shape(op.inputs[1])
    out = shape(op.outputs[0])
  elif op.type == 'Conv2DBackpropInput':
    kh, kw, cin, _ = shape(op.inputs[1])
    out = shape(op.inputs[2])
  elif op.type == 'Conv2DBackpropFilter':
    kh, kw, cin, _ = shape(op.outputs[0])  # The filter's gradient.
    out = shape(op.inputs[2])
  else:
    return 0
  count = 1
  for size in out:
    count *= size
  return 2 * count * kh * kw * cin


def graph_flops(graph, cache=None):
  """Sum of matmul and convolution FLOPs, into every call of a function.

  The branches of conds are left out: the train step's only one, replica 0's
  scalar summaries, costs about 0.3% of the update.
  """
  cache = {} if cache is None else cache
  total = 0
  for op in graph.get_operations():
    total += matmul_flops(op)
    if op.type in ('PartitionedCall', 'StatefulPartitionedCall'):
      name = op.get_attr('f').name
      if name not in cache:
        cache[name] = graph_flops(graph._get_function(name).graph, cache)
      total += cache[name]  # Once per call: obs_step runs 50 times.
  return total


def build(args, tmp):
  import numpy as np
  import tensorflow as tf
  import tf_keras
  import train_step  # benchmarks/train_step.py: episodes and agent.
  tf_keras.mixed_precision.set_global_policy(args.policy)
  np.random.seed(0)
  tf.random.set_seed(0)
  overrides = dict(batch_size=args.batch_size, batch_length=args.batch_length)
  overrides.update(train_step.parse_overrides(args.set))
  datadir = pathlib.Path(tmp) / 'episodes'
  train_step.write_episodes(datadir, 5, 501, 0)
  return train_step.make_agent(
      args.policy, overrides, datadir, pathlib.Path(tmp) / 'logdir')


def step(agent):
  with agent._strategy.scope():  # Outside it, train() would retrace.
    data = next(agent._dataset)
    start = time.perf_counter()
    losses = agent.train(data)
    {k: float(v) for k, v in losses.items()}  # Waits for the update.
  return time.perf_counter() - start


def op_stats(logdir):
  """[(op name, op type, self time in us)] from the profiler's trace."""
  from tensorflow.python.profiler.internal import _pywrap_profiler_plugin
  path = sorted(glob.glob(f'{logdir}/**/*.xplane.pb', recursive=True))[-1]
  data, ok = _pywrap_profiler_plugin.xspace_to_tools_data(
      [path], 'framework_op_stats', {})
  assert ok, 'the profiler gave no op statistics'
  table = json.loads(data)[0]
  cols = [c['id'] for c in table['cols']]
  rows = []
  for row in table['rows']:
    values = dict(zip(cols, [cell['v'] for cell in row['c']]))
    if values['host_or_device'] == 'Host' and values['type'] != 'IDLE':
      rows.append((values['operation'], values['type'],
                   values['total_self_time']))
  return rows


def layer_parts(agent):
  """{layer name: network}: op names carry the Keras layer, not the module."""
  import tf_keras
  networks = dict(
      encoder=agent._encode, RSSM=agent._dynamics, decoder=agent._decode,
      reward=agent._reward, value=agent._value, actor=agent._actor)
  if agent._c.pcont:
    networks['pcont'] = agent._pcont
  layers = {}
  for network, module in networks.items():
    for layer in list(module._modules.values()) + [
        value for value in vars(module).values()  # The RSSM's GRU cell.
        if isinstance(value, tf_keras.layers.Layer)]:
      layers[layer.name] = network
  return layers


def part_of(name, layers):
  for component in name.split('/'):
    if component in layers:
      return layers[component]
    if component.startswith('Adam') or component.startswith('global_norm'):
      return 'optimizers'
  return 'other (losses, distributions, data, casts)'


def counted(kind):
  """Whether a profiled op type is one whose FLOPs the limit counts.

  oneDNN's rewrites keep the name of the op they replace (`_MklMatMul`,
  `_MklNativeFusedConv2D`, `_MklNativeConv2DBackpropFilterWithBias`).
  """
  return 'MatMul' in kind or 'Conv2D' in kind


def report_matmuls(by_type, total, steps, flops, rate):
  """The counted ops' thread time, and their rate over all cores."""
  time_us = sum(t for kind, t in by_type.items() if counted(kind))
  seconds, cores = time_us / steps / 1e6, os.cpu_count()
  achieved = flops / (seconds / cores) / 1e9
  print(f'\nMatmuls and convolutions: {seconds:.2f} s of the '
        f'{total / steps / 1e6:.2f} s ({time_us / total:.0%}); '
        f'over {cores} cores {achieved:.0f} GFLOP/s, '
        f'{achieved / rate:.0%} of the best matmul.')


def report(rows, steps, layers, top, flops, rate):
  total = sum(t for _, _, t in rows)
  by_part, by_type = collections.Counter(), collections.Counter()
  for name, kind, time_us in rows:
    backward = 'gradient_tape/' in name or 'gradients/' in name
    by_part[part_of(name, layers), 'backward' if backward else 'forward'] += (
        time_us)
    by_type[kind] += time_us
  print(f'\nProfiled op self time: {total / steps / 1e6:.2f} s per update '
        f'(summed over threads)\n')
  print('| part | forward s | backward s | share |')
  print('|---|---:|---:|---:|')
  parts = {part for part, _ in by_part}
  for part in sorted(parts, key=lambda p: -(
      by_part[p, 'forward'] + by_part[p, 'backward'])):
    fwd, bwd = by_part[part, 'forward'], by_part[part, 'backward']
    print(f'| {part} | {fwd / steps / 1e6:.2f} | {bwd / steps / 1e6:.2f} | '
          f'{(fwd + bwd) / total:.0%} |')
  print('\n| op type | s per update | share |')
  print('|---|---:|---:|')
  for kind, time_us in by_type.most_common(15):
    print(f'| {kind} | {time_us / steps / 1e6:.2f} | {time_us / total:.0%} |')
  report_matmuls(by_type, total, steps, flops, rate)
  if top:
    print('\n| op | type | network | s per update |')
    print('|---|---|---|---:|')
    for name, kind, time_us in sorted(rows, key=lambda r: -r[2])[:top]:
      print(f'| {name} | {kind} | {part_of(name, layers)} | '
            f'{time_us / steps / 1e6:.3f} |')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--policy', default='mixed_bfloat16',
                      choices=['float32', 'mixed_bfloat16'])
  parser.add_argument('--batch_size', type=int, default=50)
  parser.add_argument('--batch_length', type=int, default=50)
  parser.add_argument('--steps', type=int, default=3,
                      help='timed updates, then as many profiled')
  parser.add_argument('--top', type=int, default=10,
                      help='also list the slowest single ops')
  parser.add_argument('--set', nargs='+', default=[], metavar='FLAG=VALUE',
                      help='more config overrides, e.g. cnn_depth=16')
  args = parser.parse_args()
  import tensorflow as tf
  import matmul
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    agent = build(args, tmp)
    print(f'Built in {time.perf_counter() - start:.1f} s '
          f'({args.policy}, batch {args.batch_size} x {args.batch_length}).')
    with agent._strategy.scope():  # The trace that step() runs.
      concrete = agent.train.get_concrete_function(
          next(agent._dataset), False)
    flops = graph_flops(concrete.graph)
    times = [step(agent) for _ in range(args.steps)]
    logdir = pathlib.Path(tmp) / 'profile'
    tf.profiler.experimental.start(str(logdir))
    for _ in range(args.steps):
      step(agent)
    tf.profiler.experimental.stop()
    rows = op_stats(logdir)
    layers = layer_parts(agent)
  dtype = 'float32' if args.policy == 'float32' else 'bfloat16'
  rate = max(matmul.measure([dtype])[dtype].values())
  limit = flops / rate / 1e9
  best, mean = min(times), sum(times) / len(times)
  print(f'Update: {" / ".join(f"{t:.2f}" for t in times)} s '
        f'(mean {mean:.2f}, best {best:.2f}).')
  print(f'FLOPs per update (matmuls and convolutions): {flops / 1e12:.3f} T.')
  print(f'Best {dtype} matmul: {rate:.0f} GFLOP/s, so the limit is '
        f'{limit:.2f} s; best update / limit = {best / limit:.2f}, '
        f'mean / limit = {mean / limit:.2f}.')
  report(rows, args.steps, layers, args.top, flops, rate)


if __name__ == '__main__':
  main()
