"""Keras layers that compute what tf_keras's compute, faster on a CPU."""

import tensorflow as tf
from tf_keras import layers as tfkl

# Where each faster form applies: shapes like those it was timed faster for
# at the paper's sizes on a CPU (benchmarks/layers.py, in
# docs/benchmarks.md). Only the 1x1 matmul is also used on a GPU; the other
# two were not measured there.
SUB_PIXEL_MAX_FILTERS = 4
PATCH_MAX_GROWTH = 2


def on_cpu_only():
  return not tf.config.list_logical_devices('GPU')


class Conv2DTranspose(tfkl.Conv2DTranspose):
  """A transposed convolution in forms that oneDNN runs faster.

  With few filters (the decoder's last layer: 3), a stride-2 layer with an
  even kernel is a sub-pixel convolution (`_sub_pixel_transpose`).

  A 1x1 input is the matmul it is: with 'valid' padding and strides no
  larger than the kernel (a larger one pads the output with the bias),
  output pixel (i, j) is the input times the kernel's slice (i, j). The
  decoder's first layer has that shape; at the paper's sizes oneDNN computed its weight
  gradient at about a twentieth of its matmul speed under bfloat16
  (docs/benchmarks.md: profile of one update). Same variables, same values;
  only the order of the float additions can differ.
  """

  def call(self, inputs):
    if self.uses_sub_pixel(inputs):
      return self._finish(_sub_pixel_transpose(
          inputs, tf.convert_to_tensor(self.kernel), self.kernel_size[0]))
    if not self.uses_matmul(inputs):
      return super().call(inputs)
    rows, cols = self.kernel_size
    # Kernel (rows, cols, filters, channels) -> (channels, rows*cols*filters).
    kernel = tf.transpose(self.kernel, [3, 0, 1, 2])
    kernel = tf.reshape(kernel, [-1, rows * cols * self.filters])
    x = tf.matmul(tf.reshape(inputs, [-1, inputs.shape[-1]]), kernel)
    return self._finish(tf.reshape(x, [-1, rows, cols, self.filters]))

  def _finish(self, x):
    if self.use_bias:
      x = tf.nn.bias_add(x, self.bias)
    return self.activation(x) if self.activation is not None else x

  def uses_matmul(self, inputs):
    return (
        tuple(inputs.shape[1:3]) == (1, 1) and self.padding == 'valid' and
        self.data_format == 'channels_last' and self.output_padding is None
        and tuple(self.dilation_rate) == (1, 1) and all(
            s <= k for s, k in zip(self.strides, self.kernel_size)))

  def uses_sub_pixel(self, inputs):
    # Measured at the decoder's sizes: faster for its last layer (3
    # filters), no faster for 32 filters.
    rows, cols = self.kernel_size
    return (
        not self.uses_matmul(inputs) and on_cpu_only() and
        self.filters <= SUB_PIXEL_MAX_FILTERS and rows == cols and
        rows % 2 == 0 and tuple(self.strides) == (2, 2) and
        self.padding == 'valid' and self.data_format == 'channels_last' and
        self.output_padding is None)  # Keras refuses dilation with stride 2.


class Conv2D(tfkl.Conv2D):
  """A convolution whose weight gradient is a matmul when its output is small.

  The weight gradient of a convolution is the matmul of the input's patches
  with the output's gradient. When the patches are few (the encoder's last
  layer: 2 x 2 outputs of 6 x 6 inputs), extracting them and multiplying was
  twice as fast as oneDNN's Conv2DBackpropFilter under bfloat16. The forward
  pass and the input's gradient are tf_keras's ops.
  """

  def convolution_op(self, inputs, kernel):
    if not self.uses_patch_matmul(inputs):
      return super().convolution_op(inputs, kernel)
    return _conv_with_patch_gradient(
        inputs, tf.convert_to_tensor(kernel), tuple(self.strides))

  def uses_patch_matmul(self, inputs):
    if inputs.shape.rank != 4 or None in inputs.shape[1:3]:
      return False  # More batch dimensions, or sizes known only later.
    rows, cols = self.kernel_size
    out_rows = (inputs.shape[1] - rows) // self.strides[0] + 1
    out_cols = (inputs.shape[2] - cols) // self.strides[1] + 1
    patches = out_rows * out_cols * rows * cols
    return (
        self.padding == 'valid' and self.data_format == 'channels_last' and
        tuple(self.dilation_rate) == (1, 1) and self.groups == 1 and
        on_cpu_only() and patches <= PATCH_MAX_GROWTH * inputs.shape[1] * inputs.shape[2])


def _sub_pixel_transpose(x, kernel, size):
  """Stride-2 transposed convolution as a stride-1 one and depth_to_space.

  With kernel index 2a + r, output pixel 2q + r sums input q - a times
  kernel (2a + r): a plain convolution over the padded input whose kernel
  holds the 4 phases r = (r_y, r_x), each of (size / 2)^2 taps, as 4 x
  filters channels, which depth_to_space puts in place. Its gradients are tf's own ops for a transposed convolution.
  """
  half = size // 2
  filters, channels = kernel.shape[2], kernel.shape[3]

  @tf.custom_gradient
  def transpose(x, kernel):
    phases = tf.reshape(kernel, [half, 2, half, 2, filters, channels])
    phases = tf.transpose(phases[::-1, :, ::-1], [0, 2, 5, 1, 3, 4])
    phases = tf.reshape(phases, [half, half, channels, 4 * filters])
    pad = [[0, 0], [half - 1, half - 1], [half - 1, half - 1], [0, 0]]
    y = tf.nn.conv2d(tf.pad(x, pad), phases, 1, 'VALID')
    y = tf.nn.depth_to_space(y, 2)
    scope = _gradient_scope()

    def grad(dy):
      with tf.name_scope(scope):
        dx = tf.nn.conv2d(dy, kernel, 2, 'VALID')
        dkernel = tf.raw_ops.Conv2DBackpropFilter(
            input=dy, filter_sizes=tf.shape(kernel), out_backprop=x,
            strides=[1, 2, 2, 1], padding='VALID')
      return dx, dkernel

    return y, grad

  return transpose(x, kernel)


def _conv_with_patch_gradient(x, kernel, strides):
  """A 'valid' convolution whose weight gradient is a matmul of patches.

  The kernel's gradient is the sum over output pixels of the input patch
  under the kernel times the output's gradient there: patches (pixels x
  rows*cols*channels) transposed times the gradient (pixels x filters).
  The input's gradient is tf's own op.
  """
  rows, cols, channels, filters = kernel.shape

  @tf.custom_gradient
  def conv(x, kernel):
    y = tf.nn.conv2d(x, kernel, strides, 'VALID')
    scope = _gradient_scope()

    def grad(dy):
      with tf.name_scope(scope):
        dx = tf.raw_ops.Conv2DBackpropInput(
            input_sizes=tf.shape(x), filter=kernel, out_backprop=dy,
            strides=(1,) + strides + (1,), padding='VALID')
        patches = tf.image.extract_patches(
            x, [1, rows, cols, 1], (1,) + strides + (1,), [1, 1, 1, 1],
            'VALID')
        patches = tf.reshape(patches, [-1, rows * cols * channels])
        dkernel = tf.matmul(
            patches, tf.reshape(dy, [-1, filters]), transpose_a=True)
      return dx, tf.reshape(dkernel, kernel.shape)

    return y, grad

  return conv(x, kernel)


def _gradient_scope():
  # A custom gradient's ops are otherwise named at the top of the graph;
  # under "gradients/<layer>/" a profile finds the layer they belong to.
  return 'gradients/' + tf.get_current_name_scope() + '/'
