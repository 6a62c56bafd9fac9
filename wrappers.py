"""Environments and environment wrappers for Dreamer.

All classes follow the old gym-style interface: `reset() -> obs` and
`step(action) -> (obs, reward, done, info)`, with observations as dicts of
NumPy arrays and spaces from `gymnasium.spaces`. Wrappers forward unknown
attributes to the environment they wrap.

This module deliberately does not import TensorFlow, so that environment
worker processes stay light.
"""

import atexit
import ctypes
import functools
import multiprocessing
import os
import pickle
import signal
import sysconfig
import threading
import traceback

# Headless rendering by default. It must be set before dm_control is imported,
# because dm_control picks its OpenGL backend at import time.
os.environ.setdefault('MUJOCO_GL', 'egl')

import gymnasium
import numpy as np

try:
  import cloudpickle
except ImportError:  # Plain pickle handles module-level functions and partials.
  cloudpickle = None


_RENDERER_HELP = (
    'MuJoCo could not start its OpenGL renderer (MUJOCO_GL={backend!r}). '
    'Install the system libraries of a headless backend, on Debian/Ubuntu: '
    '`apt-get install libegl1 libgl1-mesa-dri` for MUJOCO_GL=egl or '
    '`apt-get install libosmesa6` for MUJOCO_GL=osmesa; or select another '
    'backend by setting MUJOCO_GL to one of egl, osmesa, glfw (glfw needs a '
    'display). Original error: {error_type}: {error}')


def renderer_error(error):
  """Returns a RuntimeError that explains how to fix a failed renderer."""
  message = _RENDERER_HELP.format(
      backend=os.environ.get('MUJOCO_GL', ''),
      error_type=type(error).__name__, error=error)
  return RuntimeError(message)


class _Forward:
  """Forwards unknown attributes to the wrapped environment in `self._env`."""

  def __getattr__(self, name):
    # Special names (looked up by copy and pickle) and `_env` itself, before
    # __init__ has set it, must fail normally instead of recursing.
    if name.startswith('__') or name == '_env':
      raise AttributeError(name)
    return getattr(self._env, name)


def _isolate_mesa_llvm():
  """Loads Mesa's software OpenGL driver so that it binds its own LLVM.

  Without a GPU, MUJOCO_GL=egl renders with Mesa's llvmpipe, which uses LLVM.
  TensorFlow exports the symbols of the LLVM copy it bundles, so once both are
  in one process, Mesa's calls resolve into TensorFlow's copy and crash (a
  segfault on the first render). Loading the driver with RTLD_DEEPBIND before
  the first render makes it prefer its own dependencies. TensorFlow has to be
  imported before the first render all the same: its static initializers crash
  on an LLVM that Mesa has already set up.
  """
  if os.environ.get('MUJOCO_GL') != 'egl' or not hasattr(os, 'RTLD_DEEPBIND'):
    return
  multiarch = sysconfig.get_config_var('MULTIARCH') or ''
  directories = os.environ.get('LIBGL_DRIVERS_PATH', '').split(':') + [
      f'/usr/lib/{multiarch}/dri', '/usr/lib64/dri', '/usr/lib/dri']
  for directory in filter(None, directories):
    path = os.path.join(directory, 'swrast_dri.so')
    if os.path.exists(path):
      try:
        ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_DEEPBIND)
      except OSError:
        pass  # The first render reports a broken renderer more clearly.
      return


def _import_suite():
  """Imports dm_control.suite, explaining renderer failures."""
  _isolate_mesa_llvm()
  try:
    # dm_control loads the OpenGL backend named by MUJOCO_GL in this import,
    # so a missing system library surfaces here as an obscure traceback.
    import dm_control._render  # pylint: disable=unused-import,import-outside-toplevel
  except Exception as e:
    raise renderer_error(e) from e
  from dm_control import suite  # pylint: disable=import-outside-toplevel
  return suite


