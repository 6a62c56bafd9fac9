"""Test set-up shared by every test module."""

import os
import sys

# Keras-2 layers (tf-keras), which TFP uses; must precede the first TF import.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('MUJOCO_GL', 'egl')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# Let tests import the flat modules of the repository root.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from support import onednn  # noqa: E402,F401  The kernels dreamer.py runs.
import tensorflow as tf  # noqa: E402

# Two logical CPUs, so that MirroredStrategy can be tested with two replicas.
# This must happen before TensorFlow initializes its devices.
_cpus = tf.config.list_physical_devices('CPU')
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


import os as _os  # noqa: E402

import pytest  # noqa: E402

from runs import read_metrics, run  # noqa: E402


def in_loadgroup_worker(config):
  # Set by pytest-xdist in each worker of `--dist loadgroup`.
  return getattr(config.option, 'loadgroup', False)


@pytest.hookimpl(tryfirst=True)  # Before xdist reads the marks.
def pytest_collection_modifyitems(config, items):
  """Groups the tests for `pytest -n 2 --dist loadgroup` (pytest-xdist).

  Each module's tests stay in one worker, so a module-scoped run is made
  once; the modules that share the session's cartpole_run share a group, so
  that run is made once too.
  """
  if not in_loadgroup_worker(config):
    return
  shared = {item.module.__name__ for item in items
            if 'cartpole_run' in item.fixturenames}
  for item in items:
    name = item.module.__name__
    item.add_marker(pytest.mark.xdist_group(
        'cartpole_run' if name in shared else name))


@pytest.fixture(scope='session')
def cartpole_run(tmp_path_factory):
  """The tiny run to 2000 frames, then the same command resumed to 3000.

  Shared by every module that needs a real run (end-to-end, evaluation).
  """
  logdir = tmp_path_factory.mktemp('e2e') / 'cartpole'
  flags = ['--preset', 'tiny', '--task', 'dmc_cartpole_balance',
           '--logdir', str(logdir)]
  code, output = run(*flags, '--steps', '2000')
  first = dict(code=code, output=output, metrics=read_metrics(logdir),
               # Besides the replay's cache (replay.py), only episode files.
               episodes=sorted(p.name for p in (logdir / 'episodes').iterdir()
                               if p.name != '.cache'),
               checkpoints=sorted(_os.listdir(logdir / 'checkpoints')))
  code, output = run(*flags, '--steps', '3000')
  second = dict(code=code, output=output, metrics=read_metrics(logdir))
  return logdir, first, second


@pytest.fixture(autouse=True)
def no_phase_left_over():
  """No training phase unfinished or pending before or after a test.

  progress.Phase keeps these as class attributes (one run a process); a test
  that stops inside a phase must not make a later test's checkpoint look
  saved inside one, also one written by a class or module fixture (those
  are set up before this fixture runs, hence the reset after each test).
  """
  from support import progress  # pylint: disable=import-outside-toplevel

  def reset():
    progress.Phase.left = 0
    progress.Phase.resumed = 0

  reset()
  yield
  reset()
