"""oneDNN's CPU kernels on every x86-64 CPU: import before TensorFlow.

TensorFlow 2.21 ran oneDNN's kernels on the AVX-512 CPUs this project used
before, but not on an AMD EPYC with AVX2 alone, which got its Eigen kernels:
there a paper-size update took 2.3x the time it takes with oneDNN (float32,
16.82 s against 7.18 s, alternating in one run; its transposed convolutions
at 37-70 GFLOP/s against 99-145; docs/benchmarks.md). So oneDNN is switched on here wherever the user
has not set TF_ENABLE_ONEDNN_OPTS. Its sums run in another order than
Eigen's; the oracle tests pass with either.
"""

import os
import platform

VARIABLE = 'TF_ENABLE_ONEDNN_OPTS'

if platform.machine().lower() in ('x86_64', 'amd64'):
  os.environ.setdefault(VARIABLE, '1')
