"""A quiet start: TensorFlow's start-up noise filtered from the console.

TensorFlow 2.21 logs through absl before absl is initialised, so
TF_CPP_MIN_LOG_LEVEL does not hide its first messages: every start printed
"WARNING: All log messages before absl::InitializeLog() is called are written
to STDERR", INFO lines about oneDNN and CUDA drivers, and, on a machine
without a GPU, "failed call to cuInit: ... UNKNOWN ERROR (303)". Importing
this module imports TensorFlow and initialises its devices with the native
stderr streamed through a filter that passes every line that is not such
noise: errors stay visible, and so does the cuInit error on a machine with an
NVIDIA device.
"""

import contextlib
import os
import re
import subprocess
import sys

# Below TF_CPP_MIN_LOG_LEVEL=2 (INFO and WARNING), which absl ignores until
# it is initialised.
_LOW_LEVEL = re.compile(r'^[IW]\d{4} ')
_ABSL = 'All log messages before absl::InitializeLog() is called'
_NO_GPU = ('failed call to cuInit', 'Could not find cuda drivers')


def has_nvidia_device():
  return os.path.exists('/dev/nvidia0') or os.path.exists('/proc/driver/nvidia')


def is_noise(line, gpu_expected):
  if _ABSL in line or _LOW_LEVEL.match(line):
    return True
  return not gpu_expected and any(text in line for text in _NO_GPU)


# The filter runs in a process of its own, so that what TensorFlow writes
# before it aborts the import (an illegal instruction on an old CPU, a CUDA
# abort) still reaches the terminal: the filter reads on to the pipe's end.
FILTER = """
import re, sys
low, absl, no_gpu, gpu_expected = eval(sys.argv[1])
low = re.compile(low)
for line in sys.stdin.buffer:
  text = line.decode('utf-8', 'replace')
  noise = absl in text or low.match(text) or (
      not gpu_expected and any(t in text for t in no_gpu))
  if not noise:
    sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()
"""


@contextlib.contextmanager
def filtered_native_stderr(gpu_expected=None):
  """Streams file descriptor 2 through a filter that drops the noise."""
  gpu_expected = has_nvidia_device() if gpu_expected is None else gpu_expected
  sys.stderr.flush()
  saved = os.dup(2)
  read, write = os.pipe()
  args = repr((_LOW_LEVEL.pattern, _ABSL, _NO_GPU, gpu_expected))
  try:
    process = subprocess.Popen(
        [sys.executable, '-c', FILTER, args], stdin=read, stdout=saved,
        close_fds=True)
  except (OSError, TypeError, ValueError):
    process = None  # No filter: the noise shows, nothing is lost.
  os.close(read)
  if process:
    os.dup2(write, 2)
  os.close(write)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)  # The filter sees the end of its input and exits.
    os.close(saved)
    if process:
      try:
        # A child started meanwhile may hold the pipe open; do not wait on it.
        process.wait(timeout=10)
      except subprocess.TimeoutExpired:
        process.kill()


os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from support import onednn  # noqa: E402,F401  Before TensorFlow's import.
with filtered_native_stderr():
  import tensorflow as tf
  import tf_keras  # noqa: F401
  import tensorflow_probability  # noqa: F401
  tf.config.list_physical_devices()  # Where CUDA reports a missing GPU.
