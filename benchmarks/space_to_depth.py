"""The encoder's first layer as a space-to-depth convolution: is it faster?

Prints figures; it is not a test. The encoder's first layer (4 x 4 kernel,
stride 2, 64 x 64 x 3 images to 31 x 31 x 32 at the paper's depth) has only
3 input channels, a shape CPU convolution kernels handle poorly. The same
layer is a stride-1 2 x 2 convolution of `space_to_depth(x, 2)` (32 x 32 x
12) with the kernel's four phases stacked as channels. This times the
forward pass and the weight gradient (the images need none) of tf_keras's
layer and of that form, on the 2500 images of a paper-size batch, stepped
in turn, and checks that both compute the same.

  python benchmarks/space_to_depth.py --policy mixed_bfloat16
  python benchmarks/space_to_depth.py --policy float32
"""

import argparse
import os
import sys
import time

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support import onednn  # noqa: E402,F401  The kernels dreamer.py runs.

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf
from tf_keras import layers as tfkl
from tf_keras import mixed_precision as prec


def space_to_depth_conv(x, kernel, bias):
  """conv2d(x, kernel, stride 2, 'VALID') for a 4 x 4 kernel, then ReLU."""
  channels, filters = kernel.shape[2], kernel.shape[3]
  # Kernel row 2a + dy, column 2b + dx reads space_to_depth's pixel (a, b),
  # channel (2 dy + dx) * channels + c.
  phases = tf.reshape(kernel, [2, 2, 2, 2, channels, filters])
  phases = tf.transpose(phases, [0, 2, 1, 3, 4, 5])
  phases = tf.reshape(phases, [2, 2, 4 * channels, filters])
  y = tf.nn.conv2d(tf.nn.space_to_depth(x, 2), phases, 1, 'VALID')
  return tf.nn.relu(tf.nn.bias_add(y, bias))


def step_of(layer, form):
  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      if form == 'tf_keras':
        y = layer(x)
      else:
        dtype = layer.compute_dtype
        y = space_to_depth_conv(
            tf.cast(x, dtype), tf.cast(layer.kernel, dtype),
            tf.cast(layer.bias, dtype))
      loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
    return y, tape.gradient(loss, layer.trainable_variables)
  return step


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--policy', default='mixed_bfloat16')
  parser.add_argument('--batch', type=int, default=2500)
  parser.add_argument('--depth', type=int, default=32)
  parser.add_argument('--repeats', type=int, default=6)
  args = parser.parse_args()
  prec.set_global_policy(args.policy)
  x = tf.random.uniform([args.batch, 64, 64, 3], -0.5, 0.5)
  layer = tfkl.Conv2D(args.depth, 4, strides=2, activation='relu')
  layer.build(x.shape)
  steps = {form: step_of(layer, form) for form in ('tf_keras', 's2d')}
  (y1, g1), (y2, g2) = [steps[form](x) for form in steps]
  as32 = lambda t: tf.cast(t, tf.float32)
  print(f'{args.policy}, {args.batch} images, depth {args.depth}')
  print('largest output difference: '
        f'{float(tf.reduce_max(tf.abs(as32(y1) - as32(y2)))):.3g} '
        f'(largest output {float(tf.reduce_max(tf.abs(as32(y1)))):.3g})')
  for name, a, b in zip(('kernel', 'bias'), g1, g2):
    relative = tf.reduce_max(tf.abs(a - b)) / tf.reduce_max(tf.abs(a))
    print(f'{name} gradient, largest relative difference: '
          f'{float(relative):.3g}')
  times = {form: [] for form in steps}
  for _ in range(args.repeats):
    for form, step in steps.items():
      start = time.perf_counter()
      step(x)[1][0].numpy()
      times[form].append(time.perf_counter() - start)
  for form, values in times.items():
    print(f'{form}: best {min(values):.3f} s, median '
          f'{np.median(values):.3f} s')
  print('space-to-depth / tf_keras: best '
        f'{min(times["s2d"]) / min(times["tf_keras"]):.2f}, median '
        f'{np.median(times["s2d"]) / np.median(times["tf_keras"]):.2f}')


if __name__ == '__main__':
  main()
