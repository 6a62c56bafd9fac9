"""Never lose a run: kills, signals, corrupt files, bad input, full disks.

The program runs as a subprocess (`python dreamer.py`) on short episodes
(`--time_limit 200`: 100 agent steps). One logdir goes through a series of
kills and restarts in a module-scoped fixture, so that the assertions share
the runs. Disks are made full or read-only with small tmpfs mounts (root, as
on CI); without the permission, a write-size limit or a patch stands in.
"""

import concurrent.futures
import contextlib
import errno
import hashlib
import os
import pathlib
import re
import resource
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import dreamer
import runs
import tools
from support import checkpoint
from support import cli
from support import storage

ROOT = pathlib.Path(__file__).resolve().parent.parent

# 2 prefill episodes, then cycles of one evaluation and 2 training episodes.
# No open-loop GIF: it costs each program start a second trace of the train
# step and an image step in every logged phase (TestKillAndResume's runs took
# 332 s with it, 227 s without, one after the other here); test_e2e.py checks
# the GIFs.
FLAGS = (
    '--preset', 'tiny', '--task', 'dmc_cartpole_balance', '--time_limit',
    '200', '--prefill', '400', '--eval_every', '400', '--train_every', '200',
    '--log_every', '200', '--log_images', 'False')
STEPS = 1200


class Program:
  """`python dreamer.py` in the background, its output read line by line."""

  def __init__(self, logdir, *flags, steps=STEPS, preexec_fn=None):
    self.lines = []
    self._process = subprocess.Popen(
        [sys.executable, 'dreamer.py', *FLAGS, '--steps', str(steps),
         '--logdir', str(logdir), *flags],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1'},
        preexec_fn=preexec_fn)
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self._process.stdout:
      self.lines.append(line)

  @property
  def output(self):
    return ''.join(self.lines)

  def wait_for(self, text, count=1, timeout=240):
    """Waits until `text` has appeared on `count` lines of the output."""
    deadline = time.time() + timeout
    while sum(text in line for line in list(self.lines)) < count:
      if self._process.poll() is not None:
        self._reader.join(10)
        if sum(text in line for line in self.lines) >= count:
          return
        raise AssertionError(
            f'Exited with {self._process.returncode} before {text!r}:\n'
            f'{self.output[-3000:]}')
      if time.time() > deadline:
        self.signal(signal.SIGKILL)
        raise AssertionError(f'No {text!r} in {timeout} s:\n{self.output}')
      time.sleep(0.05)

  def signal(self, signum):
    self._process.send_signal(signum)

  def finish(self, timeout=300):
    try:
      code = self._process.wait(timeout)
    except subprocess.TimeoutExpired:
      self.signal(signal.SIGKILL)
      raise
    self._reader.join(10)
    return code


def episode_files(logdir):
  return sorted((logdir / 'episodes').glob('*.npz'))


def check_episodes(logdir, skip=()):
  """Asserts that every episode file loads and holds the length it names."""
  for path in episode_files(logdir):
    if path.name in skip:
      continue
    with np.load(path) as episode:
      assert len(episode['reward']) == int(path.stem.rsplit('-', 1)[1])


def checkpoint_state(logdir):
  """The manager's view: (latest prefix or None, all listed prefixes)."""
  state = tf.train.get_checkpoint_state(str(logdir / 'checkpoints'))
  if not state:
    return None, []
  return state.model_checkpoint_path, list(state.all_model_checkpoint_paths)


def fingerprint(directory):
  """Content hash, size and mtime of every file, and every directory."""
  result = {}
  for path in sorted(pathlib.Path(directory).rglob('*')):
    key = str(path.relative_to(directory))
    if path.is_dir():
      result[key] = 'dir'
    else:
      stat = path.stat()
      result[key] = (hashlib.sha256(path.read_bytes()).hexdigest(),
                     stat.st_size, stat.st_mtime_ns)
  return result