class DeepMindControl(_Forward):
  """A DeepMind Control Suite task with rendered image observations.

  Besides `step()`, the class offers `step_unrendered()` and `add_image()` so
  that ActionRepeat can render once per agent step instead of after every
  physics step; rendering dominates the collection time on a CPU.
  """

  def __init__(self, name, size=(64, 64), camera=None, seed=None):
    suite = _import_suite()
    domain, task = self._parse_name(name, suite.ALL_TASKS)
    self._env = suite.load(domain, task, task_kwargs={'random': seed})
    self._size = tuple(size)
    if camera is None:
      camera = dict(quadruped=2).get(domain, 0)
    self._camera = camera
    self._rendered = False

  @staticmethod
  def _parse_name(name, all_tasks):
    domain, _, task = name.partition('_')
    if domain == 'cup':  # The only domain whose name has several words.
      domain = 'ball_in_cup'
    if (domain, task) not in all_tasks:
      valid = sorted(
          f"{'cup' if d == 'ball_in_cup' else d}_{t}" for d, t in all_tasks)
      raise ValueError(
          f'Unknown DeepMind Control task {name!r}; valid tasks are: '
          + ', '.join(valid))
    return domain, task

  @property
  def observation_space(self):
    spaces = {}
    for key, value in self._env.observation_spec().items():
      spaces[key] = gymnasium.spaces.Box(
          -np.inf, np.inf, value.shape, dtype=np.float32)
    spaces['image'] = gymnasium.spaces.Box(
        0, 255, self._size + (3,), dtype=np.uint8)
    return gymnasium.spaces.Dict(spaces)

  @property
  def action_space(self):
    spec = self._env.action_spec()
    low = np.broadcast_to(spec.minimum, spec.shape).astype(np.float32)
    high = np.broadcast_to(spec.maximum, spec.shape).astype(np.float32)
    return gymnasium.spaces.Box(low, high, dtype=np.float32)

  def step(self, action):
    obs, reward, done, info = self.step_unrendered(action)
    return self.add_image(obs), reward, done, info

  def step_unrendered(self, action):
    """Steps the physics; the observation lacks `image` (see add_image)."""
    time_step = self._env.step(action)
    obs = {k: np.asarray(v) for k, v in time_step.observation.items()}
    reward = time_step.reward or 0.0
    done = time_step.last()
    info = {'discount': np.array(time_step.discount, np.float32)}
    return obs, reward, done, info

  def add_image(self, obs):
    """Adds the render of the current physics state to an observation."""
    return dict(obs, image=self.render())

  def reset(self):
    time_step = self._env.reset()
    obs = {k: np.asarray(v) for k, v in time_step.observation.items()}
    return self.add_image(obs)

  def render(self, *args, **kwargs):
    if kwargs.get('mode', 'rgb_array') != 'rgb_array':
      raise ValueError("Only render mode 'rgb_array' is supported.")
    try:
      image = self._env.physics.render(*self._size, camera_id=self._camera)
    except Exception as e:
      if self._rendered:
        raise
      # The OpenGL context is created on the first render, which is where a
      # missing or broken backend fails.
      raise renderer_error(e) from e
    self._rendered = True
    return image


