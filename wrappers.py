import sys
import threading
import traceback

import gymnasium as gym
import numpy as np
from PIL import Image

from support import gymtask, renderer, spaces, workers


class DeepMindControl:

  def __init__(self, name, size=(64, 64), camera=None, seed=None):
    domain, task = name.split('_', 1)
    if domain == 'cup':  # Only domain with multiple words.
      domain = 'ball_in_cup'
    if isinstance(domain, str):
      suite = renderer.import_suite()
      self._env = suite.load(domain, task, task_kwargs={'random': seed})
    else:
      assert task is None
      self._env = domain()
    self._size = size
    if camera is None:
      camera = dict(quadruped=2).get(domain, 0)
    self._camera = camera

  def __getattr__(self, name):
    return getattr(self._env, name)

  @property
  def observation_space(self):
    spaces = {}
    for key, value in self._env.observation_spec().items():
      spaces[key] = gym.spaces.Box(
          -np.inf, np.inf, value.shape, dtype=np.float32)
    spaces['image'] = gym.spaces.Box(
        0, 255, self._size + (3,), dtype=np.uint8)
    return gym.spaces.Dict(spaces)

  @property
  def action_space(self):
    spec = self._env.action_spec()
    low = np.broadcast_to(spec.minimum, spec.shape).astype(np.float32)
    high = np.broadcast_to(spec.maximum, spec.shape).astype(np.float32)
    return gym.spaces.Box(low, high, dtype=np.float32)

  def step(self, action):
    obs, reward, done, info = self.step_unrendered(action)
    return self.add_image(obs), reward, done, info

  def reset(self):
    time_step = self._env.reset()
    obs = {k: np.asarray(v) for k, v in time_step.observation.items()}
    return self.add_image(obs)

  def render(self, *args, **kwargs):
    if kwargs.get('mode', 'rgb_array') != 'rgb_array':
      raise ValueError("Only render mode 'rgb_array' is supported.")
    return renderer.render(
        self._env.physics, *self._size, camera_id=self._camera)

  def step_unrendered(self, action):
    # Without the image: ActionRepeat renders only the frame the agent sees,
    # since rendering dominates the collection time on a CPU.
    time_step = self._env.step(action)
    obs = {k: np.asarray(v) for k, v in time_step.observation.items()}
    reward = time_step.reward or 0.0
    done = time_step.last()
    info = {'discount': np.array(time_step.discount, np.float32)}
    return obs, reward, done, info

  def add_image(self, obs):
    return dict(obs, image=self.render())


class Atari:

  LOCK = threading.Lock()

  def __init__(
      self, name, action_repeat=4, size=(84, 84), grayscale=True, noops=30,
      life_done=False, sticky_actions=True, seed=None):
    import ale_py
    gym.register_envs(ale_py)
    name = ''.join(word.title() for word in name.split('_'))
    with self.LOCK:
      # ALE v5 with frameskip 1 and the original's sticky actions: gym's
      # NoFrameskip ids are gone; this class repeats the actions itself.
      self._env = gym.make(
          f'ALE/{name}-v5', frameskip=1, full_action_space=False,
          repeat_action_probability=0.25 if sticky_actions else 0.0,
          obs_type='grayscale' if grayscale else 'rgb')
    self._action_repeat = action_repeat
    self._size = size
    self._grayscale = grayscale
    self._noops = noops
    self._life_done = life_done
    self._lives = None
    shape = self._env.observation_space.shape[:2] + (() if grayscale else (3,))
    self._buffers = [np.empty(shape, dtype=np.uint8) for _ in range(2)]
    self._random = np.random.RandomState(seed=seed)
    self._seed = seed  # The emulator's, at its first reset.

  def __getattr__(self, name):
    return getattr(self._env, name)

  @property
  def observation_space(self):
    shape = self._size + (1 if self._grayscale else 3,)
    space = gym.spaces.Box(low=0, high=255, shape=shape, dtype=np.uint8)
    return gym.spaces.Dict({'image': space})

  @property
  def action_space(self):
    return self._env.action_space

  def close(self):
    return self._env.close()

  def reset(self):
    with self.LOCK:
      self._buffers[0][:] = self._env.reset(seed=self._seed)[0]
      self._seed = None
    noops = self._random.randint(1, self._noops + 1) if self._noops else 0
    for _ in range(noops):
      frame, _, terminated, truncated, _ = self._env.step(0)
      self._buffers[0][:] = frame
      if terminated or truncated:
        with self.LOCK:
          self._buffers[0][:] = self._env.reset()[0]
    self._lives = self._env.unwrapped.ale.lives()
    self._buffers[1].fill(0)
    return self._get_obs()

  def step(self, action):
    total_reward = 0.0
    for step in range(self._action_repeat):
      frame, reward, terminated, truncated, info = self._env.step(action)
      done = terminated or truncated
      total_reward += reward
      if self._life_done:
        lives = self._env.unwrapped.ale.lives()
        done = done or lives < self._lives
        self._lives = lives
      if done:
        break
      elif step >= self._action_repeat - 2:
        index = step - max(self._action_repeat - 2, 0)  # 0 if repeat is 1.
        self._buffers[index][:] = frame
    obs = self._get_obs()
    return obs, total_reward, done, info

  def render(self, mode='rgb_array'):
    return self._env.unwrapped.ale.getScreenRGB()

  def _get_obs(self):
    if self._action_repeat > 1:
      np.maximum(self._buffers[0], self._buffers[1], out=self._buffers[0])
    image = np.array(Image.fromarray(self._buffers[0]).resize(
        self._size, Image.BILINEAR))
    image = np.clip(image, 0, 255).astype(np.uint8)
    image = image[:, :, None] if self._grayscale else image
    return {'image': image}


