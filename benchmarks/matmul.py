"""The matmul speed of this machine: the limit for a Dreamer update on a CPU.

Prints figures; it is not a test. Times `tf.matmul` in a `tf.function` at
square sizes and at the shapes of the paper-size update's largest matmuls,
under float32 and bfloat16, and reports the best GFLOP/s of several runs.

  python benchmarks/matmul.py
"""

import argparse
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support import onednn  # noqa: E402,F401  The kernels dreamer.py runs.

# (rows, inner, cols): square sizes, and the update's dense layers over the
# 50 x 50 = 2500 posterior states and the imagination's 2500 starts.
SHAPES = (
    (1024, 1024, 1024), (2048, 2048, 2048), (2500, 230, 400),
    (2500, 400, 400), (2500, 400, 600), (2500, 600, 400))


def gflops(shape, dtype, repeats=10, runs=5):
  """Best GFLOP/s of `runs` timings of `repeats` chained matmuls."""
  import tensorflow as tf
  rows, inner, cols = shape
  a = tf.cast(tf.random.normal((rows, inner)), dtype)
  # A different matrix for each product: identical products would be merged
  # into one by the graph optimizer.
  b = [tf.cast(tf.random.normal((inner, cols)), dtype) for _ in range(repeats)]

  @tf.function
  def chain(a, b):
    total = tf.zeros((rows, cols), dtype)
    for matrix in b:  # Unrolled; each product is used.
      total += tf.matmul(a, matrix)
    return tf.reduce_sum(tf.cast(total, tf.float32))

  chain(a, b).numpy()  # Trace and warm up.
  best = float('inf')
  for _ in range(runs):
    start = time.perf_counter()
    chain(a, b).numpy()
    best = min(best, time.perf_counter() - start)
  return 2 * rows * inner * cols * repeats / best / 1e9


def measure(dtypes=('bfloat16', 'float32'), shapes=SHAPES):
  """{dtype: {shape: GFLOP/s}}."""
  return {dtype: {shape: gflops(shape, dtype) for shape in shapes}
          for dtype in dtypes}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--dtypes', nargs='+', default=['bfloat16', 'float32'])
  args = parser.parse_args()
  results = measure(args.dtypes)
  print('| shape (m x k x n) | ' + ' | '.join(
      f'{d} GFLOP/s' for d in args.dtypes) + ' |')
  print('|---|' + '---:|' * len(args.dtypes))
  for shape in SHAPES:
    print(f'| {" x ".join(map(str, shape))} | ' + ' | '.join(
        f'{results[d][shape]:.0f}' for d in args.dtypes) + ' |')
  for dtype in args.dtypes:
    print(f'best {dtype}: {max(results[dtype].values()):.0f} GFLOP/s')


if __name__ == '__main__':
  main()
