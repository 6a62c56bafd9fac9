"""Runs dreamer.py over tasks x seeds on Ray Tune, on one machine or a cluster.

  python sweep.py --tasks dmc_walker_walk dmc_cartpole_balance --seeds 0 1 2 \
      --logdir ./sweeps/paper [-- any dreamer.py flags]

Each trial is one `python dreamer.py --task T --seed S --logdir LOGDIR/T/S`
in its own process, its console in LOGDIR/T/S/console.log. Ray Tune schedules
the trials by resources, starts a failed one again (`--max_failures`), and
keeps its experiment state in LOGDIR/tune, so that the same command resumes a
stopped sweep; a restarted run resumes from its logdir as dreamer.py does. At
the end, `plotting.py --verify` runs over LOGDIR and its status is ours.
See docs/sweeps.md for clusters.
"""

import argparse
import ctypes
import fcntl
import json
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

# The project's modules, in one place. dreamer.py comes first: it imports
# TensorFlow without its start-up noise.
import dreamer  # noqa: I100
import plotting
import tools
from support import cli

# Tune's console output is our status table (verbose=0 is silent only in
# Tune's older output engine, which this selects).
os.environ.setdefault('RAY_AIR_NEW_OUTPUT', '0')
# Start-up messages of Ray that are not errors and need no action, by the
# logger that writes them.
RAY_NOISE = (
    ('ray._private.authentication.authentication_token_setup',
     'Token authentication is enabled for this Ray cluster'),
    # Trials that had not reported yet when the sweep was stopped.
    ('ray.tune.analysis.experiment_analysis', 'Failed to fetch metrics'),
    # Its advice is Tune's Python API; ours, printed, is the same command.
    ('ray.tune.tune', 'Experiment has been interrupted'))

ROOT = pathlib.Path(__file__).resolve().parent
PAPER_TASKS = ROOT / 'scores' / 'dreamer.json'
REFUSED_FLAGS = ('task', 'seed', 'logdir')  # Set by the sweep, per trial.
CONNECT_WAIT = 10.0  # Seconds to wait for a cluster's address to answer.


def parse_args(argv):
  """Returns the sweep's flags and the dreamer.py flags after `--`."""
  argv = list(sys.argv[1:] if argv is None else argv)
  split = argv.index('--') if '--' in argv else len(argv)
  parser = argparse.ArgumentParser(
      description='Run dreamer.py over tasks x seeds on Ray Tune. Flags '
      'after -- go to every run unchanged.')
  parser.add_argument(
      '--tasks', nargs='+', required=True,
      help="tasks as in dreamer.py's --task, or `paper` for the paper's 20 "
      'DeepMind Control tasks')
  parser.add_argument('--seeds', nargs='+', type=int, required=True)
  parser.add_argument(
      '--logdir', type=pathlib.Path, required=True,
      help='runs go to LOGDIR/<task>/<seed>; on a cluster, a directory '
      'every node sees')
  parser.add_argument(
      '--address', default=None,
      help='an existing Ray cluster: auto, host:port or ray://host:port '
      '(default: a Ray started on this machine for the sweep)')
  parser.add_argument(
      '--gpus_per_run', type=float, default=None,
      help='default: 1 if the cluster has GPUs, else 0')
  parser.add_argument('--cpus_per_run', type=float, default=2)
  parser.add_argument(
      '--max_failures', type=int, default=3,
      help='times a run that died is started again (it resumes)')
  args = parser.parse_args(argv[:split])
  return args, argv[split + 1:]


# Checks before anything starts.


def check_input(args, flags):
  """Refuses bad input before Ray starts; returns the tasks."""
  tasks = paper_tasks() if args.tasks == ['paper'] else args.tasks
  for name, values in (('--tasks', tasks), ('--seeds', args.seeds)):
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
      raise cli.ConfigError(f'{name} lists {", ".join(repeated)} twice.')
  if args.cpus_per_run <= 0 or (args.gpus_per_run or 0) < 0:
    raise cli.ConfigError('--cpus_per_run must be positive and '
                          '--gpus_per_run 0 or more.')
  if args.max_failures < 0:
    raise cli.ConfigError('--max_failures must be 0 or more.')
  check_dreamer_flags(flags, tasks[0], args.seeds[0], args.logdir)
  for task in tasks[1:]:
    cli.check_task(task)
  cli.check_writable(args.logdir)
  return tasks


