"""Running the programs as a user does: subprocesses from the repo root."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
from unittest import mock

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run(*flags, script='dreamer.py', timeout=400):
  """Runs a script from the repository root; returns (exit code, output)."""
  result = subprocess.run(
      [sys.executable, script, *flags], cwd=ROOT, timeout=timeout,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env={**os.environ, 'PYTHONUNBUFFERED': '1',
           # Status lines every second: these phases last under 30 s.
           'DREAMER_STATUS_EVERY': '1'})
  return result.returncode, result.stdout


def read_metrics(logdir):
  with (logdir / 'metrics.jsonl').open() as f:
    return [json.loads(line) for line in f]


def save_episodes(directory, episodes):
  """tools.save_episodes, returning the files it wrote (in write order)."""
  import tools  # pylint: disable=import-outside-toplevel
  directory = pathlib.Path(directory)
  before = set(directory.glob('*.npz'))
  tools.save_episodes(directory, episodes)
  return sorted(set(directory.glob('*.npz')) - before,
                key=lambda p: p.stat().st_mtime_ns)


def one_cpu():
  """The strategy of a run on a CPU: one replica on the first device.

  conftest.py splits the CPU into two logical devices for the two-replica
  tests; the original's MirroredStrategy() would take both.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return tf.distribute.MirroredStrategy(['/cpu:0'])


def build_agent(config, datadir, space, writer, strategy=None):
  """dreamer.Dreamer, built on `strategy` (one_cpu() unless given).

  The original's constructor makes its own MirroredStrategy(), which would
  take both of conftest.py's logical CPUs; the tests hand it theirs instead.
  """
  import dreamer  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  strategy = strategy or one_cpu()
  with mock.patch.object(tf.distribute, 'MirroredStrategy', lambda: strategy):
    return dreamer.Dreamer(config, datadir, space, writer)


def load_script(folder, name):
  """<folder>/<name>.py as a module (benchmarks/ and docs/ are no packages)."""
  spec = importlib.util.spec_from_file_location(
      name, ROOT / folder / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_benchmark(name):
  return load_script('benchmarks', name)
