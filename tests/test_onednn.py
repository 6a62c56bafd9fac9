"""support/onednn.py: oneDNN's kernels on every x86-64 CPU."""

import os
import platform
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
X86 = platform.machine().lower() in ('x86_64', 'amd64')

# What a program sees after importing dreamer.py, as dreamer.py does at start.
PROBE = (
    'import os, dreamer\n'
    'from tensorflow.python.util import _pywrap_util_port as port\n'
    'print(os.environ.get("TF_ENABLE_ONEDNN_OPTS"), port.IsMklEnabled())\n')


def imported(**env):
  clean = {k: v for k, v in os.environ.items() if k != 'TF_ENABLE_ONEDNN_OPTS'}
  clean.update(env)
  result = subprocess.run(
      [sys.executable, '-c', PROBE], cwd=ROOT, env=clean, capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout.split()


@pytest.mark.skipif(not X86, reason='set on x86-64 CPUs only')
def test_dreamer_runs_onednn_on_any_x86_cpu():
  # On a CPU without AVX-512 TensorFlow would run its Eigen kernels.
  assert imported() == ['1', 'True']


def test_users_setting_wins():
  assert imported(TF_ENABLE_ONEDNN_OPTS='0') == ['0', 'False']


@pytest.mark.skipif(not X86, reason='set on x86-64 CPUs only')
@pytest.mark.skipif(
    os.environ.get('TF_ENABLE_ONEDNN_OPTS', '1') != '1',
    reason='the user turned oneDNN off for this session')
def test_tests_run_the_programs_kernels():
  # conftest.py imports it first, so the oracle tests check oneDNN's sums.
  from tensorflow.python.util import _pywrap_util_port as port
  assert os.environ['TF_ENABLE_ONEDNN_OPTS'] == '1' and port.IsMklEnabled()