def paper_tasks():
  records = json.loads(PAPER_TASKS.read_text())
  return sorted({r['task'] for r in records})


def check_dreamer_flags(flags, task, seed, logdir):
  """Refuses what dreamer.py would refuse, with its own checks."""
  names = list(dreamer.define_config()) + ['preset']
  for flag in flags:
    if not flag.startswith('--'):
      continue
    name = flag[2:].split('=')[0]
    # argparse takes a unique prefix for the whole name: --log is --logdir.
    matches = [n for n in names if n == name] or [
        n for n in names if n.startswith(name)]
    if len(matches) == 1 and matches[0] in REFUSED_FLAGS:
      raise cli.ConfigError(
          f'{flag} after -- is refused: the sweep sets --task, --seed and '
          '--logdir of each run (use --tasks, --seeds and --logdir).')
  argv = flags + ['--task', task, '--seed', str(seed),
                  '--logdir', str(run_dir(logdir, task, seed))]
  try:
    config = cli.parse_args(dreamer.define_config, tools.args_type, argv)
  except SystemExit as e:  # argparse has printed what it refused.
    raise cli.ConfigError(
        'the dreamer.py flags after -- are not valid (above); '
        '`python dreamer.py --help` lists them.') from e
  cli.validate(config)


def run_dir(logdir, task, seed):
  return pathlib.Path(logdir) / task / str(seed)


# Connecting to Ray.


def start_ray(address):
  """Starts or joins Ray quietly; raises ConfigError if it cannot."""
  import ray  # Here, so that bad flags are refused without importing Ray.
  for name, text in RAY_NOISE:
    logging.getLogger(name).addFilter(
        lambda record, text=text: text not in record.getMessage())
  if address not in (None, 'auto'):
    wait_for_address(address)
  try:
    ray.init(
        # 'local': a new Ray, never one that `ray start` left running here.
        address=address or 'local', logging_level=logging.WARNING,
        log_to_driver=False, configure_logging=True,
        # A local Ray holds no data worth 30% of the memory.
        **({} if address else dict(object_store_memory=200 * 2**20)))
  except (ConnectionError, RuntimeError, ValueError) as e:
    raise cli.ConfigError(f'Cannot connect to Ray at --address {address}: '
                          f'{e}') from e
  return ray


def wait_for_address(address):
  host, _, port = address.removeprefix('ray://').rpartition(':')
  deadline = time.time() + CONNECT_WAIT
  while True:
    try:
      socket.create_connection((host, int(port)), timeout=2).close()
      return
    except ValueError as e:
      raise cli.ConfigError(
          f'--address {address} is not auto, host:port or ray://host:port.'
      ) from e
    except OSError as e:
      if time.time() > deadline:
        raise cli.ConfigError(
            f'Cannot reach a Ray cluster at --address {address} within '
            f'{CONNECT_WAIT:.0f} s ({e}). Start one with `ray start --head`, '
            'give its address, or leave --address out for a local Ray.'
        ) from e
      time.sleep(1)


def resources_per_run(ray, args):
  """CPUs and GPUs of a run; refuses more than the largest node has."""
  nodes = [n['Resources'] for n in ray.nodes() if n['Alive']]
  gpus = args.gpus_per_run
  if gpus is None:
    gpus = 1 if any(n.get('GPU', 0) for n in nodes) else 0
  for key, need in (('GPU', gpus), ('CPU', args.cpus_per_run)):
    most = max(n.get(key, 0) for n in nodes)
    if need > most:
      raise cli.ConfigError(
          f'--{key.lower()}s_per_run {need:g} is more than any node has: the '
          f'largest has {most:g} {key}s. Use --{key.lower()}s_per_run '
          f'{most:g}' + (' or less.' if most else '.'))
  return {'cpu': args.cpus_per_run, 'gpu': gpus}


# A trial: one dreamer.py process, on whichever node Tune placed it.


