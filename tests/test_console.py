"""console.py: TensorFlow's start-up noise filtered, real errors kept."""

import os
import subprocess
import sys

from support import console
from runs import ROOT

NOISE = [
    'WARNING: All log messages before absl::InitializeLog() is called are '
    'written to STDERR\n',
    'I0000 00:00:1795320049.610822    7224 port.cc:153] oneDNN custom '
    'operations are on.\n',
    'W0000 00:00:1795320049.6 1 some.cc:1] a warning below level 2\n',
]
NO_GPU = [
    'E0000 00:00:1795320051.954986    7224 cuda_platform.cc:52] failed call '
    'to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR '
    '(303)\n',
    'I0000 00:00:1.0 1 cudart_stub.cc:31] Could not find cuda drivers on '
    'your machine, GPU will not be used.\n',
]
REAL = [
    'E0000 00:00:1.0 1 some_op.cc:9] Something failed.\n',
    'Traceback (most recent call last):\n',
]


def test_noise_is_recognised():
  for line in NOISE + NO_GPU:
    assert console.is_noise(line, gpu_expected=False), line
  for line in REAL:
    assert not console.is_noise(line, gpu_expected=False), line


def test_cuda_errors_stay_where_a_gpu_is_expected():
  for line in NO_GPU[:1]:
    assert not console.is_noise(line, gpu_expected=True)


def test_filter_writes_back_what_is_not_noise():
  code = (
      'import os; from support import console\n'
      'with console.filtered_native_stderr(gpu_expected=False):\n'
      '  for line in %r: os.write(2, line.encode())\n' % (NOISE + REAL,))
  result = subprocess.run(
      [sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  assert result.stderr == ''.join(REAL)


def test_errors_reach_the_terminal_when_the_import_aborts():
  # An abort inside the filtered import (as TensorFlow's on an unsupported
  # CPU) still shows what was written before it.
  code = (
      'import os; from support import console\n'
      'with console.filtered_native_stderr(gpu_expected=False):\n'
      '  os.write(2, %r.encode())\n'
      '  os.abort()\n' % REAL[0])
  result = subprocess.run(
      [sys.executable, '-c', code], cwd=ROOT,
      capture_output=True, text=True)
  assert result.returncode != 0
  assert REAL[0] in result.stderr


def test_a_start_prints_no_noise():
  # The import as the programs do it, on this machine (CPU-only in CI).
  result = subprocess.run(
      [sys.executable, '-c', 'from support import console'], cwd=ROOT, capture_output=True,
      text=True, env={k: v for k, v in os.environ.items()
                      if k != 'TF_CPP_MIN_LOG_LEVEL'})
  assert result.returncode == 0, result.stderr
  for text in ('absl::InitializeLog', 'port.cc', 'cudart_stub'):
    assert text not in result.stderr
  if not console.has_nvidia_device():
    assert 'cuInit' not in result.stderr
