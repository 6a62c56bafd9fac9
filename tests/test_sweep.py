"""sweep.py: tasks x seeds of dreamer.py on Ray Tune.

The sweeps run as a user runs them, `python sweep.py ...` in a subprocess.
Two Ray set-ups are shared by the tests: the sweep's own local Ray (the local
sweep, in which one run is killed), and a cluster of two one-CPU nodes on
this machine (the interrupted sweep, the placement, the bad resources). Every
Ray process a test starts is found by its temporary directory and stopped.
"""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import ray

import sweep

ROOT = pathlib.Path(__file__).resolve().parent.parent
TASK = 'dmc_cartpole_balance'
# Runs of a few minutes on a busy 2-core machine: checkpoints at 200 and 300
# frames, test returns at 100 and 200.
DREAMER_FLAGS = [
    '--preset', 'tiny', '--time_limit', '100', '--prefill', '100',
    '--eval_every', '100', '--steps', '300', '--log_every', '100',
    '--train_every', '100', '--train_steps', '1', '--pretrain', '1',
    '--log_images', 'False']
ENV = {**os.environ, 'PYTHONUNBUFFERED': '1', 'DREAMER_STATUS_EVERY': '1',
       'RAY_AUTH_MODE': 'disabled'}


def start_sweep(*flags, env=None):
  return subprocess.Popen(
      [sys.executable, 'sweep.py', *flags, '--', *DREAMER_FLAGS], cwd=ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env=env or ENV)


def finish(process, timeout=900):
  output, _ = process.communicate(timeout=timeout)
  return process.returncode, output


def pids_mentioning(text):
  """Processes whose command line contains text (ours: a unique tmp path)."""
  pids = []
  for entry in pathlib.Path('/proc').iterdir():
    if entry.name.isdigit() and int(entry.name) != os.getpid():
      try:
        command = (entry / 'cmdline').read_bytes().replace(b'\0', b' ')
        if text in command.decode(errors='replace'):
          pids.append(int(entry.name))
      except OSError:
        continue
  return pids


def kill_all(*texts):
  for text in texts:
    for pid in pids_mentioning(text):
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass


def wait_for(condition, timeout, what):
  deadline = time.time() + timeout
  while not condition():
    assert time.time() < deadline, f'Timed out waiting for {what}'
    time.sleep(1)


def trials(logdir):
  return {r['seed']: r for r in
          json.loads((logdir / 'sweep.json').read_text())['trials']}


def steps(rundir):
  lines = (rundir / 'metrics.jsonl').read_text().splitlines()
  return [json.loads(line)['step'] for line in lines]


# The sweep's own local Ray; one run killed with SIGKILL mid-run.


@pytest.fixture(scope='module')
def local_sweep(tmp_path_factory):
  root = tmp_path_factory.mktemp('sweep')
  logdir = root / 'local'
  ray_tmp = tempfile.mkdtemp(prefix='rl', dir='/tmp')  # Short: socket paths.
  process = start_sweep(
      '--tasks', TASK, '--seeds', '0', '1', '--logdir', str(logdir),
      '--cpus_per_run', '1', env={**ENV, 'RAY_TMPDIR': ray_tmp})
  try:
    killed = logdir / TASK / '0'
    # After its first checkpoint, while it collects towards the end.
    wait_for(lambda: (killed / 'checkpoints' / 'checkpoint').exists(),
             600, 'the first checkpoint of seed 0')
    [pid] = pids_mentioning(f'dreamer.py {" ".join(DREAMER_FLAGS)} '
                            f'--task {TASK} --seed 0 --logdir {killed}')
    episodes = sorted(p.name for p in (killed / 'episodes').glob('*.npz'))
    before = steps(killed)
    os.kill(pid, signal.SIGKILL)
    print(f'Killed seed 0 (pid {pid}) at metrics steps {before}, '
          f'{len(episodes)} episodes, checkpoint '
          f'{(killed / "checkpoints" / "checkpoint").read_text().split()[1]}')
    code, output = finish(process)
    yield dict(logdir=logdir, code=code, output=output, killed=killed,
               episodes=episodes, steps=before)
  finally:
    process.kill()
    kill_all(ray_tmp, str(root))


def test_local_sweep_runs_every_trial_to_the_end(local_sweep):
  logdir, output = local_sweep['logdir'], local_sweep['output']
  for seed in (0, 1):
    rundir = logdir / TASK / str(seed)
    assert json.loads((rundir / 'config.json').read_text())['seed'] == seed
    metrics = [json.loads(line) for line in
               (rundir / 'metrics.jsonl').read_text().splitlines()]
    # A killed run may test again at 200 frames, after its resume.
    assert {m['step'] for m in metrics if 'test/return' in m} == {100, 200}
    assert (rundir / 'checkpoints' / 'checkpoint').exists()
    assert 'ckpt-300' in (rundir / 'checkpoints' / 'checkpoint').read_text()
    assert trials(logdir)[seed]['state'].startswith('TERMINATED'), output
    assert trials(logdir)[seed]['frames'] == 300
  verify = json.loads((logdir / 'verify.json').read_text())
  # The sweep exits with verify's status: 3 here, as these runs are too
  # short to reach the paper's first point.
  assert local_sweep['code'] == verify['status'] == 3, output
  assert (logdir / 'verify.md').exists() and (logdir / f'{TASK}.png').exists()
  assert re.search(r'task +seed +frames +test_return +state +node', output)
  # Ray's start-up messages stay out of the console.
  assert 'Started a local Ray instance' not in output, output


