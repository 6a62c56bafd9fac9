"""A newcomer's first hour: the documented commands, run for real.

Each run is a subprocess of `python dreamer.py` with the tiny preset (real
rendering, real training), shared by the assertions of a class through
module-scoped fixtures, so the module takes about three minutes on 2 cores.
"""

import concurrent.futures
import io
import json
import os
import pathlib
import re
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf

import dreamer
import tools
from runs import read_metrics
from runs import run
from support import cli
from support import runtime

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The agent metric keys of SPEC.md (Outputs); `pcont_loss` only with pcont.
AGENT_KEYS = (
    'expl_amount', 'model_grad_norm', 'value_grad_norm', 'actor_grad_norm',
    'prior_ent', 'post_ent', 'image_loss', 'reward_loss', 'div', 'model_loss',
    'value_loss', 'actor_loss', 'action_ent')
EPISODE_NAME = re.compile(r'^\d{8}T\d{6}-[0-9a-f]{32}-(\d+)\.npz$')


def read_events(logdir):
  """Returns {tag: [summary value, ...]} over every event file of a logdir."""
  values = {}
  for path in sorted(logdir.glob('events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        values.setdefault(value.tag, []).append(value)
  return values


@pytest.fixture(scope='module')
def cartpole(cartpole_run):
  return cartpole_run


class TestFirstRun:

  def test_exits_cleanly(self, cartpole):
    _, first, _ = cartpole
    assert first['code'] == 0, first['output'][-3000:]

  def test_metrics_have_every_agent_key_and_fps(self, cartpole):
    _, first, _ = cartpole
    agent = [m for m in first['metrics'] if 'model_loss' in m]
    assert len(agent) >= 2, first['metrics']
    for line in agent:
      assert set(AGENT_KEYS) <= set(line), set(AGENT_KEYS) - set(line)
      assert all(np.isfinite(line[k]) for k in AGENT_KEYS)
    # The first line comes from the pretraining inside the first evaluation
    # episode (a quirk of the original); fps needs a previous line.
    assert all('fps' in line and line['fps'] > 0 for line in agent[1:])

  def test_metrics_have_train_and_test_episodes(self, cartpole):
    _, first, _ = cartpole
    train = [m for m in first['metrics'] if 'train/return' in m]
    test = [m for m in first['metrics'] if 'test/return' in m]
    assert train and test
    for line in train:
      assert {'step', 'train/length', 'episodes'} <= set(line)
      assert line['train/length'] == 500  # Agent steps of 1000 frames.
    for line in test:
      assert {'step', 'test/length', 'episodes'} <= set(line)

  def test_episode_files_are_named_by_their_length(self, cartpole):
    logdir, first, _ = cartpole
    assert len(first['episodes']) == 2  # 1000 prefill + 1000 collected.
    for name in first['episodes']:
      match = EPISODE_NAME.match(name)
      assert match, name
      with np.load(logdir / 'episodes' / name) as episode:
        assert len(episode['reward']) == int(match.group(1)) == 501
        assert episode['image'].shape[1:] == (64, 64, 3)
        assert episode['image'].dtype == np.uint8

  def test_tensorboard_has_scalars_and_gifs(self, cartpole):
    logdir, _, _ = cartpole
    values = read_events(logdir)
    tags = set(values)
    for key in AGENT_KEYS + ('fps',):
      assert f'agent/{key}' in tags, key
    for key in ('train/return', 'train/length', 'test/return', 'episodes'):
      assert f'sim/{key}' in tags, key
    for tag in ('agent/openl/gif', 'sim/test/video/gif'):
      assert tag in tags, tag
      for value in values[tag]:
        assert value.image.encoded_image_string.startswith(b'GIF8')
    # Open loop: 6 sequences side by side (the tiny batch holds 4); rows of
    # truth, model and error.
    openl = values['agent/openl/gif'][0].image
    frames = iio.imread(
        io.BytesIO(openl.encoded_image_string), extension='.gif', index=None)
    assert frames.shape[1:3] == (3 * 64, 4 * 64)

  def test_each_openl_gif_at_its_own_logging_step(self, cartpole):
    # The original wrote every GIF at the step of the first trace.
    logdir, _, second = cartpole  # Both runs' lines.
    steps = [event.step for path in sorted(logdir.glob('events.out.*'))
             for event in tf.compat.v1.train.summary_iterator(str(path))
             for value in event.summary.value
             if value.tag == 'agent/openl/gif']
    logged = [m['step'] for m in second['metrics'] if 'model_loss' in m]
    assert len(steps) >= 2 and steps == logged, (steps, logged)

  def test_checkpoint_written(self, cartpole):
    _, first, _ = cartpole
    assert 'checkpoint' in first['checkpoints']
    assert 'ckpt-2000.index' in first['checkpoints']
    assert 'Saved checkpoint' in first['output']

  def test_console(self, cartpole):
    _, first, _ = cartpole
    output = first['output']
    for part in ('model', 'actor', 'value'):
      assert re.search(rf'^Found \d+ {part} parameters\.$', output, re.M), part
    assert re.search(
        r'^Train episode of length 1000 with return -?\d+\.\d\.$', output,
        re.M)
    assert re.search(
        r'^Test episode of length 1000 with return -?\d+\.\d\.$', output, re.M)
    assert re.search(r'^\[\d+\] expl_amount ', output, re.M)
    assert 'Prefill dataset with 1000 steps.' in output
    # A quiet start: no logging noise, and no op running in float16 on a CPU.
    for noise in ('absl::InitializeLog', 'oneDNN', 'DT_HALF', 'I0000'):
      assert noise not in output, noise

  def test_progress_line_in_a_long_phase(self, cartpole):
    # Printed every 30 s of a phase; the tiny run's collection lasts longer.
    _, first, second = cartpole
    pattern = (r'^\[(prefill|train)\] frames \d+/\d+ \| [\d.]+ fps \| '
               r'[\d.]+ updates/s \| ETA (\d+:\d\d:\d\d|\?)$')
    assert re.search(pattern, first['output'] + second['output'], re.M)


class TestResume:

  def test_exits_cleanly(self, cartpole):
    _, _, second = cartpole
    assert second['code'] == 0, second['output'][-3000:]

  def test_restores_and_skips_prefill(self, cartpole):
    logdir, _, second = cartpole
    output = second['output']
    assert 'Prefill dataset with 0 steps.' in output
    assert f'Restored checkpoint {logdir}/checkpoints/ckpt-2000.' in output
    assert 'Simulating agent for 1000 steps.' in output
    assert 'ckpt-3000.index' in os.listdir(logdir / 'checkpoints')

  def test_step_count_continues(self, cartpole):
    _, first, second = cartpole
    before = max(m['step'] for m in first['metrics'])
    new = second['metrics'][len(first['metrics']):]
    assert new and min(m['step'] for m in new) >= before
    assert max(m['step'] for m in new) > before
    # Episodes keep counting from the files of the first run.
    counts = [m['episodes'] for m in new if 'episodes' in m]
    assert counts and min(counts) >= len(first['episodes'])

  def test_train_episodes_start_from_distinct_states(self, cartpole):
    # The first start stored the prefill's episode and one more; the resume
    # stored the third. With the first start's seeds the resume's environment
    # began where the prefill's had (runtime.seed_of_start).
    logdir, _, _ = cartpole
    starts = []
    for path in sorted((logdir / 'episodes').glob('*.npz')):
      with np.load(path) as episode:
        starts.append((episode['position'][0], episode['image'][0]))
    assert len(starts) == 3
    for i, (position, image) in enumerate(starts):
      for other_position, other_image in starts[:i]:
        assert not np.array_equal(position, other_position)
        assert not np.array_equal(image, other_image)

  def test_says_and_lists_the_new_seed(self, cartpole):
    logdir, first, second = cartpole
    assert 'Resumed at' not in first['output']
    match = re.search(
        r'^Resumed at 2000 frames \(start 2\): seed (\d+),', second['output'],
        re.M)
    assert match, second['output'][-3000:]
    with (logdir / 'seeds.jsonl').open() as f:
      starts = [json.loads(line) for line in f]
    # Each with the policy --precision 16 gave, kept by the resume.
    policy = ('mixed_float16' if tf.config.list_physical_devices('GPU')
              else runtime.cpu_policy_for_16())
    assert starts == [
        dict(frames=0, seed=0, precision=16, policy=policy),
        dict(frames=2000, seed=int(match[1]), precision=16, policy=policy)]

  def test_evaluations_start_from_distinct_states(self, cartpole):
    # One evaluation at each start (1000 and 2000 frames), each the first
    # episode of its test environment.
    logdir, _, _ = cartpole
    videos = read_events(logdir)['sim/test/video/gif']
    firsts = [iio.imread(io.BytesIO(v.image.encoded_image_string),
                         extension='.gif', index=0) for v in videos]
    assert len(firsts) == 2
    assert not np.array_equal(firsts[0], firsts[1])


@pytest.fixture(scope='module')
def pong(tmp_path_factory):
  # Short episodes (100 agent steps of 4 frames) keep the run under a minute.
  logdir = tmp_path_factory.mktemp('e2e') / 'pong'
  code, output = run(
      '--preset', 'atari', 'tiny', '--task', 'atari_pong', '--time_limit',
      '400', '--prefill', '800', '--steps', '1200', '--eval_every', '400',
      '--logdir', str(logdir))
  return logdir, code, output


class TestAtari:

  def test_presets_compose_in_either_order(self):
    # The two presets set disjoint flags, so neither order loses a value.
    assert not set(cli.PRESETS['atari']) & set(cli.PRESETS['tiny'])
    one = cli.parse_args(
        dreamer.define_config, tools.args_type, ['--preset', 'atari', 'tiny'])
    other = cli.parse_args(
        dreamer.define_config, tools.args_type, ['--preset', 'tiny', 'atari'])
    assert vars(one) == vars(other)
    for key, value in {**cli.PRESETS['atari'],
                       **cli.PRESETS['tiny']}.items():
      assert getattr(one, key) == value, key

  def test_runs_with_one_hot_actions(self, pong):
    logdir, code, output = pong
    assert code == 0, output[-3000:]
    assert 'Saved checkpoint' in output
    files = sorted((logdir / 'episodes').glob('*.npz'))
    assert len(files) >= 2
    for path in files:
      with np.load(path) as episode:
        action = episode['action']
      assert len(action) == 101  # 400 frames / action repeat 4, + reset.
      # The reset step stores a zero action; every other one is one-hot.
      assert not action[0].any()
      assert np.all(action[1:].sum(-1) == 1)
      assert set(np.unique(action)) <= {0, 1}
    agent = [m for m in read_metrics(logdir) if 'model_loss' in m]
    assert agent and all('pcont_loss' in m for m in agent)


class TestPlotting:

  def test_writes_png_and_table(self, cartpole, tmp_path):
    logdir, _, _ = cartpole
    result = subprocess.run(
        [sys.executable, 'plotting.py', '--indir', str(logdir), '--outdir',
         str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr
    pngs = list(tmp_path.glob('*.png'))
    assert pngs and all(p.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
                        for p in pngs)
    rows = [l.split() for l in result.stdout.splitlines()
            if l.startswith('dmc_cartpole_balance')]
    assert len(rows) == 1, result.stdout
    # task, frames, return, paper@frames, paper final, runs: the latest test
    # episode of the one run.
    last = [m for m in read_metrics(logdir) if 'test/return' in m][-1]
    task, frames, ret, _, _, runs = rows[0]
    assert int(frames) == last['step'] and runs == '1'
    assert abs(float(ret) - last['test/return']) <= 0.05 + 1e-9  # Rounding.


@pytest.fixture(scope='module')
def twins(tmp_path_factory):
  """The same short command with --deterministic twice, in two logdirs.

  Each stops at 1000 frames and is resumed to 1500, so the resume's own seed
  (runtime.seed_of_start) and the restored checkpoint are covered too.
  """
  root = tmp_path_factory.mktemp('twins')

  def run_in(logdir):
    flags = (
        '--preset', 'tiny', '--task', 'dmc_cartpole_balance', '--seed', '3',
        '--deterministic', 'True', '--prefill', '500', '--eval_every', '500',
        '--log_every', '500', '--train_every', '500', '--logdir', str(logdir))
    code, output = run(*flags, '--steps', '1000')
    if code != 0:
      return code, output
    return run(*flags, '--steps', '1500')

  # With the open-loop GIF (the default): the suite's only --deterministic
  # runs, so its trace and image steps are covered too.
  # At once: each run's start-up is mostly one thread. Sharing the cores
  # must not change anything that --deterministic fixes.
  logdirs = [root / 'a', root / 'b']
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    for code, output in pool.map(run_in, logdirs):
      assert code == 0, output[-3000:]
  return logdirs


def episode_contents(logdir):
  # File names hold the wall-clock time and a random id; contents must match.
  contents = []
  for path in (logdir / 'episodes').glob('*.npz'):
    with np.load(path) as episode:
      contents.append({k: episode[k] for k in episode.keys()})
  return sorted(contents, key=lambda e: e['image'].tobytes())


class TestDeterministic:

  def test_same_metrics(self, twins):
    strip = lambda m: {k: v for k, v in m.items() if k != 'fps'}
    first, second = [[strip(m) for m in read_metrics(d)] for d in twins]
    assert any('model_loss' in m for m in first)
    assert first == second

  def test_both_resumed(self, twins):
    for logdir in twins:
      with (logdir / 'seeds.jsonl').open() as f:
        assert [json.loads(line)['frames'] for line in f] == [0, 1000]

  def test_same_episodes(self, twins):
    first, second = [episode_contents(d) for d in twins]
    assert len(first) == len(second) >= 2
    for a, b in zip(first, second):
      assert a.keys() == b.keys()
      for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)

  def test_same_checkpoints(self, twins):
    first, second = [
        tf.train.load_checkpoint(tf.train.latest_checkpoint(
            str(d / 'checkpoints'))) for d in twins]
    names = first.get_variable_to_shape_map()
    assert names == second.get_variable_to_shape_map()
    for name in names:
      if name.endswith('.ATTRIBUTES/VARIABLE_VALUE'):
        np.testing.assert_array_equal(
            first.get_tensor(name), second.get_tensor(name), err_msg=name)
