"""layers.py: Keras layers that compute what tf_keras's compute, faster."""

import numpy as np
import pytest
import tensorflow as tf
from tf_keras import layers as tfkl
from tf_keras import mixed_precision as prec

from support import layers


def pair(inputs, kind='Conv2DTranspose', **kwargs):
  """Ours and tf_keras's layer of that kind with the same weights."""
  ours = getattr(layers, kind)(**kwargs)
  theirs = getattr(tfkl, kind)(**kwargs)
  ours.build(inputs.shape)
  theirs.build(inputs.shape)
  rng = np.random.RandomState(0)
  weights = [rng.normal(0, 0.1, w.shape) for w in ours.get_weights()]
  ours.set_weights(weights)
  theirs.set_weights(weights)
  return ours, theirs


def outputs_and_gradients(layer, inputs):
  with tf.GradientTape() as tape:
    tape.watch(inputs)
    outputs = layer(inputs)
    # Weighted, so that each output pixel and channel has its own gradient.
    loss = tf.reduce_sum(
        tf.cast(outputs, tf.float32) * tf.reshape(tf.range(
            tf.size(outputs), dtype=tf.float32), outputs.shape))
  grads = tape.gradient(loss, [inputs] + layer.trainable_variables)
  return [outputs] + grads


@pytest.mark.parametrize('strides, activation', [
    (2, 'relu'), (1, None), (3, 'elu')])
def test_one_pixel_input_matches_tf_keras(strides, activation):
  inputs = tf.random.stateless_normal((6, 1, 1, 32), (1, 2))
  ours, theirs = pair(
      inputs, filters=8, kernel_size=5, strides=strides,
      activation=activation)
  for a, b in zip(outputs_and_gradients(ours, inputs),
                  outputs_and_gradients(theirs, inputs)):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)  # Sum order.


def test_one_pixel_input_is_a_matmul():
  inputs = tf.zeros((2, 1, 1, 4))
  ours, _ = pair(inputs, filters=3, kernel_size=5, strides=2)
  graph = tf.function(ours).get_concrete_function(inputs).graph
  types = {op.type for op in graph.get_operations()}
  assert 'MatMul' in types and 'Conv2DBackpropInput' not in types, types


def test_larger_input_is_the_convolution():
  inputs = tf.random.stateless_normal((2, 3, 3, 4), (3, 4))
  ours, theirs = pair(inputs, filters=3, kernel_size=5, strides=2)
  np.testing.assert_array_equal(ours(inputs), theirs(inputs))
  graph = tf.function(ours).get_concrete_function(inputs).graph
  assert 'Conv2DBackpropInput' in {op.type for op in graph.get_operations()}


@pytest.mark.parametrize('kernel, strides', [(2, 3), ((2, 5), (3, 1))])
def test_stride_above_kernel_is_the_convolution(kernel, strides):
  # The output is then larger than the kernel, padded with the bias.
  inputs = tf.random.stateless_normal((2, 1, 1, 4), (7, 8))
  ours, theirs = pair(inputs, filters=3, kernel_size=kernel, strides=strides)
  a, b = ours(inputs), theirs(inputs)
  assert a.shape == b.shape
  np.testing.assert_array_equal(a, b)


def assert_same_outputs_and_gradients(ours, theirs, inputs):
  for a, b in zip(outputs_and_gradients(ours, inputs),
                  outputs_and_gradients(theirs, inputs)):
    assert a.shape == b.shape
    scale = float(tf.reduce_max(tf.abs(b)))  # Sum order: relative to it.
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)


def op_types(layer, inputs):
  """The op types of the layer's forward and backward pass."""
  graph = tf.function(
      lambda x: outputs_and_gradients(layer, x)).get_concrete_function(
          inputs).graph
  return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize('size, kernel, filters, activation', [
    (30, 6, 3, None), (5, 4, 2, 'relu'), (3, 2, 4, 'elu'), ((5, 7), 4, 3, None),
    ((1, 4), 6, 1, None)])
def test_sub_pixel_matches_tf_keras(size, kernel, filters, activation):
  rows, cols = size if isinstance(size, tuple) else (size, size)
  inputs = tf.random.stateless_normal((3, rows, cols, 8), (9, 1))
  ours, theirs = pair(
      inputs, filters=filters, kernel_size=kernel, strides=2,
      activation=activation)
  assert 'DepthToSpace' in op_types(ours, inputs)
  assert_same_outputs_and_gradients(ours, theirs, inputs)