class Collect:

  def __init__(self, env, callbacks=None, precision=32):
    self._env = env
    self._callbacks = callbacks or ()
    self._float = np.float16 if precision == 16 else np.float32
    self._episode = None

  def __getattr__(self, name):
    return getattr(self._env, name)

  def step(self, action):
    obs, reward, done, info = self._env.step(action)
    transition = {k: self._convert(v) for k, v in obs.items()}
    transition['action'] = self._convert(action)
    transition['reward'] = self._convert(float(reward))
    # Environments without a discount (Atari) end only by termination.
    transition['discount'] = self._convert(
        info.get('discount', np.array(1 - float(done))))
    self._episode.append(transition)
    if done:
      episode = {k: [t[k] for t in self._episode] for k in self._episode[0]}
      episode = {k: np.array(v) for k, v in episode.items()}
      info['episode'] = episode
      for callback in self._callbacks:
        callback(episode)
    return obs, reward, done, info

  def reset(self):
    obs = self._env.reset()
    transition = {k: self._convert(v) for k, v in obs.items()}
    transition['action'] = self._convert(
        np.zeros(self._env.action_space.shape))
    transition['reward'] = self._convert(0.0)
    transition['discount'] = self._convert(1.0)
    self._episode = [transition]
    return obs

  def _convert(self, value):
    # A copy, so that later changes by the caller do not leak in. Floats take
    # the precision; integers and bytes keep their type.
    value = np.array(value)
    if np.issubdtype(value.dtype, np.floating):
      value = value.astype(self._float)
    return value


class TimeLimit:

  def __init__(self, env, duration):
    self._env = env
    self._duration = duration
    self._step = None

  def __getattr__(self, name):
    return getattr(self._env, name)

  def step(self, action):
    assert self._step is not None, 'Must reset environment.'
    obs, reward, done, info = self._env.step(action)
    self._step += 1
    if self._step >= self._duration:
      done = True
      if 'discount' not in info:
        info['discount'] = np.array(1.0).astype(np.float32)
      self._step = None
    return obs, reward, done, info

  def reset(self):
    self._step = 0
    return self._env.reset()


class ActionRepeat:

  def __init__(self, env, amount):
    self._env = env
    self._amount = amount
    # An environment that can step without rendering (DeepMindControl) renders
    # only after the last repeat: the same image, since rendering reads the
    # physics without changing it. Looked up on the class, not forwarded, so
    # that no action-transforming wrapper in between is bypassed.
    self._render_once = all(
        callable(getattr(type(env), name, None))
        for name in ('step_unrendered', 'add_image'))

  def __getattr__(self, name):
    return getattr(self._env, name)

  def step(self, action):
    step = self._env.step_unrendered if self._render_once else self._env.step
    done = False
    total_reward = 0
    current_step = 0
    while current_step < self._amount and not done:
      obs, reward, done, info = step(action)
      total_reward += reward
      current_step += 1
    if self._render_once:
      obs = self._env.add_image(obs)
    return obs, total_reward, done, info