class Atari(_Forward):
  """An Atari game of the Arcade Learning Environment, via gymnasium."""

  # Serializes construction for environments created from several threads;
  # ROM loading in the emulator is not documented to be thread-safe.
  LOCK = threading.Lock()

  def __init__(
      self, name, action_repeat=4, size=(84, 84), grayscale=True, noops=30,
      life_done=False, sticky_actions=True, all_actions=False, seed=None):
    import ale_py  # pylint: disable=import-outside-toplevel
    gymnasium.register_envs(ale_py)
    env_id = self._env_id(name, ale_py.roms.get_all_rom_ids())
    with self.LOCK:
      self._env = gymnasium.make(
          env_id, frameskip=1,
          repeat_action_probability=0.25 if sticky_actions else 0.0,
          full_action_space=all_actions,
          obs_type='grayscale' if grayscale else 'rgb')
    self._action_repeat = action_repeat
    self._size = tuple(size)
    self._grayscale = grayscale
    self._noops = noops
    self._life_done = life_done
    self._seed = seed
    self._seeded = False
    self._lives = None
    # The two latest frames; observations are their maximum because some
    # games draw sprites only on every other frame.
    self._frames = None

  @staticmethod
  def _env_id(name, rom_ids):
    camel = ''.join(word.title() for word in name.split('_'))
    env_id = f'ALE/{camel}-v5'
    if env_id not in gymnasium.registry:
      valid = sorted(
          rom for rom in rom_ids
          if f"ALE/{''.join(w.title() for w in rom.split('_'))}-v5"
          in gymnasium.registry)
      raise ValueError(
          f'Unknown Atari game {name!r}. Games are named in snake case, as '
          'ale_py.roms.get_all_rom_ids() lists them; valid names are: '
          + ', '.join(valid))
    return env_id

  @property
  def observation_space(self):
    shape = self._size + (1 if self._grayscale else 3,)
    space = gymnasium.spaces.Box(0, 255, shape, dtype=np.uint8)
    return gymnasium.spaces.Dict({'image': space})

  @property
  def action_space(self):
    return self._env.action_space

  def close(self):
    return self._env.close()

  def reset(self):
    frame = self._reset_game()
    # No-op starts vary the initial state. As in the original, at least one
    # no-op: the count is uniform in [1, noops], drawn from the emulator's
    # generator, which `seed` seeds.
    rng = self._env.unwrapped.np_random
    for _ in range(rng.integers(1, self._noops + 1) if self._noops else 0):
      frame, _, terminated, truncated, _ = self._env.step(0)
      if terminated or truncated:
        frame = self._reset_game()
    self._lives = self._env.unwrapped.ale.lives()
    self._frames = [frame, frame]
    return self._observation()

  def _reset_game(self):
    if self._seeded:
      frame, _ = self._env.reset()
    else:
      frame, _ = self._env.reset(seed=self._seed)
      self._seeded = True
    return frame

  def step(self, action):
    total_reward = 0.0
    done = False
    for _ in range(self._action_repeat):
      frame, reward, terminated, truncated, _ = self._env.step(action)
      self._frames = [self._frames[1], frame]
      total_reward += reward
      done = terminated or truncated or self._lost_life()
      if done:
        break
    return self._observation(), total_reward, done, {}

  def _lost_life(self):
    if not self._life_done:
      return False
    lives = self._env.unwrapped.ale.lives()
    lost = lives < self._lives
    self._lives = lives
    return lost

  def _observation(self):
    # Deferred to the end of the agent step: the maximum and the resize are
    # only needed for the frame the agent sees.
    image = np.maximum(*self._frames)
    image = _resize_bilinear(image, self._size)
    if self._grayscale:
      image = image[..., None]
    return {'image': image}


