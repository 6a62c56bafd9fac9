"""benchmarks/profile_update.py: the FLOP count behind the update's limit."""

import pytest
import tensorflow as tf
from tf_keras import layers as tfkl

import runs


@pytest.fixture(scope='module')
def profile_update():
  return runs.load_benchmark('profile_update')


def flops_of(profile_update, fn, *inputs):
  return profile_update.graph_flops(
      tf.function(fn).get_concrete_function(*inputs).graph)


def test_matmul_and_its_gradients(profile_update):
  a, b = tf.zeros((8, 16)), tf.zeros((16, 4))
  assert flops_of(profile_update, tf.matmul, a, b) == 2 * 8 * 16 * 4

  def step(a, b):
    with tf.GradientTape() as tape:
      tape.watch([a, b])
      out = tf.matmul(a, b)
    return tape.gradient(out, [a, b])
  assert flops_of(profile_update, step, a, b) == 3 * 2 * 8 * 16 * 4


def test_convolutions_forward_and_backward(profile_update):
  conv = tfkl.Conv2D(6, 4, strides=2)
  deconv = tfkl.Conv2DTranspose(3, 6, strides=2)
  x = tf.zeros((2, 14, 14, 5))
  conv.build(x.shape)
  deconv.build((2, 6, 6, 6))
  # Conv: a 6x6x6 output, each from 4*4*5 inputs. Deconv: the same
  # products as the convolution whose gradient it is, 6x6x6 times 6*6*3.
  forward = 2 * 2 * 6 * 6 * 6 * 4 * 4 * 5 + 2 * 2 * 6 * 6 * 6 * 6 * 6 * 3
  assert flops_of(profile_update, lambda x: deconv(conv(x)), x) == forward

  def step(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      out = deconv(conv(x))
    return tape.gradient(out, [x] + conv.variables + deconv.variables)
  # Each gradient (input and weights) costs what its forward op costs.
  assert flops_of(profile_update, step, x) == 3 * forward


def test_every_call_of_a_function_counts(profile_update):
  # As the RSSM's obs_step, a tf.function called once per time step.
  inner = tf.function(tf.matmul)
  a, b = tf.zeros((8, 16)), tf.zeros((16, 4))
  calls = lambda a, b: [inner(a, b) for _ in range(3)]
  assert flops_of(profile_update, calls, a, b) == 3 * 2 * 8 * 16 * 4


def test_counted_op_types_are_those_of_the_flop_count(profile_update):
  # Profiled names after oneDNN's rewrites, and TensorFlow's own.
  for kind in ('_MklMatMul', '_MklNativeFusedMatMul', 'BatchMatMulV2',
               '_MklNativeConv2DBackpropFilterWithBias', 'Conv2D',
               '_MklNativePadWithConv2D', 'Conv2DBackpropInput'):
    assert profile_update.counted(kind), kind
  for kind in ('Elu', 'EluGrad', 'BiasAddGrad', 'Cast', 'Dataset', 'L2Loss'):
    assert not profile_update.counted(kind), kind