def test_killed_run_is_restarted_and_resumes(local_sweep):
  killed, output = local_sweep['killed'], local_sweep['output']
  assert trials(local_sweep['logdir'])[0]['state'] == (
      'TERMINATED (failures: 1)'), output
  console = (killed / 'console.log').read_text()
  first, second = console.split('[sweep] ')[1:]  # One start per attempt.
  assert 'Load checkpoint.' in second
  assert 'Prefill dataset with 0 steps.' in second
  # The episodes of before the kill are kept; the steps go on from there.
  after = sorted(p.name for p in (killed / 'episodes').glob('*.npz'))
  assert set(local_sweep['episodes']) <= set(after)
  assert steps(killed)[:len(local_sweep['steps'])] == local_sweep['steps']
  assert min(steps(killed)[len(local_sweep['steps']):]) >= 200
  print('Steps of the killed run after its restart:',
        steps(killed)[len(local_sweep['steps']):])
  assert trials(local_sweep['logdir'])[1]['state'] == 'TERMINATED'


# A cluster of two nodes on this machine.


def free_port():
  with socket.socket() as s:
    s.bind(('', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def cluster():
  """A head and a second node, one CPU each; yields the head's address."""
  temp = tempfile.mkdtemp(prefix='rc', dir='/tmp')  # Short: socket paths.
  port = free_port()
  address = f'{ray.util.get_node_ip_address()}:{port}'
  common = ['--block', '--num-cpus=1', '--num-gpus=0', f'--temp-dir={temp}',
            '--object-store-memory=100000000', '--disable-usage-stats']
  commands = [
      ['ray', 'start', '--head', f'--port={port}', '--include-dashboard=false',
       *common],
      ['ray', 'start', f'--address={address}',
       '--resources={"second_node": 1}', *common]]
  nodes = []
  try:
    for command in commands:
      nodes.append(subprocess.Popen(
          command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
          env=ENV, start_new_session=True))
      time.sleep(3)
    wait_for(lambda: count_nodes(address) == 2, 180, 'two Ray nodes')
    yield address
  finally:
    # `ray start --block` outlives SIGTERM: its groups are ours to kill.
    for node in nodes:
      try:
        os.killpg(node.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    kill_all(temp)
    time.sleep(1)
    assert not pids_mentioning(temp)


def count_nodes(address):
  result = subprocess.run(
      [sys.executable, '-c', 'import ray; ray.init(address=%r, '
       'logging_level="ERROR"); print(sum(n["Alive"] for n in ray.nodes()))'
       % address], capture_output=True, text=True, env=ENV, timeout=120)
  return int(result.stdout.strip() or 0)


@pytest.fixture(scope='module')
def interrupted_sweep(cluster, tmp_path_factory):
  """Three runs on two one-CPU nodes, stopped with SIGINT, then resumed."""
  root = tmp_path_factory.mktemp('sweep')
  logdir = root / 'interrupted'
  flags = ['--tasks', TASK, '--seeds', '0', '1', '2', '--logdir', str(logdir),
           '--cpus_per_run', '1', '--address', cluster]
  process = start_sweep(*flags)
  try:
    lines = []
    # Stop when one run has finished and the third has started after it.
    while not ((finished_line(lines, 0) or finished_line(lines, 1)) and
               (logdir / TASK / '2' / 'metrics.jsonl').exists()):
      line = process.stdout.readline()
      assert line, ''.join(lines)
      lines.append(line)
    early = {seed for seed in (0, 1) if finished_line(lines, seed)}
    process.send_signal(signal.SIGINT)
    print('SIGINT to the sweep; finished before it: seeds', sorted(early),
          '; steps of seed 2:', steps(logdir / TASK / '2'))
    code, output = finish(process, timeout=300)
    # A run may still reach its end between the last status table and the
    # signal: what counts is what the sweep recorded as it stopped.
    states = trials(logdir)
    finished = {seed: snapshot(logdir / TASK / str(seed)) for seed in states
                if states[seed]['state'] == 'TERMINATED'}
    print('Finished when the sweep stopped: seeds', sorted(finished))
    first = dict(code=code, output=''.join(lines) + output, trials=states,
                 early=early, finished=finished)
    second = dict(zip(('code', 'output'), finish(start_sweep(*flags))))
    yield logdir, first, second
  finally:
    process.kill()
    kill_all(str(root))


def finished_line(lines, seed):
  # The last status table's row of the seed.
  rows = [line for line in lines if re.match(rf'{TASK} +{seed} ', line)]
  return rows and 'TERMINATED' in rows[-1]


def snapshot(rundir):
  return {str(p): (p.stat().st_mtime_ns, p.stat().st_size)
          for p in sorted(rundir.rglob('*'))}


def test_interrupted_sweep_resumes_without_rerunning(interrupted_sweep):
  logdir, first, second = interrupted_sweep
  assert first['code'] == 130, first['output']
  assert 'run the same command again' in first['output']
  assert first['early'] and first['early'] <= set(first['finished'])
  assert set(first['finished']) != {0, 1, 2}, first['output']
  for seed, files in first['finished'].items():
    rundir = logdir / TASK / str(seed)
    assert snapshot(rundir) == files  # Not run again.
    assert (rundir / 'console.log').read_text().count('[sweep] ') == 1
    assert steps(rundir)[-1] == 300
  verify = json.loads((logdir / 'verify.json').read_text())
  assert second['code'] == verify['status'] == 3, second['output']
  assert 'Resuming the sweep' in second['output']
  for seed in {0, 1, 2} - set(first['finished']):
    rundir = logdir / TASK / str(seed)
    assert (rundir / 'console.log').read_text().count('[sweep] ') == 2
    assert steps(rundir)[-1] == 300
  assert all(t['state'] == 'TERMINATED' for t in trials(logdir).values())


def test_trials_are_placed_on_both_nodes(interrupted_sweep):
  _, first, _ = interrupted_sweep
  nodes = {t['node_id'] for t in first['trials'].values() if t['node_id']}
  print('Nodes of the trials:', {
      seed: t['node'] for seed, t in first['trials'].items()})
  assert len(nodes) == 2, first['trials']


# Bad input: exit 2, a message, nothing written.


@pytest.mark.parametrize('flags, message', [
    (['--tasks', 'dmc_walker_wlak'], 'valid names are: acrobot_swingup'),
    (['--tasks', 'mujoco_ant'], 'Valid suites: dmc'),
    (['--seeds', '0', '0'], '--seeds lists 0 twice'),
    (['--', '--seed', '3'], '--seed after -- is refused'),
    (['--', '--logd', 'x'], '--logd after -- is refused'),
    (['--', '--precision', '8'], 'choose one of: 16, 32'),
    (['--', '--batch_size', '0'], '--batch_size must be positive'),
    (['--address', '127.0.0.1:1'], 'Cannot reach a Ray cluster'),
])
def test_bad_input_is_refused(flags, message, tmp_path, capsys):
  logdir = tmp_path / 'sweep'
  argv = ['--tasks', TASK, '--seeds', '0', '--logdir', str(logdir)]
  assert sweep.main(argv + flags) == 2
  assert message in capsys.readouterr().err
  assert not logdir.exists()


def test_empty_seed_list_is_refused(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_:
    sweep.main(['--tasks', TASK, '--seeds', '--logdir', str(tmp_path / 'x')])
  assert exit_.value.code == 2
  assert '--seeds: expected at least one argument' in capsys.readouterr().err
  assert not (tmp_path / 'x').exists()


def test_unwritable_logdir_is_refused(tmp_path, capsys):
  (tmp_path / 'file').write_text('')
  logdir = tmp_path / 'file' / 'sweep'
  assert sweep.main(['--tasks', TASK, '--seeds', '0', '--logdir',
                     str(logdir)]) == 2
  assert 'is not a writable directory' in capsys.readouterr().err


def test_more_gpus_than_a_node_has_is_refused(cluster, tmp_path):
  code, output = finish(start_sweep(
      '--tasks', TASK, '--seeds', '0', '--logdir', str(tmp_path / 'x'),
      '--address', cluster, '--gpus_per_run', '1'), timeout=300)
  assert code == 2, output
  assert '--gpus_per_run 1 is more than any node has' in output
  assert not (tmp_path / 'x').exists()


def test_a_logdir_of_another_sweep_is_refused(tmp_path, capsys):
  (tmp_path / 'sweep.json').write_text(json.dumps(
      {'tasks': ['dmc_walker_walk'], 'seeds': [0]}))
  assert sweep.main(['--tasks', TASK, '--seeds', '0', '--logdir',
                     str(tmp_path)]) == 2
  assert ('holds a sweep of --tasks dmc_walker_walk --seeds 0'
          in capsys.readouterr().err)
  assert sorted(p.name for p in tmp_path.iterdir()) == ['sweep.json']


def test_paper_means_the_papers_20_tasks():
  tasks = sweep.paper_tasks()
  assert len(tasks) == 20 and all(t.startswith('dmc_') for t in tasks)
  assert {'dmc_walker_walk', 'dmc_cartpole_balance'} <= set(tasks)
