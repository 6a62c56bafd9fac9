"""layers.py: Keras layers that compute what tf_keras's compute, faster."""

import numpy as np
import pytest
import tensorflow as tf
from tf_keras import layers as tfkl
from tf_keras import mixed_precision as prec

from support import layers


def pair(inputs, **kwargs):
  """Ours and tf_keras's Conv2DTranspose with the same weights."""
  ours = layers.Conv2DTranspose(**kwargs)
  theirs = tfkl.Conv2DTranspose(**kwargs)
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


def test_mixed_bfloat16_computes_in_bfloat16():
  prec.set_global_policy('mixed_bfloat16')
  try:
    inputs = tf.random.stateless_normal((4, 1, 1, 16), (5, 6))
    ours, theirs = pair(inputs, filters=8, kernel_size=5, strides=2)
    a, b = ours(inputs), theirs(inputs)
    assert a.dtype == b.dtype == tf.bfloat16
    assert ours.kernel.dtype == tf.float32  # The variables stay float32.
    np.testing.assert_allclose(
        tf.cast(a, tf.float32), tf.cast(b, tf.float32), rtol=0.02, atol=0.02)
  finally:
    prec.set_global_policy('float32')
