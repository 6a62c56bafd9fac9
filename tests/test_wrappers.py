"""Tests of the environments and wrappers in wrappers.py."""

import ctypes
import ctypes.util
import functools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import gymnasium
import numpy as np
import pytest
from PIL import Image

import runs
import wrappers
from support import spaces
from support import workers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PAPER_TASKS = [
    'acrobot_swingup', 'cartpole_balance', 'cartpole_balance_sparse',
    'cartpole_swingup', 'cartpole_swingup_sparse', 'cheetah_run', 'cup_catch',
    'finger_spin', 'finger_turn_easy', 'finger_turn_hard', 'hopper_hop',
    'hopper_stand', 'pendulum_swingup', 'quadruped_run', 'quadruped_walk',
    'reacher_easy', 'reacher_hard', 'walker_run', 'walker_stand',
    'walker_walk']


def make_dmc(task, callbacks=(), time_limit=1000, action_repeat=2, seed=0):
  """Builds the DMC stack of dreamer.py."""
  env = wrappers.DeepMindControl(task, seed=seed)
  env = wrappers.ActionRepeat(env, action_repeat)
  env = wrappers.NormalizeActions(env)
  env = wrappers.TimeLimit(env, time_limit / action_repeat)
  env = wrappers.Collect(env, list(callbacks), precision=32)
  env = wrappers.RewardObs(env)
  return env


class FakeEnv:
  """A small deterministic environment with a float observation."""

  def __init__(self, length=5, discount=True, low=-2.0, high=2.0):
    self.length = length
    self.discount = discount
    self.action_space = gymnasium.spaces.Box(low, high, (2,), np.float32)
    self.observation_space = gymnasium.spaces.Dict({
        'state': gymnasium.spaces.Box(-np.inf, np.inf, (3,), np.float32),
        'image': gymnasium.spaces.Box(0, 255, (4, 4, 3), np.uint8)})
    self.actions = []
    self.t = 0

  def _obs(self):
    return {'state': np.full(3, self.t, np.float64),
            'image': np.full((4, 4, 3), self.t, np.uint8)}

  def reset(self):
    self.t = 0
    return self._obs()

  def step(self, action):
    self.actions.append(np.array(action))
    self.t += 1
    done = self.t >= self.length
    info = {'discount': np.array(0.0 if done else 1.0, np.float32)}
    return self._obs(), 0.5, done, info if self.discount else {}


class RenderCountingEnv(FakeEnv):
  """Offers the deferred-render methods and counts renders."""

  renders = 0

  def step(self, action):
    obs, reward, done, info = self.step_unrendered(action)
    return self.add_image(obs), reward, done, info

  def step_unrendered(self, action):
    obs, reward, done, info = super().step(action)
    del obs['image']
    return obs, reward, done, info

  def add_image(self, obs):
    self.renders += 1
    return dict(obs, image=np.full((4, 4, 3), self.t, np.uint8))


class FailingStepEnv(FakeEnv):

  def step(self, action):
    raise ValueError('step failed on purpose')


def failing_ctor():
  raise OSError('constructor failed on purpose')


# DeepMind Control.


@pytest.mark.parametrize('task', PAPER_TASKS)
def test_dmc_paper_task_full_stack(task):
  env = make_dmc(task)
  space = env.action_space
  assert np.all(space.low == -1) and np.all(space.high == 1)
  assert env.observation_space['image'].shape == (64, 64, 3)
  obs = env.reset()
  assert obs['image'].shape == (64, 64, 3) and obs['image'].dtype == np.uint8
  assert obs['reward'] == 0.0
  for _ in range(3):
    obs, reward, done, info = env.step(space.sample())
    assert obs['image'].shape == (64, 64, 3) and obs['image'].dtype == np.uint8
    assert np.isfinite(reward) and not done
    assert info['discount'].dtype == np.float32
  assert obs['image'].std() > 0  # A real render, not a blank buffer.
  env.close()


