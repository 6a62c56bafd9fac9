"""A quiet start: TensorFlow's start-up noise filtered from the console.

TensorFlow 2.21 logs through absl before absl is initialised, so
TF_CPP_MIN_LOG_LEVEL does not hide its first messages: every start printed
"WARNING: All log messages before absl::InitializeLog() is called are written
to STDERR", INFO lines about oneDNN and CUDA drivers, and, on a machine
without a GPU, "failed call to cuInit: ... UNKNOWN ERROR (303)". Importing
this module imports TensorFlow and initialises its devices with the native
stderr captured, then writes back every line that is not such noise: errors
stay visible, and so does the cuInit error on a machine with an NVIDIA device.
"""

import contextlib
import os
import re
import sys
import tempfile

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


@contextlib.contextmanager
def filtered_native_stderr(gpu_expected=None):
  """Captures file descriptor 2 and writes back all but the noise."""
  gpu_expected = has_nvidia_device() if gpu_expected is None else gpu_expected
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      text = capture.read().decode('utf-8', errors='replace')
      kept = [line for line in text.splitlines(keepends=True)
              if not is_noise(line, gpu_expected)]
      sys.stderr.write(''.join(kept))
      sys.stderr.flush()


os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
with filtered_native_stderr():
  import tensorflow as tf
  import tf_keras  # noqa: F401
  import tensorflow_probability  # noqa: F401
  tf.config.list_physical_devices()  # Where CUDA reports a missing GPU.