def _resize_bilinear(image, size):
  """Resizes a uint8 image to (height, width) with bilinear interpolation."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  height, width = size
  resized = Image.fromarray(image).resize((width, height), Image.BILINEAR)
  return np.array(resized)  # A writable copy; asarray would be read-only.


class Collect(_Forward):
  """Records transitions and hands each finished episode to callbacks."""

  def __init__(self, env, callbacks=None, precision=32):
    self._env = env
    self._callbacks = callbacks or ()
    self._float = np.float16 if precision == 16 else np.float32
    self._episode = None

  def step(self, action):
    obs, reward, done, info = self._env.step(action)
    transition = self._convert_all(obs)
    transition['action'] = self._convert(action)
    transition['reward'] = np.array(reward, self._float)
    # Environments without a discount (Atari) end only by termination.
    discount = info.get('discount', np.array(1 - float(done)))
    transition['discount'] = np.array(discount, self._float)
    self._episode.append(transition)
    if done:
      episode = {
          key: np.array([t[key] for t in self._episode])
          for key in self._episode[0]}
      info['episode'] = episode
      for callback in self._callbacks:
        callback(episode)
    return obs, reward, done, info

  def reset(self):
    obs = self._env.reset()
    transition = self._convert_all(obs)
    transition['action'] = self._convert(
        np.zeros(self._env.action_space.shape))
    transition['reward'] = np.array(0.0, self._float)
    transition['discount'] = np.array(1.0, self._float)
    self._episode = [transition]
    return obs

  def _convert_all(self, obs):
    return {key: self._convert(value) for key, value in obs.items()}

  def _convert(self, value):
    # np.array copies, so later changes by the caller do not leak in.
    value = np.array(value)
    if np.issubdtype(value.dtype, np.floating):
      value = value.astype(self._float)
    return value


class TimeLimit(_Forward):
  """Ends the episode after `duration` steps, with discount 1 if unset."""

  def __init__(self, env, duration):
    self._env = env
    self._duration = duration
    self._step = None

  def step(self, action):
    if self._step is None:
      raise RuntimeError('Must reset the environment before stepping it.')
    obs, reward, done, info = self._env.step(action)
    self._step += 1
    if self._step >= self._duration:
      done = True
      # A timeout is no termination: the value beyond it still counts.
      if 'discount' not in info:
        info['discount'] = np.array(1.0, np.float32)
      self._step = None
    return obs, reward, done, info

  def reset(self):
    self._step = 0
    return self._env.reset()


class ActionRepeat(_Forward):
  """Repeats each action `amount` times, summing rewards, until done.

  If the wrapped environment itself defines `step_unrendered()` and
  `add_image()` (DeepMindControl does), only the state after the last executed
  repeat is rendered. The image is the same as when rendering after every
  step, because rendering reads the physics state without changing it. The
  methods are looked up on the class rather than through attribute forwarding,
  so that a wrapper in between, which might transform actions, is never
  bypassed.
  """

  def __init__(self, env, amount):
    self._env = env
    self._amount = amount
    self._render_once = all(
        callable(getattr(type(env), name, None))
        for name in ('step_unrendered', 'add_image'))

  def step(self, action):
    if not self._render_once:
      return self._repeat(self._env.step, action)
    obs, reward, done, info = self._repeat(self._env.step_unrendered, action)
    return self._env.add_image(obs), reward, done, info

  def _repeat(self, step_fn, action):
    total_reward = 0.0
    for _ in range(self._amount):
      obs, reward, done, info = step_fn(action)
      total_reward += reward
      if done:
        break
    return obs, total_reward, done, info

  def reset(self):
    return self._env.reset()


class NormalizeActions(_Forward):
  """Maps the finite dimensions of a Box action space to [-1, 1]."""

  def __init__(self, env):
    self._env = env
    space = env.action_space
    self._mask = np.logical_and(np.isfinite(space.low), np.isfinite(space.high))
    self._low = np.where(self._mask, space.low, -1)
    self._high = np.where(self._mask, space.high, 1)

  @property
  def action_space(self):
    space = self._env.action_space
    low = np.where(self._mask, -1.0, space.low).astype(np.float32)
    high = np.where(self._mask, 1.0, space.high).astype(np.float32)
    return gymnasium.spaces.Box(low, high, dtype=np.float32)

  def step(self, action):
    original = (action + 1) / 2 * (self._high - self._low) + self._low
    original = np.where(self._mask, original, action)
    return self._env.step(original)

  def reset(self):
    return self._env.reset()


class ObsDict(_Forward):
  """Wraps a non-dict observation into a dict under `key`."""

  def __init__(self, env, key='obs'):
    self._env = env
    self._key = key

  @property
  def observation_space(self):
    return gymnasium.spaces.Dict({self._key: self._env.observation_space})

  @property
  def action_space(self):
    return self._env.action_space

  def step(self, action):
    obs, reward, done, info = self._env.step(action)
    return {self._key: np.array(obs)}, reward, done, info

  def reset(self):
    return {self._key: np.array(self._env.reset())}


class OneHotSpace(gymnasium.spaces.Box):
  """Box of one-hot vectors for `n` discrete actions; samples are one-hot."""

  def __init__(self, n, seed=None):
    super().__init__(0, 1, (n,), dtype=np.float32, seed=seed)
    self.n = n

  def sample(self, mask=None, probability=None):
    del mask, probability  # Part of the gymnasium signature; unsupported.
    action = np.zeros(self.n, np.float32)
    action[self.np_random.integers(self.n)] = 1.0
    return action

  def contains(self, x):
    return _one_hot_index(x, self.n) is not None

  def __repr__(self):
    return f'OneHotSpace({self.n})'


def _one_hot_index(action, n):
  """Returns the index of an exact one-hot vector of length n, else None."""
  action = np.asarray(action)
  if action.shape != (n,) or not np.issubdtype(action.dtype, np.number):
    return None
  ones = action == 1
  if ones.sum() != 1 or np.count_nonzero(action) != 1:
    return None
  return int(np.argmax(ones))


class OneHotAction(_Forward):
  """Turns a discrete action space into one-hot vector actions."""

  def __init__(self, env):
    self._env = env
    self._space = OneHotSpace(env.action_space.n)

  @property
  def action_space(self):
    return self._space

  def step(self, action):
    index = _one_hot_index(action, self._space.n)
    if index is None:
      raise ValueError(
          f'Invalid one-hot action (expected exactly one 1 and zeros '
          f'elsewhere, shape ({self._space.n},)): {np.asarray(action)!r}')
    return self._env.step(index)

  def reset(self):
    return self._env.reset()


class RewardObs(_Forward):
  """Adds the last reward to the observation dict under `reward`."""

  def __init__(self, env):
    self._env = env

  @property
  def observation_space(self):
    spaces = dict(self._env.observation_space.spaces)
    if 'reward' in spaces:
      raise ValueError('The observation already has a reward entry.')
    spaces['reward'] = gymnasium.spaces.Box(
        -np.inf, np.inf, (), dtype=np.float32)
    return gymnasium.spaces.Dict(spaces)

  def step(self, action):
    obs, reward, done, info = self._env.step(action)
    return dict(obs, reward=reward), reward, done, info

  def reset(self):
    return dict(self._env.reset(), reward=0.0)


class WorkerError(RuntimeError):
  """An exception raised inside an Async worker; carries its traceback."""


class Async:
  """Runs an environment in this process, a thread, or a worker process.

  `step()` and `reset()` return the result, or with `blocking=False` a promise:
  a callable returning it. Promises must be resolved in the order they were
  made, because requests and results share one pipe.
  """

  # Message kinds on the pipe.
  _ACCESS = 1
  _CALL = 2
  _RESULT = 3
  _EXCEPTION = 4
  _CLOSE = 5

  def __init__(self, ctor, strategy='process'):
    self._strategy = strategy
    self._env = None
    self._conn = None
    self._worker = None
    self._obs_space = None
    self._action_space = None
    if strategy == 'none':
      self._env = ctor()
    elif strategy == 'thread':
      self._conn, worker_conn = multiprocessing.Pipe()
      self._worker = threading.Thread(
          target=_worker, args=(worker_conn, ctor, None), daemon=True)
      self._worker.start()
    elif strategy == 'process':
      self._start_process(ctor)
    else:
      raise NotImplementedError(f'Unknown Async strategy: {strategy!r}')

  def _start_process(self, ctor):
    # Spawn rather than fork: the parent usually runs TensorFlow threads,
    # whose locks a forked child would inherit in an arbitrary state.
    context = multiprocessing.get_context('spawn')
    self._conn, worker_conn = context.Pipe()
    # The ctor is usually a lambda or closure, which only cloudpickle handles.
    payload = (cloudpickle or pickle).dumps(ctor)
    self._worker = context.Process(
        target=_worker, args=(worker_conn, payload, os.getpid()), daemon=True)
    self._worker.start()
    # Only the worker may hold its end, so that it sees EOF once we are gone.
    worker_conn.close()
    # Close cleanly before multiprocessing's exit handler, registered
    # earlier and so run later, terminates the daemon.
    atexit.register(self.close)

  @property
  def observation_space(self):
    if self._obs_space is None:
      self._obs_space = self.access('observation_space')()
    return self._obs_space

  @property
  def action_space(self):
    if self._action_space is None:
      self._action_space = self.access('action_space')()
    return self._action_space

  def access(self, name):
    """Returns a promise for an attribute of the environment."""
    if self._env is not None:
      return functools.partial(getattr, self._env, name)
    self._send(self._ACCESS, name)
    return self._receive

  def call(self, name, *args, **kwargs):
    """Calls a method of the environment and returns a promise."""
    if self._env is not None:
      result = getattr(self._env, name)(*args, **kwargs)
      return lambda: result
    self._send(self._CALL, (name, args, kwargs))
    return self._receive

  def step(self, action, blocking=True):
    promise = self.call('step', action)
    return promise() if blocking else promise

  def reset(self, blocking=True):
    promise = self.call('reset')
    return promise() if blocking else promise

  def close(self):
    """Closes the environment and ends the worker."""
    if self._env is not None:
      if hasattr(self._env, 'close'):
        self._env.close()
      self._env = None
      return
    if self._worker is None:
      return
    atexit.unregister(self.close)
    try:
      self._conn.send((self._CLOSE, None))
    except (OSError, ValueError):
      pass  # The worker is already gone.
    self._worker.join(5)
    if isinstance(self._worker, multiprocessing.process.BaseProcess):
      if self._worker.is_alive():
        self._worker.terminate()
        self._worker.join(5)
      self._worker.close()
    self._conn.close()
    self._worker = None

  def _send(self, kind, payload):
    if self._worker is None:
      raise RuntimeError('The environment has been closed.')
    try:
      self._conn.send((kind, payload))
    except (BrokenPipeError, ConnectionResetError) as e:
      raise WorkerError(self._dead_worker_message()) from e

  def _receive(self):
    # Poll so that a worker that died without answering (e.g. a segfault in
    # the simulator) raises instead of hanging this process forever.
    while not self._conn.poll(0.1):
      if not self._worker.is_alive():
        raise WorkerError(self._dead_worker_message())
    try:
      kind, payload = self._conn.recv()
    except EOFError as e:
      raise WorkerError(self._dead_worker_message()) from e
    if kind == self._EXCEPTION:
      raise WorkerError(f'Exception in environment worker:\n{payload}')
    if kind == self._RESULT:
      return payload
    raise KeyError(f'Unknown message kind from worker: {kind}')

  def _dead_worker_message(self):
    code = getattr(self._worker, 'exitcode', None)
    return f'The environment worker has exited (exit code {code}).'


def _worker(conn, ctor, parent_pid):
  """Serves requests for one environment until told to close.

  Args:
    conn: Worker end of the pipe.
    ctor: Environment constructor, or its pickle when in a separate process.
    parent_pid: Process id of the parent, None when running in a thread.
  """
  if parent_pid is not None:
    # Ctrl-C in a terminal signals the whole process group; the parent
    # handles it and closes the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
  env, error = None, None
  try:
    if isinstance(ctor, bytes):
      ctor = pickle.loads(ctor)
    env = ctor()
  except Exception:  # pylint: disable=broad-except
    # Reported in answer to every request rather than ending the worker, so
    # that the parent sees the cause instead of a broken pipe.
    error = traceback.format_exc()
  try:
    _serve(conn, env, error, parent_pid)
  finally:
    if env is not None and hasattr(env, 'close'):
      try:
        env.close()
      except Exception:  # pylint: disable=broad-except
        pass
    conn.close()


def _serve(conn, env, error, parent_pid):
  while True:
    message = _next_message(conn, parent_pid)
    if message is None or message[0] == Async._CLOSE:
      return
    kind, payload = message
    if error is not None:
      conn.send((Async._EXCEPTION, error))
      continue
    try:
      if kind == Async._ACCESS:
        result = getattr(env, payload)
      elif kind == Async._CALL:
        name, args, kwargs = payload
        result = getattr(env, name)(*args, **kwargs)
      else:
        raise KeyError(f'Unknown message kind: {kind}')
      conn.send((Async._RESULT, result))
    except Exception:  # pylint: disable=broad-except
      conn.send((Async._EXCEPTION, traceback.format_exc()))


def _next_message(conn, parent_pid):
  """Waits for a request; None once the parent is gone."""
  try:
    while not conn.poll(0.5):
      # The pipe reports EOF when the parent dies, unless a grandchild kept a
      # copy of its end; the parent id check covers that case.
      if parent_pid is not None and os.getppid() != parent_pid:
        return None
    return conn.recv()
  except (EOFError, OSError):
    return None


__all__ = [
    'DeepMindControl', 'Atari', 'Collect', 'TimeLimit', 'ActionRepeat',
    'NormalizeActions', 'ObsDict', 'OneHotAction', 'OneHotSpace', 'RewardObs',
    'Async', 'WorkerError', 'renderer_error']