class NormalizeActions:

  def __init__(self, env):
    self._env = env
    self._mask = np.logical_and(
        np.isfinite(env.action_space.low),
        np.isfinite(env.action_space.high))
    self._low = np.where(self._mask, env.action_space.low, -1)
    self._high = np.where(self._mask, env.action_space.high, 1)

  def __getattr__(self, name):
    return getattr(self._env, name)

  @property
  def action_space(self):
    low = np.where(self._mask, -np.ones_like(self._low), self._low)
    high = np.where(self._mask, np.ones_like(self._low), self._high)
    return gym.spaces.Box(low, high, dtype=np.float32)

  def step(self, action):
    original = (action + 1) / 2 * (self._high - self._low) + self._low
    original = np.where(self._mask, original, action)
    return self._env.step(original)


class ObsDict:

  def __init__(self, env, key='obs'):
    self._env = env
    self._key = key

  def __getattr__(self, name):
    return getattr(self._env, name)

  @property
  def observation_space(self):
    spaces = {self._key: self._env.observation_space}
    return gym.spaces.Dict(spaces)

  @property
  def action_space(self):
    return self._env.action_space

  def step(self, action):
    obs, reward, done, info = self._env.step(action)
    obs = {self._key: np.array(obs)}
    return obs, reward, done, info

  def reset(self):
    obs = self._env.reset()
    obs = {self._key: np.array(obs)}
    return obs


class OneHotAction:

  def __init__(self, env):
    assert isinstance(env.action_space, gym.spaces.Discrete)
    self._env = env
    # One space for the wrapper's life: picklable to and from workers, and
    # seeding it seeds the sampling (support/spaces.py).
    self._space = spaces.OneHotSpace(env.action_space.n, self._sample_action)

  def __getattr__(self, name):
    return getattr(self._env, name)

  @property
  def action_space(self):
    return self._space

  def step(self, action):
    index = np.argmax(action).astype(int)
    reference = np.zeros_like(action)
    reference[index] = 1
    if not np.allclose(reference, action):
      raise ValueError(f'Invalid one-hot action:\n{action}')
    return self._env.step(index)

  def reset(self):
    return self._env.reset()

  @staticmethod
  def _sample_action(actions, random):
    index = random.integers(0, actions)
    reference = np.zeros(actions, dtype=np.float32)
    reference[index] = 1.0
    return reference


class RewardObs:

  def __init__(self, env):
    self._env = env

  def __getattr__(self, name):
    return getattr(self._env, name)

  @property
  def observation_space(self):
    spaces = self._env.observation_space.spaces
    assert 'reward' not in spaces
    spaces['reward'] = gym.spaces.Box(-np.inf, np.inf, dtype=np.float32)
    return gym.spaces.Dict(spaces)

  def step(self, action):
    obs, reward, done, info = self._env.step(action)
    obs['reward'] = reward
    return obs, reward, done, info

  def reset(self):
    obs = self._env.reset()
    obs['reward'] = 0.0
    return obs