def test_dmc_episode_length_and_timeout_discount():
  episodes = []
  env = make_dmc('cartpole_balance', callbacks=[episodes.append])
  env.reset()
  done, steps = False, 0
  while not done:
    _, _, done, info = env.step(env.action_space.sample())
    steps += 1
  assert steps == 500
  assert len(episodes) == 1 and info['episode'] is episodes[0]
  episode = episodes[0]
  for key, value in episode.items():
    assert len(value) == 501, key
  assert episode['discount'][-1] == 1.0
  assert episode['reward'][0] == 0.0 and np.all(episode['action'][0] == 0)
  assert episode['image'].dtype == np.uint8
  assert episode['position'].dtype == np.float32


def test_dmc_render_once_matches_render_every_step():
  env = wrappers.ActionRepeat(wrappers.DeepMindControl('walker_walk', seed=7), 2)
  reference = wrappers.DeepMindControl('walker_walk', seed=7)
  obs, ref_obs = env.reset(), reference.reset()
  assert np.array_equal(obs['image'], ref_obs['image'])
  rng = np.random.default_rng(0)
  for _ in range(10):
    action = rng.uniform(-1, 1, env.action_space.shape)
    obs, reward, _, _ = env.step(action)
    ref_reward = 0.0
    for _ in range(2):
      ref_obs, step_reward, _, _ = reference.step(action)  # Renders each.
      ref_reward += step_reward
    assert reward == ref_reward
    assert obs.keys() == ref_obs.keys()
    for key in obs:
      assert np.array_equal(obs[key], ref_obs[key]), key


def test_action_repeat_renders_once_per_agent_step():
  inner = RenderCountingEnv(length=3)
  env = wrappers.ActionRepeat(inner, 2)
  env.reset()
  obs, reward, done, _ = env.step(np.zeros(2))
  assert inner.renders == 1 and reward == 1.0 and not done
  assert obs['image'][0, 0, 0] == 2  # Rendered after the second repeat.
  # The episode ends after the first repeat: stop there, still render.
  obs, reward, done, _ = env.step(np.zeros(2))
  assert inner.renders == 2 and reward == 0.5 and done
  assert obs['image'][0, 0, 0] == 3


def test_action_repeat_does_not_bypass_intermediate_wrappers():
  inner = RenderCountingEnv(length=10)
  env = wrappers.ActionRepeat(wrappers.NormalizeActions(inner), 2)
  env.reset()
  env.step(np.ones(2))
  assert inner.renders == 2  # Rendered by each step, through the wrapper.
  np.testing.assert_allclose(inner.actions[-1], [2.0, 2.0])


