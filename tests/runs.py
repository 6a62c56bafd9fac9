"""Running the programs as a user does: subprocesses from the repo root."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
from unittest import mock

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run(*flags, script='dreamer.py', timeout=900):
  """Runs a script from the repository root; returns (exit code, output)."""
  result = subprocess.run(
      [sys.executable, script, *flags], cwd=ROOT, timeout=timeout,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env={**os.environ, 'PYTHONUNBUFFERED': '1',
           # Status lines every second: these phases last under 30 s.
           'DREAMER_STATUS_EVERY': '1'})
  return result.returncode, result.stdout


# Runs each command line of a JSON list through a script's entry point in
# this one process, and prints [exit code, output] for each as JSON: the
# program's start-up (about 10 s, most of it TensorFlow's import) is paid
# once. Each entry point is the one `python <script>` calls.
MANY = """
import contextlib, io, json, sys, traceback
script, argvs = sys.argv[1], json.loads(sys.argv[2])
sys.argv = [script]  # argparse names the program by it.
if script == 'dreamer.py':
  import dreamer, tools
  from support import cli
  entry = lambda argv: cli.run(
      dreamer.main, dreamer.define_config, tools.args_type, argv)
elif script == 'evaluate.py':
  import evaluate
  entry = evaluate.main
else:
  raise ValueError(f'run_many knows dreamer.py and evaluate.py, not {script}')
results = []
for argv in argvs:
  output = io.StringIO()
  with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
    try:
      code = entry(argv)
    except SystemExit as e:  # argparse's refusals; as the interpreter exits.
      if e.code is None or isinstance(e.code, int):
        code = e.code or 0
      else:
        print(e.code, file=sys.stderr)
        code = 1
    except BaseException:  # As the interpreter would show it.
      traceback.print_exc()
      code = 1
  results.append([code, output.getvalue()])
print('RESULTS ' + json.dumps(results))
"""


def run_many(argvs, script='dreamer.py', timeout=400):
  """[(exit code, output)] of `python <script> <argv>` for each argv.

  For commands that are refused or end quickly: they share one process, so
  a command must leave nothing behind that changes the next one's outcome.
  The output is what Python writes to sys.stdout and sys.stderr while the
  entry point runs: not what native code (TensorFlow, MuJoCo) writes to the
  file descriptors, nor what the imports print, nor a warning a case before
  it showed already. So a test that asserts something is absent from it
  holds only for Python's own prints.
  """
  argvs = [[str(flag) for flag in argv] for argv in argvs]
  result = subprocess.run(
      [sys.executable, '-c', MANY, script, json.dumps(argvs)], cwd=ROOT,
      timeout=timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1'})
  lines = [l for l in result.stdout.splitlines() if l.startswith('RESULTS ')]
  assert result.returncode == 0 and lines, result.stdout[-3000:]
  return [tuple(r) for r in json.loads(lines[-1][len('RESULTS '):])]


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
