"""Single layers at the paper's sizes: ours against tf_keras's, and XLA.

Times one layer's forward and backward pass (gradients of the input and the
weights of a squared-sum loss), best of several, in one process:

- the encoder's and decoder's convolutions: tf_keras's layer, ours (which
  `support/layers.py` computes in another form where the shape is one it
  was measured faster for), and, where ours is tf_keras's, ours with the
  other form forced on, to show where each form applies;
- XLA (`jit_compile=True`) against the plain graph, for a convolution and a
  three-layer ELU MLP, to see whether XLA's CPU kernels or only its size
  made the whole train step slow;
- a value head (three 400-unit ELU layers) on imagined features of shape
  [15, batch, 230], as tf_keras computes it (tensordot) and flattened to 2-D
  first, which lets grappler fuse the matmul, bias and ELU.

  python benchmarks/layers.py --policy mixed_bfloat16
  python benchmarks/layers.py --policy float32 --batch 800 --depth 16 \\
      --parts layers

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
from support import onednn  # noqa: E402,F401  The kernels dreamer.py runs.

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

  tf.nest.map_structure(lambda g: g.numpy(), step(x))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    tf.nest.map_structure(lambda g: g.numpy(), step(x))
    times.append(time.perf_counter() - start)
  return min(times), float(np.median(times))


def conv_layers(depth):
  """(name, input shape, layer class name, kwargs) of the conv layers."""
  d, relu = depth, dict(strides=2, activation='relu')
  return [
      ('encoder h1: 64x64x3 -> 31x31', (64, 64, 3), 'Conv2D',
       dict(filters=d, kernel_size=4, **relu)),
      ('encoder h2: 31x31x%d -> 14x14' % d, (31, 31, d), 'Conv2D',
       dict(filters=2 * d, kernel_size=4, **relu)),
      ('encoder h3: 14x14x%d -> 6x6' % (2 * d), (14, 14, 2 * d), 'Conv2D',
       dict(filters=4 * d, kernel_size=4, **relu)),
      ('encoder h4: 6x6x%d -> 2x2' % (4 * d), (6, 6, 4 * d), 'Conv2D',
       dict(filters=8 * d, kernel_size=4, **relu)),
      ('decoder h4: 13x13x%d -> 30x30' % (2 * d), (13, 13, 2 * d),
       'Conv2DTranspose', dict(filters=d, kernel_size=6, **relu)),
      ('decoder h5: 30x30x%d -> 64x64x3' % d, (30, 30, d), 'Conv2DTranspose',
       dict(filters=3, kernel_size=6, strides=2)),
  ]


def form_of(layer, x):
  if isinstance(layer, layers.Conv2DTranspose):
    return 'sub-pixel' if layer.uses_sub_pixel(x) else None
  return 'patch matmul' if layer.uses_patch_matmul(x) else None


def compare_layers(args):
  """tf_keras's layer, ours, and ours with its other form forced on."""
  print('| layer | form of ours | tf_keras s | ours / tf_keras | '
        'other form forced / tf_keras |')
  print('|---|---|---:|---:|---:|')
  rng = np.random.default_rng(0)
  limits = layers.SUB_PIXEL_MAX_FILTERS, layers.PATCH_MAX_GROWTH
  for name, shape, kind, kwargs in conv_layers(args.depth):
    x = tf.constant(rng.normal(size=(args.batch,) + shape), tf.float32)
    times, forms = [], []
    for module, forced in ((tfkl, False), (layers, False), (layers, True)):
      layer = getattr(module, kind)(**kwargs)
      layer.build(x.shape)
      if forced:  # The limits are read when the step is traced.
        layers.SUB_PIXEL_MAX_FILTERS, layers.PATCH_MAX_GROWTH = 10**9, 10**9
      try:
        if module is layers:
          forms.append(form_of(layer, x))
        times.append(time_step(layer, x, args.repeats)[0])
      finally:
        layers.SUB_PIXEL_MAX_FILTERS, layers.PATCH_MAX_GROWTH = limits
    other = (f'{times[2] / times[0]:.2f}' if not forms[0] and forms[1]
             else 'n/a')
    form = forms[0] or "tf_keras's"
    print(f'| {name} | {form} | {times[0]:.3f} | '
          f'{times[1] / times[0]:.2f} | {other} |', flush=True)


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


class FlatDense(tfkl.Dense):
  """tf_keras's Dense on a 2-D view of its input, so grappler can fuse."""

  def call(self, inputs):
    flat = tf.reshape(inputs, [-1, inputs.shape[-1]])
    outputs = super().call(flat)
    return tf.reshape(
        outputs, tf.concat([tf.shape(inputs)[:-1], [self.units]], 0))


def compare_dense(args):
  """A value head on imagined features [horizon, batch, feat]: tensordot."""
  print('\n| value head on [15, %d, 230] | s |' % args.batch)
  print('|---|---:|')
  features = tf.constant(np.random.default_rng(2).normal(
      size=(15, args.batch, 230)), tf.float32)
  times = {}
  for name, dense in [("tf_keras's Dense (tensordot)", tfkl.Dense),
                      ('flattened to 2-D first', FlatDense)]:
    head = [dense(400, tf.nn.elu) for _ in range(3)] + [dense(1)]

    def run(x, head=head):
      for layer in head:
        x = layer(x)
      return x

    times[name] = time_step(run, features, args.repeats)[0]
    print(f'| {name} | {times[name]:.3f} |', flush=True)
  first, second = times.values()
  print(f'| ratio | {second / first:.2f} |')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
      '--policy', default='mixed_bfloat16',
      choices=['float32', 'mixed_bfloat16'])
  parser.add_argument('--batch', type=int, default=2500,
                      help='images per pass: batch_size x batch_length')
  parser.add_argument('--depth', type=int, default=32, help='cnn_depth')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument(
      '--parts', nargs='+', default=['layers', 'xla', 'dense'],
      choices=['layers', 'xla', 'dense'])
  args = parser.parse_args()
  prec.set_global_policy(args.policy)
  print(f'{args.policy}, {args.batch} images, cnn_depth {args.depth}, '
        f'best of {args.repeats}\n')
  for part in args.parts:
    {'layers': compare_layers, 'xla': compare_xla,
     'dense': compare_dense}[part](args)


if __name__ == '__main__':
  main()
