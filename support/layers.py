"""Keras layers that compute what tf_keras's compute, faster on a CPU."""

import tensorflow as tf
from tf_keras import layers as tfkl


class Conv2DTranspose(tfkl.Conv2DTranspose):
  """A transposed convolution that does a 1x1 input as the matmul it is.

  With one input pixel, 'valid' padding and strides no larger than the
  kernel, output pixel (i, j) is the input times the kernel's slice (i, j).
  (A larger stride pads the output with the bias.) The decoder's first
  layer has that shape; at the paper's sizes oneDNN computed its weight
  gradient at about a twentieth of its matmul speed under bfloat16
  (docs/benchmarks.md: profile of one update). Same variables, same values;
  only the order of the float additions can differ.
  """

  def call(self, inputs):
    if not self._is_matmul(inputs):
      return super().call(inputs)
    rows, cols = self.kernel_size
    # Kernel (rows, cols, filters, channels) -> (channels, rows*cols*filters).
    kernel = tf.transpose(self.kernel, [3, 0, 1, 2])
    kernel = tf.reshape(kernel, [-1, rows * cols * self.filters])
    x = tf.matmul(tf.reshape(inputs, [-1, inputs.shape[-1]]), kernel)
    x = tf.reshape(x, [-1, rows, cols, self.filters])
    if self.use_bias:
      x = tf.nn.bias_add(x, self.bias)
    return self.activation(x) if self.activation is not None else x

  def _is_matmul(self, inputs):
    return (
        tuple(inputs.shape[1:3]) == (1, 1) and self.padding == 'valid' and
        self.data_format == 'channels_last' and self.output_padding is None
        and tuple(self.dilation_rate) == (1, 1) and all(
            s <= k for s, k in zip(self.strides, self.kernel_size)))