class Async:

  _ACCESS = 1
  _CALL = 2
  _RESULT = 3
  _EXCEPTION = 4
  _CLOSE = 5

  def __init__(self, ctor, strategy='process'):
    self._strategy = strategy
    self._process = None
    if strategy == 'none':
      self._env = ctor()
    elif strategy not in ('thread', 'process'):
      raise NotImplementedError(f'Unknown Async strategy: {strategy!r}')
    if strategy != 'none':
      self._conn, self._process = workers.start(
          Async._worker, ctor, strategy, self.close)
    self._obs_space = None
    self._action_space = None

  @property
  def observation_space(self):
    if not self._obs_space:
      self._obs_space = self.__getattr__('observation_space')
    return self._obs_space

  @property
  def action_space(self):
    if not self._action_space:
      self._action_space = self.__getattr__('action_space')
    return self._action_space

  def __getattr__(self, name):
    if name.startswith('__') or name in ('_strategy', '_env', '_conn'):
      raise AttributeError(name)  # Not set up (yet): no recursion.
    if self._strategy == 'none':
      return getattr(self._env, name)
    workers.send(self._conn, self._process, (self._ACCESS, name))
    return self._receive()

  def call(self, name, *args, **kwargs):
    blocking = kwargs.pop('blocking', True)
    if self._strategy == 'none':
      result = getattr(self._env, name)(*args, **kwargs)
      return result if blocking else lambda: result
    payload = name, args, kwargs
    workers.send(self._conn, self._process, (self._CALL, payload))
    promise = self._receive
    return promise() if blocking else promise

  def close(self):
    if self._strategy == 'none':
      try:
        self._env.close()
      except AttributeError:
        pass
      return
    if self._process is None:
      return
    workers.stop(self._conn, self._process, self.close, (self._CLOSE, None))
    self._process = None

  def step(self, action, blocking=True):
    return self.call('step', action, blocking=blocking)

  def reset(self, blocking=True):
    return self.call('reset', blocking=blocking)

  def _receive(self):
    message, payload = workers.receive(self._conn, self._process)
    # Re-raise exceptions in the main process.
    if message == self._EXCEPTION:
      stacktrace = payload
      raise workers.WorkerError(stacktrace)
    if message == self._RESULT:
      return payload
    raise KeyError(f'Received message of unexpected type {message}')

  @staticmethod
  def _worker(ctor, conn, parent_pid=None):
    # Static: a spawned worker cannot receive the Async instance.
    env = None
    try:
      env = workers.construct(ctor, parent_pid)
      while True:
        message, payload = workers.next_message(conn, parent_pid)
        if message == Async._ACCESS:
          name = payload
          result = getattr(env, name)
          conn.send((Async._RESULT, result))
          continue
        if message == Async._CALL:
          name, args, kwargs = payload
          result = getattr(env, name)(*args, **kwargs)
          conn.send((Async._RESULT, result))
          continue
        if message in (Async._CLOSE, None):  # None: the trainer is gone.
          break
        raise KeyError(f'Received message of unknown type {message}')
    except Exception:
      stacktrace = ''.join(traceback.format_exception(*sys.exc_info()))
      print(f'Error in environment process: {stacktrace}')
      workers.report(conn, (Async._EXCEPTION, stacktrace))
    finally:
      workers.finish(env, conn)


class Gymnasium:
  """Any Gymnasium environment as `--task gym_<Id>`, with an image.

  Shaped like DeepMindControl: the image is rendered once per agent step
  (ActionRepeat calls step_unrendered, then add_image), and the discount
  tells a real end (terminated: 0) from a time limit (truncated: 1).
  """

  def __init__(self, name, size=(64, 64), seed=None):
    self._env, self._image_obs = gymtask.make(name, size)
    self._size = tuple(size)
    self._seed = seed
    self._seeded = False
    self._frame = None  # The latest image observation, if the env has one.

  def __getattr__(self, name):
    return getattr(self._env, name)

  @property
  def observation_space(self):
    space = self._env.observation_space
    if isinstance(space, gym.spaces.Dict):
      spaces = dict(space.spaces)
    else:
      spaces = {} if self._image_obs else {'state': space}
    spaces['image'] = gym.spaces.Box(
        0, 255, self._size + (3,), dtype=np.uint8)
    return gym.spaces.Dict(spaces)

  @property
  def action_space(self):
    space = self._env.action_space
    if isinstance(space, gym.spaces.Discrete):
      return gym.spaces.Discrete(space.n)  # Indices from 0, as OneHotAction's.
    return space

  def step(self, action):
    obs, reward, done, info = self.step_unrendered(action)
    return self.add_image(obs), reward, done, info

  def reset(self):
    # Seeded once, then left to run on: each episode differs, and the same
    # seed gives the same sequence of episodes.
    seed, self._seeded = (None if self._seeded else self._seed), True
    obs, _ = self._env.reset(seed=seed)
    return self.add_image(self._split(obs))

  def render(self, *args, **kwargs):
    if kwargs.get('mode', 'rgb_array') != 'rgb_array':
      raise ValueError("Only render mode 'rgb_array' is supported.")
    image = self._frame if self._image_obs else self._env.render()
    image = np.asarray(image, dtype=np.uint8)
    if image.shape[:2] != self._size:
      height, width = self._size
      image = np.array(Image.fromarray(image).resize(
          (width, height), Image.BILINEAR))
    return image

  def step_unrendered(self, action):
    space = self._env.action_space
    if isinstance(space, gym.spaces.Discrete):
      action = int(action) + int(space.start)
    obs, reward, terminated, truncated, _ = self._env.step(action)
    info = {'discount': np.array(0.0 if terminated else 1.0, np.float32)}
    return self._split(obs), float(reward), terminated or truncated, info

  def add_image(self, obs):
    return dict(obs, image=self.render())

  def _split(self, obs):
    if self._image_obs:
      self._frame = obs
      return {}
    if isinstance(obs, dict):
      return {k: np.asarray(v) for k, v in obs.items()}
    return {'state': np.asarray(obs)}