@contextlib.contextmanager
def tmpfs(path, size, readonly=False):
  """Mounts a small tmpfs at path; yields False where mounting is denied."""
  path.mkdir(parents=True, exist_ok=True)
  options = f'size={size}' + (',ro' if readonly else '')
  result = subprocess.run(
      ['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(path)],
      capture_output=True)
  if result.returncode:
    yield False
    return
  try:
    yield True
  finally:
    subprocess.run(['umount', '-l', str(path)], check=True)


@pytest.fixture(scope='module')
def series(tmp_path_factory):
  """One logdir through kills, corrupt files, SIGTERM, resume, divergence."""
  logdir = tmp_path_factory.mktemp('reliability') / 'run'
  ckptdir = logdir / 'checkpoints'
  stages = {}

  def record(name, program, code, **extra):
    stages[name] = dict(
        code=code, output=program.output,
        episodes=[p.name for p in episode_files(logdir)],
        state=checkpoint_state(logdir), **extra)
    check_episodes(logdir, skip=planted)
    # Shown with -s, for the record of what each kill hit.
    print(f'{name}: exit {code}, {len(stages[name]["episodes"])} episodes, '
          f'checkpoints {stages[name]["state"][1]}, {extra.get("seen", "")}')

  planted = ()
  # 1. kill -9 during the prefill, once the first episode is on disk.
  program = Program(logdir)
  program.wait_for('Train episode of length')
  program.signal(signal.SIGKILL)
  record('prefill', program, program.finish())

  # 2. kill -9 during training: the first updates, inside the evaluation.
  program = Program(logdir)
  program.wait_for('Training for')
  program.signal(signal.SIGKILL)
  record('training', program, program.finish())

  # 3. kill -9 during the first checkpoint save: the moment TensorFlow's
  # temporary directory or the new index file shows up.
  program = Program(logdir)
  program.wait_for('Start collection.')
  seen = set()
  deadline = time.time() + 240
  while time.time() < deadline and program._process.poll() is None:
    names = os.listdir(ckptdir) if ckptdir.exists() else []
    seen = {n for n in names if '_temp' in n or n.endswith('.index')}
    if seen:
      program.signal(signal.SIGKILL)
      break
    time.sleep(0.0005)
  record('save', program, program.finish(), seen=seen)

  # 4. A truncated and a garbage episode file, then SIGTERM while collecting.
  good = episode_files(logdir)[0]
  truncated = logdir / 'episodes' / '20200101T000000-{}-101.npz'.format(
      'a' * 32)
  truncated.write_bytes(good.read_bytes()[:1000])
  garbage = logdir / 'episodes' / '20200101T000001-{}-101.npz'.format(
      'b' * 32)
  garbage.write_bytes(b'this is not an npz archive\n' * 100)
  planted = (truncated.name, garbage.name)
  program = Program(logdir)
  program.wait_for('Start collection.')
  program.wait_for('Train episode of length', count=1 + sum(
      'Train episode' in line for line in program.lines))
  program.signal(signal.SIGTERM)
  record('sigterm', program, program.finish())

  # 5. Resume to the end.
  program = Program(logdir)
  record('finish', program, program.finish())

  # 6. A diverging learning rate: stops with the loss named, saves nothing.
  before = fingerprint(ckptdir)
  program = Program(logdir, '--model_lr', '1e30', steps=STEPS + 400)
  record('nonfinite', program, program.finish(), before=before,
         after=fingerprint(ckptdir))
  return logdir, stages, planted


class TestKillAndResume:

  def test_killed_runs_died(self, series):
    _, stages, _ = series
    for name in ('prefill', 'training', 'save'):
      assert stages[name]['code'] == -signal.SIGKILL, name

  def test_episodes_never_decrease_and_all_load(self, series):
    # record() loaded every file after each stage.
    _, stages, _ = series
    order = ('prefill', 'training', 'save', 'sigterm', 'finish', 'nonfinite')
    counts = [len(stages[name]['episodes']) for name in order]
    assert counts[0] >= 1
    assert counts == sorted(counts), counts
    for earlier, later in zip(order, order[1:]):
      assert set(stages[earlier]['episodes']) <= set(stages[later]['episodes'])

  def test_prefill_resumes_where_it_stopped(self, series):
    _, stages, _ = series
    # The killed prefill kept its complete episodes; the restart collects
    # only the rest (400 frames minus 200 per stored episode).
    stored = len(stages['prefill']['episodes'])
    left = max(0, 400 - 200 * stored)
    assert f'Prefill dataset with {left} steps.' in stages['training']['output']
    assert 'Prefill dataset with 0 steps.' in stages['save']['output']

  def test_no_partial_files_survive_a_restart(self, series):
    logdir, _, _ = series
    assert not list((logdir / 'episodes').glob('.*.tmp'))
    assert not [p for p in (logdir / 'checkpoints').iterdir()
                if '_temp' in p.name]

  def test_kill_during_save_keeps_the_manager_consistent(self, series):
    logdir, stages, _ = series
    save = stages['save']
    assert save['seen'], 'no checkpoint save was observed'
    # Whatever the kill interrupted, the listed checkpoint (if any) restores
    # on the next start; the partial one is never listed.
    latest, listed = save['state']
    for prefix in listed:
      tf.train.load_checkpoint(prefix)
    if latest:
      assert f'Restored checkpoint {latest}.' in stages['sigterm']['output']
    else:
      assert 'Restored checkpoint' not in stages['sigterm']['output']

  def test_resumed_run_finishes_from_the_last_checkpoint(self, series):
    logdir, stages, _ = series
    finish = stages['finish']
    assert finish['code'] == 0, finish['output'][-3000:]
    latest, _ = stages['sigterm']['state']
    assert f'Restored checkpoint {latest}.' in finish['output']
    assert 'Prefill dataset with 0 steps.' in finish['output']
    final, listed = finish['state']
    assert len(listed) <= 2  # max_to_keep
    reader = tf.train.load_checkpoint(final)
    assert reader.get_tensor('step/.ATTRIBUTES/VARIABLE_VALUE') >= STEPS
    config = cli.parse_args(
        dreamer.define_config, tools.args_type, list(FLAGS))
    steps = dreamer.count_steps(logdir / 'episodes', config)
    assert steps >= STEPS


# `python dreamer.py`, except that the process SIGKILLs itself as it is about
# to save the checkpoint of step KILL_AT: the episodes up to that step are on
# disk, and the training phases since the previous checkpoint are lost.
KILL_AT_SAVE = """
import os, signal, sys
sys.path.insert(0, os.getcwd())
import dreamer, tools
from support import checkpoint, cli
save = checkpoint.save
def save_or_die(manager, step):
  if step == int(os.environ['KILL_AT']):
    os.kill(os.getpid(), signal.SIGKILL)
  return save(manager, step)
checkpoint.save = save_or_die
sys.exit(cli.run(dreamer.main, dreamer.define_config, tools.args_type))
"""


def updates(logdir):
  """(step, Adam steps of the world model) in the run's newest checkpoint.

  The model optimizer counts the constructor's update and each one of the
  training phases (no loss scaling here, so no step is skipped).
  """
  reader = tf.train.load_checkpoint(str(logdir / 'checkpoints'))
  return (int(reader.get_tensor('step/.ATTRIBUTES/VARIABLE_VALUE')),
          int(reader.get_tensor(
              'model_opt/_opt/_iterations/.ATTRIBUTES/VARIABLE_VALUE')))


# Ctrl-C right after the episode that brings the replay to STOP_AT frames
# is stored, between two evaluations.
STOP_AFTER_EPISODE = """
import os, signal, sys
sys.path.insert(0, os.getcwd())
import dreamer, tools
from support import cli
save = tools.save_episodes
def save_then_stop(directory, episodes):
  save(directory, episodes)
  if tools.count_episodes(directory)[1] * 2 == int(os.environ['STOP_AT']):
    os.kill(os.getpid(), signal.SIGINT)
tools.save_episodes = save_then_stop
sys.exit(cli.run(dreamer.main, dreamer.define_config, tools.args_type))
"""


# Ctrl-C inside the training phase at STOP_AT frames, after 2 of its
# updates (the stop comes at the end of the next one).
STOP_INSIDE_PHASE = """
import os, signal, sys
sys.path.insert(0, os.getcwd())
import dreamer, tools
from support import cli, progress
update = progress.Phase.update
def update_then_stop(self, losses):
  update(self, losses)
  if self._step == int(os.environ['STOP_AT']) and len(self._losses) == 2:
    os.kill(os.getpid(), signal.SIGINT)
progress.Phase.update = update_then_stop
sys.exit(cli.run(dreamer.main, dreamer.define_config, tools.args_type))
"""


def evaluations(logdir):
  return [m['step'] for m in runs.read_metrics(logdir) if 'test/return' in m]


# Seconds a program of resumed_and_uninterrupted may take. Alone (beside a
# niced training run), the uninterrupted one took 108 s here, but the four
# chains run at once beside the other worker's tests, and in one run of the
# suite on 2 cores it passed 400 s.
TIMEOUT = 1200


@pytest.fixture(scope='module')
def resumed_and_uninterrupted(tmp_path_factory):
  """The same command three times: killed after its first checkpoint,
  stopped with Ctrl-C between two evaluations, and never stopped."""
  root = tmp_path_factory.mktemp('resume')
  flags = [*FLAGS, '--steps', '1600']

  def command(logdir):
    return [sys.executable, 'dreamer.py', *flags, '--logdir', str(logdir)]

  def finish(logdir):
    result = subprocess.run(
        command(logdir), cwd=ROOT, capture_output=True, text=True,
        timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return dict(output=result.stdout, updates=updates(logdir),
                evaluations=evaluations(logdir))

  def killed_then_resumed(logdir):
    # Checkpoints at 800, then 1200: killed at the second, so the phases
    # at 800, 1000 and 1200 are not in the checkpoint it resumes from.
    killed = subprocess.run(
        [sys.executable, '-c', KILL_AT_SAVE, *command(logdir)[2:]], cwd=ROOT,
        capture_output=True, text=True, timeout=TIMEOUT,
        env={**os.environ, 'KILL_AT': '1200'})
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    assert checkpoint_state(logdir)[0].endswith('ckpt-800')
    return finish(logdir)

  def stop_at_1000(logdir, hook):
    stopped = subprocess.run(
        [sys.executable, '-c', hook, *command(logdir)[2:]],
        cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT,
        env={**os.environ, 'STOP_AT': '1000'})
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stdout[-3000:]

  def stopped_then_resumed(logdir):
    # Evaluations at 400 and 800, then stopped at 1000: the next is due at
    # 1200 (the original evaluated at 1000 again, then at 1400).
    stop_at_1000(logdir, STOP_AFTER_EPISODE)
    return dict(before=evaluations(logdir), **finish(logdir))

  def stopped_inside_a_phase(logdir):
    stop_at_1000(logdir, STOP_INSIDE_PHASE)
    return dict(before=updates(logdir), **finish(logdir))

  # At once: a run's start-up is mostly one thread, and the kill and the
  # stops come at a save or an update, not at a time, so sharing the cores
  # changes nothing.
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    killed = pool.submit(killed_then_resumed, root / 'killed')
    stopped = pool.submit(stopped_then_resumed, root / 'stopped')
    inside = pool.submit(stopped_inside_a_phase, root / 'inside')
    uninterrupted = pool.submit(finish, root / 'uninterrupted')
    return dict(killed=killed.result(), stopped=stopped.result(),
                inside=inside.result(), uninterrupted=uninterrupted.result())


class TestResumeRedoesLostUpdates:

  def test_same_updates_as_never_killed(self, resumed_and_uninterrupted):
    runs = resumed_and_uninterrupted
    # Phases at 400 (pretraining), 600, ..., 1400: 6 of 5 updates, and the
    # constructor's one.
    assert runs['uninterrupted']['updates'] == (1600, 31)
    assert runs['killed']['updates'] == runs['uninterrupted']['updates']

  def test_stopped_between_evaluations_same_updates(
      self, resumed_and_uninterrupted):
    runs = resumed_and_uninterrupted
    assert runs['stopped']['updates'] == runs['uninterrupted']['updates']

  def test_stopped_inside_a_phase_same_updates(
      self, resumed_and_uninterrupted):
    runs = resumed_and_uninterrupted
    # The constructor's update, 5 at 400 frames, 600 and 800: 16. Its
    # checkpoint holds some of the 5 at 1000, and the resume does the rest
    # (it used to do all 5 again).
    step, done = runs['inside']['before']
    assert step == 1000 and 16 < done < 21, runs['inside']['before']
    assert (f'It was saved inside the training phase at 1000 frames, with '
            f'{21 - done} of its updates left: when the run is at those '
            'frames again, that phase does only those.'
            ) in runs['inside']['output']
    assert 'Redoing the' not in runs['inside']['output']
    assert runs['inside']['updates'] == runs['uninterrupted']['updates']

  def test_evaluations_on_the_grid_of_one_never_stopped(
      self, resumed_and_uninterrupted):
    runs = resumed_and_uninterrupted
    assert runs['uninterrupted']['evaluations'] == [400, 800, 1200]
    assert runs['stopped']['before'] == [400, 800]
    for name in ('stopped', 'killed'):
      assert runs[name]['evaluations'] == [400, 800, 1200], name
    assert 'The next evaluation is due at 1200 frames' in (
        runs['stopped']['output'])

  def test_says_what_it_redoes(self, resumed_and_uninterrupted):
    output = resumed_and_uninterrupted['killed']['output']
    assert 'ckpt-800' in output
    assert 'Redoing the 3 training phases since that checkpoint' in output


class TestCorruptEpisodes:

  def test_reported_once_each_and_skipped(self, series):
    _, stages, planted = series
    for name in ('sigterm', 'finish'):
      output = stages[name]['output']
      for filename in planted:
        lines = [l for l in output.splitlines() if filename in l]
        assert len(lines) == 1, (name, filename, lines)
        assert lines[0].startswith('Skipped unreadable episode file')
    assert stages['finish']['code'] == 0

  def test_corrupt_files_do_not_count_as_steps(self, series):
    _, stages, planted = series
    # The step the restarted run starts from ignores the planted files.
    output = stages['finish']['output']
    match = re.search(r'Simulating agent for (-?\d+) steps\.', output)
    stored = [n for n in stages['sigterm']['episodes'] if n not in planted]
    frames = sum(int(n[:-4].rsplit('-', 1)[1]) - 1 for n in stored) * 2
    assert int(match.group(1)) == STEPS - frames


class TestSignals:

  def test_sigterm_saves_and_says_how_to_resume(self, series):
    logdir, stages, _ = series
    sigterm = stages['sigterm']
    assert sigterm['code'] in (0, 128 + signal.SIGTERM), sigterm['output']
    output = sigterm['output']
    assert 'Received SIGTERM: stopping after the current step.' in output
    assert 'Saved checkpoint' in output.split('Received SIGTERM')[1]
    assert 'To resume, run the same command again: python dreamer.py' in output
    latest, _ = sigterm['state']
    assert latest and f'Saved checkpoint {latest}.' in output
    tf.train.load_checkpoint(latest)


class TestCtrlC:

  def test_sigint_during_prefill_keeps_episodes(self, tmp_path):
    # Ctrl-C before the agent exists: nothing to checkpoint, but the finished
    # episodes stay and the program says how to resume.
    logdir = tmp_path / 'run'
    program = Program(logdir, '--prefill', '2000')
    program.wait_for('Train episode of length')
    program.signal(signal.SIGINT)
    code = program.finish()
    output = program.output
    assert code == 128 + signal.SIGINT, output[-3000:]
    assert 'Received SIGINT: stopping after the current step.' in output
    assert 'To resume, run the same command again: python dreamer.py' in output
    assert 'Traceback' not in output
    episodes = episode_files(logdir)
    assert episodes
    check_episodes(logdir)
    assert not list((logdir / 'episodes').glob('.*.tmp'))


class TestNonFiniteLoss:

  def test_stops_naming_loss_and_step(self, series):
    _, stages, _ = series
    stage = stages['nonfinite']
    assert stage['code'] == 1, stage['output'][-3000:]
    assert re.search(
        r'^Error: The (model|actor|value) loss became (nan|inf|-inf) at step '
        r'\d+\.', stage['output'], re.M), stage['output'][-3000:]
    assert 'Saved checkpoint' not in stage['output']

  def test_last_good_checkpoint_untouched(self, series):
    _, stages, _ = series
    stage = stages['nonfinite']
    assert stage['before'] == stage['after']


@pytest.fixture(scope='module')
def bad_inputs(series, tmp_path_factory):
  """Every bad input against the finished logdir of the series."""
  logdir, _, _ = series
  base = tmp_path_factory.mktemp('bad')
  readonly = base / 'readonly'
  cases = {
      'suite': (['--task', 'mujoco_cartpole'],
                'Unknown suite "mujoco" in --task mujoco_cartpole. Valid '
                'suites: dmc'),
      'dmc_task': (['--task', 'dmc_walker_fly'],
                   "Unknown DeepMind Control task 'walker_fly' in --task "
                   'dmc_walker_fly; valid names are: acrobot_swingup'),
      'atari_game': (['--task', 'atari_notagame'],
                     "Unknown Atari game 'notagame'"),
      'batch_length': (['--batch_length', '150'],
                       '--batch_length 150 is longer than an episode can be: '
                       '--time_limit 200 / --action_repeat 2 = 100 steps'),
      'batch_size': (['--batch_size', '0'], '--batch_size must be positive'),
      'steps': (['--steps', '-5'], '--steps must be positive'),
      'unparsable': (['--train_every', 'often'],
                     "argument --train_every: invalid int value: 'often'"),
      'precision': (['--precision', '8'],
                    '--precision 8 is not valid; choose one of: 16, 32'),
      'logdir_file': (['--logdir', str(logdir / 'config.json' / 'sub')],
                      'is not a writable directory'),
      'logdir_readonly': (['--logdir', str(readonly / 'run')],
                          'is not a writable directory'),
  }
  before = fingerprint(logdir)
  with tmpfs(readonly, '1m', readonly=True) as mounted:
    if not mounted:
      del cases['logdir_readonly']  # Root would write through a chmod.
    # In one process (runs.run_many): each is refused before any work.
    results = dict(zip(cases, runs.run_many(
        [[*FLAGS, '--logdir', logdir, *flags] for flags, _ in
         cases.values()])))
  return cases, results, before, fingerprint(logdir)


class TestBadInput:

  def test_refused_with_message(self, bad_inputs):
    cases, results, _, _ = bad_inputs
    for name, (_, message) in cases.items():
      code, output = results[name]
      assert code == 2, (name, output[-2000:])
      assert message in output, (name, output[-2000:])
      # Refused before any work: nothing was built or simulated.
      assert 'Prefill dataset' not in output and 'Logdir' not in output

  def test_logdir_untouched(self, bad_inputs):
    _, _, before, after = bad_inputs
    assert before == after


class TestDamagedSeeds:

  def test_refused_and_kept(self, tmp_path):
    # seeds.jsonl (support/runtime.py) decides a resume's seed: a damaged
    # one is not silently restarted from.
    damaged = '{"frames": 0, "seed": 0}\n{"fr'
    (tmp_path / 'seeds.jsonl').write_text(damaged)
    result = subprocess.run(
        [sys.executable, 'dreamer.py', *FLAGS, '--logdir', str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 2, result.stdout[-2000:]
    assert 'seeds.jsonl is not one JSON object a line' in result.stderr
    assert (tmp_path / 'seeds.jsonl').read_text() == damaged
    assert not (tmp_path / 'episodes').exists()


class TestDiskFull:

  def test_episode_and_checkpoint_writes(self, tmp_path):
    disk = tmp_path / 'disk'
    with tmpfs(disk, '1m') as mounted:
      if not mounted:
        pytest.fail('mounting a tmpfs needs root (CI runs as root)')
      episode = dict(
          image=np.random.RandomState(0).randint(
              0, 255, (40, 64, 64, 3), np.uint8),
          reward=np.zeros(40, np.float16))
      episodes = disk / 'episodes'
      saved = []
      with pytest.raises(storage.WriteError, match='the disk is full') as info:
        for _ in range(100):
          saved += runs.save_episodes(episodes, [episode])
      assert info.value.errno == errno.ENOSPC
      assert saved and sorted(episodes.iterdir()) == sorted(saved)
      check_episodes(disk)
      for path in saved:
        path.unlink()

      # The checkpoint: a first save fits, the second does not.
      variable = tf.Variable(tf.zeros([150_000]))  # 600 kB.
      manager = tf.train.CheckpointManager(
          tf.train.Checkpoint(v=variable), str(disk / 'checkpoints'),
          max_to_keep=2)
      first = checkpoint.save(manager, 100)
      contents = {p.name: p.read_bytes()
                  for p in (disk / 'checkpoints').iterdir()}
      variable.assign(tf.ones([150_000]))
      with pytest.raises(storage.WriteError, match='No space left on device'):
        checkpoint.save(manager, 200)
      assert {p.name: p.read_bytes()
              for p in (disk / 'checkpoints').iterdir()} == contents
      assert manager.latest_checkpoint == first
      reader = tf.train.load_checkpoint(first)
      assert not reader.get_tensor('v/.ATTRIBUTES/VARIABLE_VALUE').any()

  def test_run_stops_with_clear_error(self, tmp_path):
    # Room for config, events and about three 100-step episodes.
    disk = tmp_path / 'disk'
    with tmpfs(disk, '160k') as mounted:
      limit = None
      if not mounted:
        # A per-file size limit stands in: writes past it fail with EFBIG.
        limit = lambda: (
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN),
            resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000)))
      program = Program(disk / 'run', '--prefill', '2000', preexec_fn=limit)
      code = program.finish()
      output = program.output
      assert code == 1, output[-3000:]
      assert re.search(r'^Error: Could not write .*\.npz because', output,
                       re.M), output[-3000:]
      assert 'Traceback' not in output
      assert 'To resume, run the same command again' in output
      assert not list((disk / 'run' / 'episodes').glob('.*'))
      assert episode_files(disk / 'run')
      check_episodes(disk / 'run')


class TestKillDuringSave:
  """The manager-level invariant, at many more kill moments than one run."""

  # The process saves back to back. With a stage other than 'none' it kills
  # itself inside its fourth save, at a point inside TensorFlow's manager:
  # 'unlisted' after the files are written but before the checkpoint state
  # names them, 'sweep' after an old checkpoint's index is deleted but not
  # its data. Timed kills from outside land wherever they land.
  SCRIPT = '''
import os
import signal
import sys
import tensorflow as tf
from tensorflow.python.checkpoint import checkpoint_management as cm
directory, size, stage = sys.argv[1], int(sys.argv[2]), sys.argv[3]
number = tf.Variable(0, dtype=tf.int64)
values = tf.Variable(tf.zeros([size]))
manager = tf.train.CheckpointManager(
    tf.train.Checkpoint(number=number, values=values), directory,
    max_to_keep=2)
start = int(manager.latest_checkpoint.rsplit('-', 1)[1]) if (
    manager.latest_checkpoint) else 0
target = start + 4

def die_at(name, module, calls):
  original = getattr(module, name)
  def wrapper(*args, **kwargs):
    if int(number.numpy()) == target:
      calls[0] -= 1
      if calls[0] == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
  setattr(module, name, wrapper)

if stage == 'unlisted':
  die_at('_record_state', cm.CheckpointManager, [1])
elif stage == 'sweep':
  die_at('_delete_file_if_exists', cm, [2])
print('ready', flush=True)
for i in range(start + 1, start + 10000):
  number.assign(i)
  values.assign(tf.fill([size], float(i)))
  manager.save(checkpoint_number=i)
'''

  def test_latest_always_restores(self, tmp_path):
    directory = tmp_path / 'checkpoints'
    interrupted = {}
    stages = ['unlisted', 'sweep'] + ['none'] * 5
    for attempt, stage in enumerate(stages):
      process = subprocess.Popen(
          [sys.executable, '-c', self.SCRIPT, str(directory), '4000000',
           stage], stdout=subprocess.PIPE, text=True)
      try:
        assert process.stdout.readline() == 'ready\n'
        if stage == 'none':
          time.sleep(0.3 + 0.137 * attempt)  # Staggered moments.
          process.kill()
        assert process.wait(timeout=120) == -signal.SIGKILL
      finally:
        process.kill()  # A placed kill that never came leaves no process.
        process.wait()
      listed = tf.train.get_checkpoint_state(str(directory))
      listed = {os.path.basename(p) for p in
                listed.all_model_checkpoint_paths}
      # Files of a checkpoint the state does not list, or an index without
      # its data, are a save cut short.
      files = os.listdir(directory)
      on_disk = {n.split('.')[0].split('_temp')[0] for n in files
                 if n.startswith('ckpt-')}
      indexed = {n.split('.')[0] for n in files if n.endswith('.index')}
      interrupted[attempt] = bool(on_disk - listed or on_disk - indexed)
      latest = tf.train.latest_checkpoint(str(directory))
      reader = tf.train.load_checkpoint(latest)
      number = reader.get_tensor('number/.ATTRIBUTES/VARIABLE_VALUE')
      assert latest.endswith(f'ckpt-{number}')
      values = reader.get_tensor('values/.ATTRIBUTES/VARIABLE_VALUE')
      assert np.all(values == number)
      storage.remove_matching(directory, '*_temp*')
      assert not [n for n in os.listdir(directory) if '_temp' in n]
    print(f'kills that interrupted a save: {interrupted}')
    # The two placed kills must leave a save cut short, or the test would
    # not exercise what it claims; the timed ones are extra moments.
    assert interrupted[0] and interrupted[1], interrupted


class TestRestoreFallback:
  """A damaged checkpoint file (not a kill: e.g. a lost disk block)."""

  @staticmethod
  def agent(size):
    # What main() checkpoints of the Dreamer agent: its variables.
    variable = tf.Variable(tf.zeros([size]))
    return tf.train.Checkpoint(v=variable), variable

  def two_checkpoints(self, directory):
    """Saves ckpt-1 (all ones) and ckpt-2 (all twos), then zeros the agent."""
    agent, variable = self.agent(1000)
    manager = tf.train.CheckpointManager(
        agent, str(directory), max_to_keep=2)
    variable.assign(tf.fill([1000], 1.0))
    older = checkpoint.save(manager, 1)
    variable.assign(tf.fill([1000], 2.0))
    latest = checkpoint.save(manager, 2)
    variable.assign(tf.zeros([1000]))
    return agent, variable, older, latest

  @staticmethod
  def damage(prefix):
    data = pathlib.Path(prefix + '.data-00000-of-00001')
    data.write_bytes(data.read_bytes()[:100])

  def test_falls_back_to_the_older_checkpoint(self, tmp_path, capsys):
    agent, variable, older, latest = self.two_checkpoints(tmp_path)
    self.damage(latest)
    manager = tf.train.CheckpointManager(  # As on a restart.
        agent, str(tmp_path), max_to_keep=2)
    assert checkpoint.restore_latest(manager) == older
    assert np.all(variable.numpy() == 1.0)
    assert f'Could not read the checkpoint {latest}' in capsys.readouterr().out
    # With every checkpoint damaged, the run refuses to start afresh.
    self.damage(older)
    with pytest.raises(checkpoint.CheckpointError, match='None of the'):
      checkpoint.restore_latest(manager)

  @pytest.mark.parametrize('listing', [
      ['ckpt-2', 'ckpt-1'],  # Not oldest first.
      ['ckpt-1'],  # Without the newest.
      [],  # Only the newest, as model_checkpoint_path.
  ])
  def test_checkpoint_file_without_timestamps_is_read(
      self, tmp_path, listing):
    agent, variable, _, latest = self.two_checkpoints(tmp_path)
    # As written by hand or by older tools: TensorFlow's manager lists none.
    (tmp_path / 'checkpoint').write_text(
        'model_checkpoint_path: "ckpt-2"\n' + ''.join(
            f'all_model_checkpoint_paths: "{name}"\n' for name in listing))
    manager = tf.train.CheckpointManager(
        agent, str(tmp_path), max_to_keep=2)
    assert not manager.checkpoints
    assert checkpoint.exists(tmp_path)
    assert checkpoint.restore_latest(manager) == latest
    assert np.all(variable.numpy() == 2.0)
    # A save at the restored step keeps the file it would overwrite.
    before = fingerprint(tmp_path)
    assert checkpoint.save(manager, 2) == latest
    assert fingerprint(tmp_path) == before

  def test_checkpoint_of_another_model_is_refused(self, tmp_path):
    agent, _ = self.agent(1000)
    manager = tf.train.CheckpointManager(
        agent, str(tmp_path), max_to_keep=2)
    checkpoint.save(manager, 1)
    other, _ = self.agent(10)
    manager = tf.train.CheckpointManager(
        other, str(tmp_path), max_to_keep=2)
    with pytest.raises(checkpoint.CheckpointError, match='Were model flags'):
      checkpoint.restore_latest(manager)