def run_trial(config, flags, logdir, script):
  """Runs dreamer.py to the end; reports its test returns to Tune."""
  import ray
  rundir = run_dir(logdir, config['task'], config['seed'])
  rundir.mkdir(parents=True, exist_ok=True)
  node = dict(node_id=ray.get_runtime_context().get_node_id())
  command = [sys.executable, script, *flags, '--task', config['task'],
             '--seed', str(config['seed']), '--logdir', str(rundir)]
  with open(rundir / '.sweep.lock', 'a') as lock:
    # The run of an earlier attempt may still be saving its checkpoint.
    wait_for_lock(lock)
    with open(rundir / 'console.log', 'ab') as console:
      console.write(f'[sweep] {time.strftime("%Y-%m-%d %H:%M:%S")} on node '
                    f'{node["node_id"]}: {" ".join(command)}\n'.encode())
      console.flush()
      process = subprocess.Popen(
          command, cwd=pathlib.Path(script).parent, stdout=console,
          stderr=subprocess.STDOUT, pass_fds=[lock.fileno()],
          env={**os.environ, 'PYTHONUNBUFFERED': '1'},
          preexec_fn=die_with_parent(os.getpid()))
      watch_run(process, MetricsReader(rundir / 'metrics.jsonl'), node)
  if process.returncode != 0:
    tail = (rundir / 'console.log').read_text(errors='replace')[-2000:]
    raise RuntimeError(
        f'dreamer.py exited with status {process.returncode}; its output is '
        f'in {rundir / "console.log"}, which ends:\n{tail}')


def watch_run(process, reader, node):
  """Reports each new test return, and the frames at least every 30 s."""
  from ray import tune
  summary, _ = reader.read()
  tune.report({**node, **summary})
  last = time.time()
  while process.poll() is None:
    time.sleep(2)
    summary, returns = reader.read()
    for step, value in returns:
      tune.report({**node, **summary, 'frames': step, 'test_return': value})
      last = time.time()
    if time.time() - last >= 30:
      tune.report({**node, **summary})
      last = time.time()
  tune.report({**node, **reader.read()[0]})  # The frames it ended at.


def wait_for_lock(lock):
  while True:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
      return
    except BlockingIOError:
      time.sleep(1)


def die_with_parent(parent):
  """A run gets SIGTERM (and saves a checkpoint) when its trial's worker dies.

  Otherwise a worker killed by Ray would leave its run behind, training on.
  """
  def set_signal():
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG, Linux.
    if os.getppid() != parent:  # It died before the line above.
      os._exit(1)
  return set_signal


class MetricsReader:
  """Reads the lines a run appends to its metrics.jsonl."""

  def __init__(self, path):
    self._path = path
    self._offset = 0
    self._summary = {'frames': 0}

  def read(self):
    """Returns the latest frames and test return, and the new test returns."""
    try:
      with open(self._path, 'rb') as f:
        f.seek(self._offset)
        data = f.read()
    except FileNotFoundError:
      return dict(self._summary), []
    end = data.rfind(b'\n') + 1  # A line being written is read next time.
    self._offset += end
    returns = []
    for line in data[:end].splitlines():
      try:
        entry = json.loads(line)
      except ValueError:
        continue
      self._summary['frames'] = max(self._summary['frames'], entry['step'])
      if 'test/return' in entry:
        returns.append((entry['step'], entry['test/return']))
        self._summary['last_test_return'] = entry['test/return']
    return dict(self._summary), returns


# The driver.


def make_status_table():
  from ray import tune

  class StatusTable(tune.Callback):
    """Prints the trials at most every 30 s, and at the end."""

    def __init__(self):
      self._last = 0.0

    def on_step_begin(self, iteration, trials, **info):
      every = float(os.environ.get('DREAMER_STATUS_EVERY', 30))
      if trials and time.time() - self._last >= every:
        self._last = time.time()
        print(status_table(trials), flush=True)

  return StatusTable()


def trial_row(trial):
  result = trial.last_result or {}
  ret = result.get('last_test_return')
  state = trial.status + (f' (failures: {trial.num_failures})'
                          if trial.num_failures else '')
  node = (f'{result["node_ip"]} {result["node_id"][:8]}'
          if 'node_id' in result else '')
  return dict(task=trial.config['task'], seed=trial.config['seed'],
              frames=result.get('frames', 0),
              test_return=None if ret is None else round(ret, 1),
              state=state, node=node, node_id=result.get('node_id'))