def test_sub_pixel_with_sizes_known_only_when_run():
  inputs = tf.random.stateless_normal((2, 9, 9, 4), (9, 5))
  ours, theirs = pair(inputs, filters=3, kernel_size=6, strides=2)
  spec = tf.TensorSpec((None, None, None, 4))
  np.testing.assert_allclose(
      tf.function(ours, input_signature=[spec])(inputs),
      theirs(inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('filters, kernel, kwargs', [
    (32, 6, dict(strides=2)), (3, 5, dict(strides=2)),
    (3, 6, dict(strides=3)), (3, (6, 4), dict(strides=2)),
    (3, 6, dict(strides=2, padding='same')),
    (3, 6, dict(strides=2, output_padding=1))])
def test_sub_pixel_only_where_it_applies(filters, kernel, kwargs):
  inputs = tf.random.stateless_normal((2, 7, 7, 4), (9, 2))
  ours, theirs = pair(inputs, filters=filters, kernel_size=kernel, **kwargs)
  assert 'DepthToSpace' not in op_types(ours, inputs)
  np.testing.assert_array_equal(ours(inputs), theirs(inputs))


def test_one_pixel_input_takes_the_matmul_before_the_sub_pixel_form():
  inputs = tf.random.stateless_normal((2, 1, 1, 4), (9, 6))
  ours, _ = pair(inputs, filters=3, kernel_size=6, strides=2)
  types = op_types(ours, inputs)
  assert 'MatMul' in types and 'DepthToSpace' not in types, types


def test_forms_measured_on_a_cpu_stay_off_a_gpu(monkeypatch):
  monkeypatch.setattr(layers, 'on_cpu_only', lambda: False)
  inputs = tf.random.stateless_normal((2, 6, 6, 4), (9, 7))
  ours, _ = pair(inputs, filters=3, kernel_size=6, strides=2)
  assert 'DepthToSpace' not in op_types(ours, inputs)
  ours, _ = pair(inputs, 'Conv2D', filters=3, kernel_size=4, strides=2)
  assert 'ExtractImagePatches' not in op_types(ours, inputs)


@pytest.mark.parametrize('size, kernel, strides, channels', [
    (6, 4, 2, 16), (3, 2, 1, 8), (7, 4, 3, 4), ((6, 9), (4, 3), (2, 3), 5),
    ((6, 12), 4, (2, 4), 2)])  # 2 x 3 patches: 1.3 times the input.
def test_patch_gradient_matches_tf_keras(size, kernel, strides, channels):
  rows, cols = size if isinstance(size, tuple) else (size, size)
  inputs = tf.random.stateless_normal((3, rows, cols, channels), (9, 3))
  ours, theirs = pair(
      inputs, 'Conv2D', filters=5, kernel_size=kernel, strides=strides,
      activation='relu')
  assert 'ExtractImagePatches' in op_types(ours, inputs)
  assert_same_outputs_and_gradients(ours, theirs, inputs)


@pytest.mark.parametrize('shape, kwargs', [
    # 14 x 14 inputs give 36 patches of 16 pixels, 2.9 times the input.
    ((2, 14, 14, 4), dict(kernel_size=4, strides=2)),
    ((2, 6, 6, 4), dict(kernel_size=4, strides=2, padding='same')),
    ((2, 3, 3, 4), dict(kernel_size=2, dilation_rate=2)),
    ((2, 3, 6, 6, 4), dict(kernel_size=4, strides=2)),  # 2 batch dims.
    ((2, 6, 6, 4), dict(kernel_size=4, strides=2, groups=2))])
def test_patch_gradient_only_for_few_patches(shape, kwargs):
  inputs = tf.random.stateless_normal(shape, (9, 4))
  ours, theirs = pair(inputs, 'Conv2D', filters=4, **kwargs)
  assert 'ExtractImagePatches' not in op_types(ours, inputs)
  for a, b in zip(outputs_and_gradients(ours, inputs),
                  outputs_and_gradients(theirs, inputs)):
    np.testing.assert_array_equal(a, b)


def test_patch_gradient_with_sizes_known_only_when_run():
  inputs = tf.random.stateless_normal((2, 6, 6, 4), (9, 8))
  ours, theirs = pair(inputs, 'Conv2D', filters=3, kernel_size=4, strides=2)
  spec = tf.TensorSpec((None, None, None, 4))
  np.testing.assert_array_equal(
      tf.function(ours, input_signature=[spec])(inputs), theirs(inputs))


@pytest.mark.parametrize('kind, shape, kwargs', [
    ('Conv2DTranspose', (4, 1, 1, 16), dict(filters=8, kernel_size=5)),
    ('Conv2DTranspose', (4, 9, 9, 16), dict(filters=3, kernel_size=6)),
    ('Conv2D', (4, 6, 6, 16), dict(filters=8, kernel_size=4))])
def test_mixed_bfloat16_computes_in_bfloat16(kind, shape, kwargs):
  before = prec.global_policy()
  prec.set_global_policy('mixed_bfloat16')
  try:
    inputs = tf.random.stateless_normal(shape, (5, 6))
    ours, theirs = pair(inputs, kind, strides=2, **kwargs)
    assert ours(inputs).dtype == theirs(inputs).dtype == tf.bfloat16
    assert ours.kernel.dtype == tf.float32  # The variables stay float32.
    for a, b in zip(outputs_and_gradients(ours, inputs),
                    outputs_and_gradients(theirs, inputs)):
      assert a.dtype == b.dtype
      # Relative to the largest entry: bfloat16 keeps 8 bits of mantissa.
      scale = float(tf.reduce_max(tf.abs(tf.cast(b, tf.float32))))
      np.testing.assert_allclose(
          tf.cast(a, tf.float32), tf.cast(b, tf.float32), atol=0.02 * scale)
  finally:
    prec.set_global_policy(before)
