"""Single layers at the paper's sizes: ours against tf_keras's, and XLA.

Times one layer's forward and backward pass (gradients of the input and the
weights of a squared-sum loss), best of several, in one process:

- the convolutions that `support/layers.py` computes in another form, both
  the faster layers it uses and the ones it leaves to tf_keras, to show
  where each form applies;
- XLA (`jit_compile=True`) against the plain graph, for a convolution and a
  three-layer ELU MLP, to see whether XLA's CPU kernels or only its size
  made the whole train step slow.

  python benchmarks/layers.py --policy mixed_bfloat16
  python benchmarks/layers.py --policy float32 --batch 800 --depth 16

Each row's ratio is measured in this run; compare ratios, not seconds.
"""

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf
from tf_keras import layers as tfkl
from tf_keras import mixed_precision as prec

from support import layers


def time_step(fn, x, repeats, jit=False):
  """Best and median seconds of one forward and backward pass."""
  @tf.function(jit_compile=jit)
  def step(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(tf.cast(fn(x), tf.float32) ** 2)
    return tape.gradient(loss, [x] + list(tape.watched_variables()))

  [g.numpy() for g in step(x)]
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    [g.numpy() for g in step(x)]
    times.append(time.perf_counter() - start)
  return min(times), float(np.median(times))


def conv_layers(depth):
  """(name, input shape, layer class name, kwargs) of the conv layers."""
  d = depth
  return [
      ('encoder h3: 14x14x%d -> 6x6' % (2 * d), (14, 14, 2 * d), 'Conv2D',
       dict(filters=4 * d, kernel_size=4, strides=2, activation='relu')),
      ('encoder h4: 6x6x%d -> 2x2' % (4 * d), (6, 6, 4 * d), 'Conv2D',
       dict(filters=8 * d, kernel_size=4, strides=2, activation='relu')),
      ('decoder h4: 13x13x%d -> 30x30' % (2 * d), (13, 13, 2 * d),
       'Conv2DTranspose',
       dict(filters=d, kernel_size=6, strides=2, activation='relu')),
      ('decoder h5: 30x30x%d -> 64x64x3' % d, (30, 30, d), 'Conv2DTranspose',
       dict(filters=3, kernel_size=6, strides=2)),
  ]


def compare_layers(args):
  print('| layer | form of ours | tf_keras s | ours s | ours / tf_keras |')
  print('|---|---|---:|---:|---:|')
  rng = np.random.default_rng(0)
  for name, shape, kind, kwargs in conv_layers(args.depth):
    x = tf.constant(rng.normal(size=(args.batch,) + shape), tf.float32)
    times = []
    for module in (tfkl, layers):
      layer = getattr(module, kind)(**kwargs)
      layer.build(x.shape)
      times.append(time_step(layer, x, args.repeats)[0])
    ours = getattr(layers, kind)(**kwargs)
    form = ('sub-pixel' if kind == 'Conv2DTranspose' and ours._is_sub_pixel(x)
            else 'patch matmul' if kind == 'Conv2D' and
            ours._is_patch_matmul(x) else "tf_keras's")
    print(f'| {name} | {form} | {times[0]:.3f} | {times[1]:.3f} | '
          f'{times[1] / times[0]:.2f} |', flush=True)


def compare_xla(args):
  print('\n| part | graph s | XLA s | XLA / graph |')
  print('|---|---:|---:|---:|')
  rng = np.random.default_rng(1)
  conv = tfkl.Conv2D(2 * args.depth, 4, strides=2, activation='relu')
  images = tf.constant(
      rng.normal(size=(args.batch, 31, 31, args.depth)), tf.float32)
  mlp = [tfkl.Dense(400, tf.nn.elu) for _ in range(3)]
  features = tf.constant(rng.normal(size=(6 * args.batch, 230)), tf.float32)

  def run_mlp(x):
    for layer in mlp:
      x = layer(x)
    return x

  for name, fn, x in [
      ('encoder h2 (31x31x%d, 4x4, stride 2)' % args.depth, conv, images),
      ('3-layer ELU MLP, 400 units, %d rows' % (6 * args.batch), run_mlp,
       features)]:
    graph = time_step(fn, x, args.repeats)[0]
    xla = time_step(fn, x, args.repeats, jit=True)[0]
    print(f'| {name} | {graph:.3f} | {xla:.3f} | {xla / graph:.2f} |',
          flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
      '--policy', default='mixed_bfloat16',
      choices=['float32', 'mixed_bfloat16'])
  parser.add_argument('--batch', type=int, default=2500,
                      help='images per pass: batch_size x batch_length')
  parser.add_argument('--depth', type=int, default=32, help='cnn_depth')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--skip_xla', action='store_true')
  args = parser.parse_args()
  prec.set_global_policy(args.policy)
  print(f'{args.policy}, {args.batch} images, cnn_depth {args.depth}, '
        f'best of {args.repeats}\n')
  compare_layers(args)
  if not args.skip_xla:
    compare_xla(args)


if __name__ == '__main__':
  main()