def status_table(trials):
  rows = [trial_row(t) for t in trials]
  rows.sort(key=lambda r: (r['task'], r['seed']))
  columns = ('task', 'seed', 'frames', 'test_return', 'state', 'node')
  cells = [columns] + [
      tuple('' if r[c] is None else str(r[c]) for c in columns) for r in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
  lines = ['  '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
           for row in cells]
  return f'[sweep] {time.strftime("%H:%M:%S")}\n' + '\n'.join(lines)


def make_tuner(ray, args, tasks, flags, resources, table):
  """A new Tune experiment under LOGDIR/tune, or the stopped one resumed."""
  from ray import tune
  trainable = tune.with_resources(tune.with_parameters(
      run_trial, flags=flags, logdir=str(args.logdir),
      script=str(ROOT / 'dreamer.py')), resources)
  experiment = args.logdir / 'tune'
  if tune.Tuner.can_restore(str(experiment)):
    print(f'Resuming the sweep in {experiment}: finished runs stay as they '
          'are, the others resume from their logdirs.')
    return tune.Tuner.restore(
        str(experiment), trainable, resume_unfinished=True,
        resume_errored=True)
  return tune.Tuner(
      trainable,
      param_space={'task': tune.grid_search(tasks),
                   'seed': tune.grid_search(args.seeds)},
      tune_config=tune.TuneConfig(
          trial_dirname_creator=lambda t: (
              f'{t.config["task"]}_{t.config["seed"]}')),
      run_config=tune.RunConfig(
          name='tune', storage_path=str(args.logdir), verbose=0,
          callbacks=[table],
          failure_config=tune.FailureConfig(max_failures=args.max_failures)))


def check_same_sweep(logdir, tasks, seeds):
  """A logdir holds one grid: resuming it with another would mix them up."""
  path = logdir / 'sweep.json'
  grid = {'tasks': tasks, 'seeds': seeds}
  if path.exists():
    stored = json.loads(path.read_text())
    if {k: stored.get(k) for k in grid} != grid:
      raise cli.ConfigError(
          f'{logdir} holds a sweep of --tasks {" ".join(stored["tasks"])} '
          f'--seeds {" ".join(map(str, stored["seeds"]))}; give those, or '
          'another --logdir.')
  return path, grid


def main(argv=None):
  args, flags = parse_args(argv)
  args.logdir = args.logdir.expanduser().resolve()  # Trials run elsewhere.
  try:
    tasks = check_input(args, flags)
    sweep_file, grid = check_same_sweep(args.logdir, tasks, args.seeds)
    ray = start_ray(args.address)
  except cli.ConfigError as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2
  try:
    resources = resources_per_run(ray, args)
  except cli.ConfigError as e:
    print(f'Error: {e}', file=sys.stderr)
    ray.shutdown()
    return 2
  args.logdir.mkdir(parents=True, exist_ok=True)
  sweep_file.write_text(json.dumps(grid, indent=2) + '\n')
  print(f'Sweep of {len(tasks)} tasks x {len(args.seeds)} seeds in '
        f'{args.logdir}; each run uses {resources["cpu"]:g} CPUs and '
        f'{resources["gpu"]:g} GPUs.', flush=True)
  # Tune stops the trials and saves its state on SIGINT; SIGTERM does too.
  signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
  table = make_status_table()
  tuner = make_tuner(ray, args, tasks, flags, resources, table)
  results = tuner.fit()
  # As Tune saved them: a resumed sweep's callbacks are Tune's own copies.
  trials = ray.tune.ExperimentAnalysis(str(args.logdir / 'tune')).trials
  print(status_table(trials), flush=True)
  rows = [trial_row(t) for t in trials]
  sweep_file.write_text(json.dumps({**grid, 'trials': rows}, indent=2) + '\n')
  ray.shutdown()
  unfinished = [r for r in rows if r['state'].split()[0] not in (
      'TERMINATED', 'ERROR')]
  if unfinished or len(rows) < len(tasks) * len(args.seeds):
    print('The sweep was stopped; run the same command again to resume it.')
    return 130
  status = plotting.main(['--indir', str(args.logdir), '--outdir',
                          str(args.logdir), '--verify'])
  failed = [r for r in rows if r['state'].startswith('ERROR')]
  for error in results.errors:
    print(f'Error: {error}', file=sys.stderr)
  if failed:
    print('Runs that failed after --max_failures restarts: ' + ', '.join(
        f'{r["task"]} seed {r["seed"]}' for r in failed), file=sys.stderr)
  return status or (1 if failed else 0)


if __name__ == '__main__':
  sys.exit(main())