def _python(code, **env_vars):
  """Starts a Python subprocess that can import wrappers, without display."""
  env = dict(os.environ, PYTHONPATH=ROOT, **env_vars)
  for name in ('DISPLAY', 'WAYLAND_DISPLAY'):
    env.pop(name, None)
  return subprocess.Popen(
      [sys.executable, '-c', textwrap.dedent(code)], env=env, cwd=ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_python(code, **env_vars):
  process = _python(code, **env_vars)
  stdout, stderr = process.communicate(timeout=120)
  return subprocess.CompletedProcess(
      process.args, process.returncode, stdout, stderr)


MAKE_CARTPOLE = """
import wrappers
wrappers.DeepMindControl('cartpole_balance').reset()
print('rendered')
"""


@pytest.mark.skipif(
    bool(ctypes.util.find_library('OSMesa')), reason='OSMesa is installed')
def test_missing_osmesa_gives_clear_error():
  result = _run_python(MAKE_CARTPOLE, MUJOCO_GL='osmesa')
  assert result.returncode != 0
  assert 'RuntimeError: MuJoCo could not start its OpenGL renderer' in (
      result.stderr)
  assert 'libosmesa6' in result.stderr and 'libegl1' in result.stderr
  assert 'direct cause' in result.stderr  # The original error is chained.


def test_renderer_without_display_gives_clear_error():
  # GLFW needs a display; without one the first render fails.
  result = _run_python(MAKE_CARTPOLE, MUJOCO_GL='glfw')
  if result.returncode == 0:
    pytest.skip('GLFW could render here')
  assert 'RuntimeError: MuJoCo could not start its OpenGL renderer' in (
      result.stderr)
  assert "MUJOCO_GL='glfw'" in result.stderr


def test_render_in_process_with_tensorflow():
  # Mesa's software renderer and TensorFlow each carry an LLVM; without
  # wrappers' isolation of Mesa's copy, this segfaults on the first render.
  result = _run_python("""
  import tensorflow as tf
  import wrappers
  env = wrappers.ActionRepeat(wrappers.DeepMindControl('walker_walk'), 2)
  env.reset()
  obs = env.step(env.action_space.sample())[0]
  print('image', obs['image'].shape, float(tf.reduce_sum(tf.ones(3))))
  """)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'image (64, 64, 3) 3.0' in result.stdout


# Atari.


def test_atari_pong_stack():
  env = wrappers.Atari(
      'pong', 4, (64, 64), grayscale=False, life_done=True,
      sticky_actions=True, seed=0)
  env = wrappers.OneHotAction(env)
  env = wrappers.TimeLimit(env, 108000 / 4)
  space = env.action_space
  assert isinstance(space, gymnasium.spaces.Box) and space.n == 6
  assert space.shape == (6,) and space.dtype == np.float32
  sample = space.sample()
  assert sample.dtype == np.float32 and sample.sum() == 1 and space.contains(
      sample)
  assert env.observation_space['image'].shape == (64, 64, 3)
  obs = env.reset()
  assert obs['image'].shape == (64, 64, 3) and obs['image'].dtype == np.uint8
  for _ in range(20):
    obs, reward, done, info = env.step(space.sample())
    assert obs['image'].shape == (64, 64, 3) and obs['image'].dtype == np.uint8
    assert reward in (-1.0, 0.0, 1.0) and not done and 'discount' not in info
  env.close()


def test_atari_matches_ale_stepped_by_hand():
  env = wrappers.Atari(
      'pong', 4, (64, 64), grayscale=False, noops=0, sticky_actions=False,
      seed=0)
  reference = gymnasium.make(
      'ALE/Pong-v5', frameskip=1, repeat_action_probability=0.0,
      full_action_space=False)
  env.reset()
  reference.reset(seed=0)
  rng = np.random.default_rng(0)
  rewards = []
  for _ in range(300):
    action = int(rng.integers(6))
    frames, ref_reward = [], 0.0
    for _ in range(4):
      frame, reward, _, _, _ = reference.step(action)
      frames.append(frame)
      ref_reward += reward
    obs, reward, _, _ = env.step(action)
    assert reward == ref_reward
    expected = Image.fromarray(np.maximum(frames[-2], frames[-1]))
    expected = np.asarray(expected.resize((64, 64), Image.BILINEAR))
    assert np.array_equal(obs['image'], expected)
    rewards.append(reward)
  assert any(rewards)  # The comparison covered scoring steps.
  reference.close()


def test_atari_grayscale_and_seeded_noops():
  def first_obs(seed):
    env = wrappers.Atari('space_invaders', 4, (84, 84), seed=seed)
    return env.reset()['image']
  image = first_obs(1)
  assert image.shape == (84, 84, 1) and image.dtype == np.uint8
  assert np.array_equal(image, first_obs(1))


def test_atari_life_done():
  env = wrappers.Atari(
      'space_invaders', 4, (64, 64), life_done=True, seed=0)
  env.reset()
  ale = env.unwrapped.ale
  lives = ale.lives()
  assert lives > 1
  rng = np.random.default_rng(0)
  done, steps = False, 0
  while not done:
    _, _, done, _ = env.step(int(rng.integers(env.action_space.n)))
    steps += 1
    assert steps < 10000
  assert ale.lives() == lives - 1 and not ale.game_over()
  assert env.reset()['image'].shape == (64, 64, 1)
  assert ale.lives() == lives  # Reset starts a new game.


class FakeGame:
  """Stands in for the emulator: frame t is filled with t; ends at `end`."""

  def __init__(self, shape, end):
    self.shape, self.end, self.t = shape, end, 0
    self.unwrapped = self
    self.ale = self

  def lives(self):
    return 3

  def reset(self, seed=None):
    self.t = 0
    return np.zeros(self.shape, np.uint8), {}

  def step(self, action):
    self.t += 1
    frame = np.full(self.shape, self.t, np.uint8)
    return frame, 0.0, self.t == self.end, False, {}


@pytest.mark.parametrize('repeat, end, expected', [
    # Frames 3 and 4 are read; frame 6 ends the episode in the second step's
    # second repeat: as in the original, it is not read, and the observation
    # stays the maximum of the frames read before.
    (4, 6, [4, 4]),
    # A repeat of 1 reads every frame (the original never updated the image).
    (1, 2, [1, 1]),
    (1, 3, [1, 2]),
])
def test_atari_frames_read_as_in_the_original(repeat, end, expected):
  env = wrappers.Atari('pong', repeat, (64, 64), grayscale=False, noops=0)
  game = FakeGame(env._env.observation_space.shape, end)
  env._env = game
  env.reset()
  images = [env.step(0)[0]['image'] for _ in range(2)]
  assert [int(image.max()) for image in images] == expected
  assert all(image.min() == image.max() for image in images)


# Generic wrappers.


def test_one_hot_action_validation():
  inner = FakeEnv()
  inner.action_space = gymnasium.spaces.Discrete(4)
  env = wrappers.OneHotAction(inner)
  env.reset()
  with pytest.raises(ValueError, match='one-hot'):
    env.step(np.full(4, 0.5))
  with pytest.raises(ValueError, match=r'1\. 1\. 0\. 0\.'):
    env.step(np.array([1.0, 1.0, 0.0, 0.0]))
  with pytest.raises(ValueError):
    env.step(np.zeros(4))
  for dtype in (np.float16, np.float32, np.float64):
    env.step(np.array([0, 0, 1, 0], dtype))
    assert inner.actions[-1] == 2


def test_collect_conversion_and_default_discount():
  episodes = []
  inner = FakeEnv(length=3, discount=False)
  env = wrappers.Collect(inner, [episodes.append], precision=16)
  obs = env.reset()
  assert obs['state'].dtype == np.float64  # Returned unchanged.
  action = np.array([0.25, -0.5])
  for _ in range(3):
    obs, _, done, info = env.step(action)
    assert obs['state'].dtype == np.float64
  action[:] = 9  # The stored copy must not change.
  assert done and len(episodes) == 1
  episode = info['episode']
  assert episode['state'].dtype == np.float16
  assert episode['image'].dtype == np.uint8
  assert episode['action'].dtype == np.float16
  assert episode['reward'].dtype == np.float16
  np.testing.assert_array_equal(episode['discount'], [1, 1, 1, 0])
  np.testing.assert_array_equal(episode['reward'], [0, 0.5, 0.5, 0.5])
  np.testing.assert_array_equal(episode['action'][0], [0, 0])
  np.testing.assert_array_equal(episode['action'][1], [0.25, -0.5])
  assert episode['state'].shape == (4, 3)


def test_time_limit():
  env = wrappers.TimeLimit(FakeEnv(length=100, discount=False), 2.0)
  with pytest.raises(AssertionError, match='reset'):
    env.step(np.zeros(2))
  for _ in range(2):  # The counter restarts on reset.
    env.reset()
    _, _, done, info = env.step(np.zeros(2))
    assert not done
    _, _, done, info = env.step(np.zeros(2))
    assert done and info['discount'] == 1.0
    assert info['discount'].dtype == np.float32
  env = wrappers.TimeLimit(FakeEnv(length=2), 2)
  env.reset()
  env.step(np.zeros(2))
  _, _, done, info = env.step(np.zeros(2))
  assert done and info['discount'] == 0.0  # The env's own discount wins.


def test_normalize_actions():
  inner = FakeEnv()
  inner.action_space = gymnasium.spaces.Box(
      np.array([0.0, -np.inf], np.float32), np.array([10.0, np.inf],
                                                      np.float32))
  env = wrappers.NormalizeActions(inner)
  # As the original: every dimension reports [-1, 1]; the unbounded one is
  # passed through unchanged.
  np.testing.assert_array_equal(env.action_space.low, [-1, -1])
  np.testing.assert_array_equal(env.action_space.high, [1, 1])
  env.reset()
  env.step(np.array([-1.0, 7.0]))
  np.testing.assert_allclose(inner.actions[-1], [0.0, 7.0])
  env.step(np.array([0.5, -3.0]))
  np.testing.assert_allclose(inner.actions[-1], [7.5, -3.0])


def test_obs_dict_and_reward_obs():
  inner = FakeEnv()
  inner.observation_space = gymnasium.spaces.Box(0, 1, (2,), np.float32)
  inner.reset = lambda: np.zeros(2)
  inner.step = lambda action: (np.ones(2), 0.5, False, {})
  env = wrappers.RewardObs(wrappers.ObsDict(inner, key='vec'))
  assert set(env.observation_space.spaces) == {'vec', 'reward'}
  obs = env.reset()
  assert obs['reward'] == 0.0 and np.array_equal(obs['vec'], [0, 0])
  obs, _, _, _ = env.step(None)
  assert obs['reward'] == 0.5 and np.array_equal(obs['vec'], [1, 1])


def test_wrappers_forward_attributes():
  env = wrappers.TimeLimit(wrappers.Collect(FakeEnv(length=7)), 10)
  assert env.length == 7


# Async.


def _proc_state(pid):
  """Returns the process state letter, or None if the process is gone."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0]
  except FileNotFoundError:
    return None


def _wait_exited(pid, timeout=10.0):
  # A zombie has exited; reaping an orphan is the job of the init process.
  deadline = time.time() + timeout
  while _proc_state(pid) not in (None, 'Z') and time.time() < deadline:
    time.sleep(0.05)
  return _proc_state(pid) in (None, 'Z')


def test_async_process_steps_dmc():
  ctor = functools.partial(wrappers.DeepMindControl, 'cartpole_balance', seed=0)
  env = wrappers.Async(ctor, 'process')
  try:
    pid = env._process.pid  # pylint: disable=protected-access
    assert env.action_space.shape == (1,)
    assert env.observation_space['image'].shape == (64, 64, 3)
    obs = env.reset()
    assert obs['image'].shape == (64, 64, 3)
    promise = env.step(np.zeros(1), blocking=False)
    obs, reward, done, info = promise()
    assert obs['image'].dtype == np.uint8 and not done
    assert np.isfinite(reward) and info['discount'] == 1.0
    assert env._camera == 0
    assert env.call('add_image', {})['image'].shape == (64, 64, 3)
    # Ctrl-C reaches the whole process group; the worker must ignore it.
    os.kill(pid, signal.SIGINT)
    time.sleep(0.2)
    assert env.step(np.zeros(1))[0]['image'].shape == (64, 64, 3)
  finally:
    env.close()
  assert not multiprocessing.active_children()
  assert _proc_state(pid) is None  # Joined, so not even a zombie.


def test_async_process_reraises_worker_exception():
  env = wrappers.Async(FailingStepEnv, 'process')
  try:
    env.reset()
    with pytest.raises(workers.WorkerError) as error:
      env.step(np.zeros(2))
    text = str(error.value)
    assert 'Traceback' in text and 'step failed on purpose' in text
    assert 'in step' in text  # The worker's frames are in the message.
    # As the original's, the worker ends after reporting an exception.
    with pytest.raises(workers.WorkerError, match='has exited'):
      env.reset()
  finally:
    env.close()
  assert not multiprocessing.active_children()


def test_async_process_constructor_failure():
  env = wrappers.Async(failing_ctor, 'process')
  try:
    with pytest.raises(workers.WorkerError, match='constructor failed'):
      env.reset()
  finally:
    env.close()
  assert not multiprocessing.active_children()


@pytest.mark.parametrize('strategy', ['none', 'thread'])
def test_async_in_process_strategies(strategy):
  env = wrappers.Async(functools.partial(FakeEnv, length=2), strategy)
  assert env.action_space.shape == (2,)
  assert env.reset()['state'].shape == (3,)
  promise = env.step(np.zeros(2), blocking=False)
  assert callable(promise)
  _, reward, done, _ = promise()
  assert reward == 0.5 and not done
  assert env.length == 2
  env.close()


def test_async_thread_reraises_exception():
  env = wrappers.Async(FailingStepEnv, 'thread')
  with pytest.raises(workers.WorkerError, match='step failed on purpose'):
    env.step(np.zeros(2))
  env.close()


def _set_child_subreaper(enable):
  """Adopts orphaned descendants so that the test can reap them (Linux)."""
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(36, int(enable), 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
  except (OSError, AttributeError):
    return False


def _reaped_within(pid, timeout):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if os.waitpid(pid, os.WNOHANG)[0] == pid:
      return True
    time.sleep(0.05)
  return False


def test_async_worker_dies_with_parent():
  # The parent is killed abruptly, so neither close() nor atexit handlers run;
  # the lambda ctor also exercises cloudpickle.
  code = """
  import os, signal, sys
  import numpy as np
  import wrappers

  class Env:
    observation_space = action_space = None
    def reset(self):
      return {'x': np.zeros(1)}

  env = wrappers.Async(lambda: Env(), 'process')
  env.reset()
  from multiprocessing import resource_tracker
  print(env._process.pid, resource_tracker._resource_tracker._pid, flush=True)
  os.kill(os.getpid(), signal.SIGKILL)
  """
  # Read only the first line: the worker inherits the output pipes, so
  # waiting for their end would wait for the worker itself.
  subreaper = _set_child_subreaper(True)
  try:
    process = _python(code)
    line = process.stdout.readline()
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert line.strip(), process.stderr.read()
    pid, tracker_pid = (int(x) for x in line.split())
    if subreaper:  # The orphan is now our child: reap it, leave no zombie.
      assert _reaped_within(pid, 10), f'worker {pid} outlived its parent'
      # Spawning also started multiprocessing's resource tracker, which ends
      # on its own once the parent is gone.
      assert _reaped_within(tracker_pid, 10)
    else:
      assert _wait_exited(pid), f'worker {pid} outlived its parent'
  finally:
    _set_child_subreaper(False)
    process.stdout.close()
    process.stderr.close()


# Gymnasium: --task gym_<Id>.


def make_gym(name, callbacks=(), time_limit=1000, action_repeat=2, seed=0):
  """Builds the gym stack of dreamer.py."""
  env = wrappers.Gymnasium(name, seed=seed)
  env = wrappers.ActionRepeat(env, action_repeat)
  if isinstance(env.action_space, gymnasium.spaces.Discrete):
    env = wrappers.OneHotAction(env)
  else:
    env = wrappers.NormalizeActions(env)
  env = wrappers.TimeLimit(env, time_limit / action_repeat)
  env = wrappers.Collect(env, list(callbacks), precision=32)
  env = wrappers.RewardObs(env)
  return env


def count_renders(stack):
  """Counts the calls of the Gymnasium environment's own render()."""
  inner = stack
  while not isinstance(inner, wrappers.Gymnasium):
    inner = inner._env
  calls = []
  render = inner._env.render
  inner._env.render = lambda: calls.append(1) or render()
  return calls


def play(env, steps, seed=0):
  """Random actions for `steps` agent steps, resetting after each episode."""
  space = env.action_space  # One object: NormalizeActions makes a new one.
  space.seed(seed)
  env.reset()
  for _ in range(steps):
    _, _, done, _ = env.step(space.sample())
    if done:
      env.reset()


class TestGymnasium:

  def test_mujoco_half_cheetah(self):
    episodes = []
    env = make_gym('HalfCheetah-v5', [episodes.append], time_limit=200)
    space = env.observation_space
    assert space['image'].shape == (64, 64, 3)
    assert space['state'].shape == (17,)  # The vector keeps its own key.
    assert np.all(env.action_space.low == -1)
    assert np.all(env.action_space.high == 1)
    renders = count_renders(env)
    play(env, 200)  # 400 frames: two episodes of --time_limit 200.
    assert len(episodes) == 2
    assert len(renders) == 200 + 3  # One per agent step and per reset.
    for episode in episodes:
      assert episode['image'].shape == (101, 64, 64, 3)
      assert episode['image'].dtype == np.uint8
      assert episode['state'].shape == (101, 17)
      assert episode['image'][-1].std() > 0  # A real render.
      assert episode['discount'][-1] == 1  # A time limit, not an end.
    env.close()

  def test_classic_control_cart_pole_onehot(self):
    episodes = []
    env = make_gym('CartPole-v1', [episodes.append], seed=1)
    assert isinstance(env.action_space, spaces.OneHotSpace)
    assert env.action_space.n == 2
    renders = count_renders(env)
    play(env, 200, seed=1)
    assert len(renders) == 200 + len(episodes) + 1
    assert len(episodes) > 3  # Random actions drop the pole soon.
    for episode in episodes:
      # Rendered at 400 x 600 by pygame, resized.
      assert episode['image'].shape[1:] == (64, 64, 3)
      assert episode['image'].dtype == np.uint8
      assert episode['state'].shape[1:] == (4,)
      assert set(episode['action'][1:].sum(-1)) == {1.0}  # One-hot.
      assert episode['discount'][-1] == 0  # Terminated: the pole fell.
      assert np.all(episode['discount'][:-1] == 1)
    env.close()

  def test_terminated_and_truncated_discounts(self):
    # The dot environment ends on success (terminated) or at its own
    # max_episode_steps of 100 frames (truncated).
    episodes = []
    env = make_gym('dot_env:Dot-v0', [episodes.append])
    play(env, 600)
    ends = {int(e['discount'][-1]): e for e in episodes}
    assert set(ends) == {0, 1}, [len(e['reward']) for e in episodes]
    assert ends[0]['reward'][-1] > 9  # Reached the target (+10).
    assert len(ends[1]['reward']) == 100 // 2 + 1  # Its own time limit.
    for episode in episodes:
      assert episode['image'].shape[1:] == (64, 64, 3)
      assert set(episode) == {
          'image', 'action', 'reward', 'discount'}  # No vector: an image.
      assert np.all(episode['discount'][:-1] == 1)
    env.close()

  @pytest.mark.parametrize('time_limit, length', [(1000, 50), (40, 20)])
  def test_smaller_time_limit_wins(self, time_limit, length):
    # Standing still never reaches the target: the dot environment's own
    # limit of 100 frames or --time_limit ends it, whichever is smaller.
    episodes = []
    env = make_gym('dot_env:Dot-v0', [episodes.append], time_limit, seed=2)
    env.reset()
    done, steps = False, 0
    while not done:
      _, _, done, _ = env.step(np.zeros(2, np.float32))
      steps += 1
    assert steps == length
    assert episodes[0]['discount'][-1] == 1
    env.close()

  def test_same_seed_same_episodes(self):
    def episodes(seed):
      result = []
      env = make_gym('dot_env:Dot-v0', [result.append], seed=seed)
      play(env, 150)
      env.close()
      return result
    first, second, other = episodes(4), episodes(4), episodes(5)
    assert len(first) >= 2
    for a, b in zip(first, second):
      assert set(a) == set(b)
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    # Seeded once: the second episode starts elsewhere than the first.
    assert not np.array_equal(first[0]['image'][0], first[1]['image'][0])
    assert not np.array_equal(first[0]['image'][0], other[0]['image'][0])

  def test_user_module_registers_in_a_worker_process(self):
    # The worker is spawned: its registry knows Dot-v0 only after the module
    # named in the task is imported there.
    env = wrappers.Async(
        functools.partial(make_gym, 'dot_env:Dot-v0'), 'process')
    try:
      obs = env.reset()
      assert obs['image'].shape == (64, 64, 3)
      obs, _, _, info = env.step(np.zeros(2, np.float32))
      assert obs['image'].dtype == np.uint8 and info['discount'] == 1
    finally:
      env.close()

  @pytest.mark.parametrize('name, message', [
      ('CartPol-v1', 'Close matches: gym_CartPole-v1'),
      ('no_such_module_xyz:Dot-v0',
       "Cannot import the module 'no_such_module_xyz'.*No module named"),
      ('Dot-v9', 'Unknown Gymnasium environment id'),
      ('a:', 'expected an id such as CartPole-v1'),
  ])
  def test_bad_names(self, name, message):
    with pytest.raises(ValueError, match=message):
      wrappers.Gymnasium(name)


@pytest.fixture(scope='module')
def gym_dot_run(tmp_path_factory):
  """A tiny run of dreamer.py on the dot environment, then evaluate.py and
  plotting.py --verify on it. Environments in worker processes, which import
  the user's module themselves."""
  root = tmp_path_factory.mktemp('gym')
  logdir = root / 'logs' / 'dot'
  tests = os.path.dirname(os.path.abspath(__file__))
  path = os.pathsep.join(filter(None, [tests, os.environ.get('PYTHONPATH')]))
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('PYTHONPATH', path)  # As a user makes a module importable.
    train = runs.run(
        '--preset', 'tiny', '--task', 'gym_dot_env:Dot-v0', '--steps', '2000',
        '--parallel', 'process', '--logdir', str(logdir))
    evaluate = runs.run(
        '--logdir', str(logdir), '--episodes', '1', script='evaluate.py')
  verify = runs.run(
      '--indir', str(root / 'logs'), '--outdir', str(root / 'plots'),
      '--verify', script='plotting.py')
  return dict(logdir=logdir, plots=root / 'plots', train=train,
              evaluate=evaluate, verify=verify)


class TestGymnasiumRun:

  def test_trains_and_evaluates(self, gym_dot_run):
    code, output = gym_dot_run['train']
    assert code == 0, output
    metrics = runs.read_metrics(gym_dot_run['logdir'])
    assert any('test/return' in line for line in metrics)
    assert any('model_loss' in line for line in metrics)  # It trained.
    code, output = gym_dot_run['evaluate']
    assert code == 0, output
    assert 'Mean return' in output

  def test_episodes_have_images_and_discounts(self, gym_dot_run):
    files = sorted((gym_dot_run['logdir'] / 'episodes').glob('*.npz'))
    assert files
    ends = set()
    for filename in files:
      with np.load(filename) as episode:
        assert episode['image'].shape[1:] == (64, 64, 3)
        assert episode['image'].dtype == np.uint8
        length, discount = len(episode['reward']), episode['discount']
        assert np.all(discount[:-1] == 1)
        # Dot-v0 truncates at 100 frames (51 transitions at action repeat 2);
        # every shorter episode reached the target: terminated.
        assert discount[-1] == (1 if length == 51 else 0), length
        ends.add(float(discount[-1]))
    assert ends == {0.0, 1.0}

  def test_verify_says_no_reference(self, gym_dot_run):
    code, output = gym_dot_run['verify']
    assert code == 3, output  # Nothing could be judged: no reference.
    report = json.loads((gym_dot_run['plots'] / 'verify.json').read_text())
    (task,) = report['tasks']
    assert task['task'] == 'gym_dot_env:Dot-v0'
    assert task['verdict'] == 'no reference'
    assert (gym_dot_run['plots'] / 'gym_dot_env:Dot-v0.png').exists()
