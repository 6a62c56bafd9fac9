"""Gymnasium environments as `--task gym_<Id>`: names, building, refusals.

A support module of the `Gymnasium` wrapper (wrappers.py) and of the flag
validation (cli.py). It imports none of the agent's modules, so that worker
processes and the validation stay light.

A task is `gym_<Id>`, with any id that Gymnasium's registry knows, or
`gym_<module>:<Id>`, Gymnasium's own form, which imports the module first so
that its registration runs (also in worker processes, which are spawned).
"""

import difflib
import importlib
import os

import gymnasium as gym
import numpy as np

from support import renderer

# Classic-control environments draw with pygame: no window, no greeting.
os.environ.setdefault('SDL_VIDEODRIVER', 'dummy')
os.environ.setdefault('SDL_AUDIODRIVER', 'dummy')
os.environ.setdefault('PYGAME_HIDE_SUPPORT_PROMPT', '1')

DISCRETE_FLAGS = (
    '--action_dist onehot --expl epsilon_greedy (or --preset atari, whose '
    'discrete settings also change --action_repeat, --pcont and others)')


def split(name):
  """Returns (module or None, env id) of the part after `gym_`."""
  module, sep, env_id = name.rpartition(':')
  if not sep:
    return None, name
  if not module or not env_id:
    raise ValueError(
        f'Cannot read the Gymnasium task {name!r}: expected an id such as '
        'CartPole-v1, or module:id such as mypackage.envs:MyEnv-v0.')
  return module, env_id


def resolve(name):
  """Imports the module of `name`, if any; returns the registered spec."""
  module, env_id = split(name)
  if module:
    try:
      importlib.import_module(module)
    except Exception as e:  # pylint: disable=broad-except
      # Whatever the user's module raises is a reason to stop and say so.
      raise ValueError(
          f'Cannot import the module {module!r} of --task gym_{name}: '
          f'{type(e).__name__}: {e}') from e
  if env_id not in gym.registry:
    close = difflib.get_close_matches(env_id, list(gym.registry), n=5)
    hint = (f' Close matches: {", ".join("gym_" + c for c in close)}.'
            if close else '')
    raise ValueError(
        f'Unknown Gymnasium environment id {env_id!r} in --task gym_{name}.'
        f'{hint} A module that registers it can be named first, as in '
        '--task gym_mypackage.envs:MyEnv-v0.')
  return gym.spec(env_id)


def make(name, size=(64, 64)):
  """Builds the environment of `name`; returns (env, image from obs).

  Raises ValueError, naming the reason, for an unknown id, a module that
  fails to import, no image (neither `rgb_array` rendering nor an RGB image
  observation) and an action space other than Box or Discrete.
  """
  spec = resolve(name)
  # MuJoCo environments render with Mesa, which crashes on TensorFlow's LLVM
  # unless loaded first (see renderer.py).
  renderer.isolate_mesa_llvm()
  renders = 'rgb_array' in render_modes(spec)
  env = _make(spec, size) if renders else gym.make(spec)
  try:
    image_obs = is_image(env.observation_space)
    if not renders and not image_obs:
      raise ValueError(
          f'The Gymnasium environment {spec.id} has no image: it neither '
          "renders in render_mode='rgb_array' (its render_modes are "
          f'{render_modes(spec) or "none"}) nor observes an RGB image (uint8, '
          f'height x width x 3); its observation space is '
          f'{env.observation_space}.')
    check_action_space(spec.id, env.action_space)
  except Exception:
    env.close()
    raise
  return env, image_obs


def check(name, action_dist, expl=None, size=(64, 64)):
  """Validates a task against --action_dist; returns its max_episode_steps.

  Builds the environment once, since only an instance knows its spaces, but
  never renders nor steps it.
  """
  env, _ = make(name, size)
  try:
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    max_steps = env.spec.max_episode_steps if env.spec else None
  finally:
    env.close()
  # Gaussian noise on a one-hot action is no action: OneHotAction refuses it.
  if discrete and (action_dist != 'onehot' or expl not in (
      None, 'epsilon_greedy')):
    raise ValueError(
        f'The Gymnasium environment gym_{name} has discrete actions '
        f'({env.action_space}), which need {DISCRETE_FLAGS}; got '
        f'--action_dist {action_dist} --expl {expl}.')
  if not discrete and action_dist == 'onehot':
    raise ValueError(
        f'The Gymnasium environment gym_{name} has continuous actions '
        f'({env.action_space}), which need --action_dist tanh_normal, not '
        'onehot.')
  return max_steps


def render_modes(spec):
  """The render modes that an environment declares, without building it."""
  creator = spec.entry_point
  if isinstance(creator, str):
    creator = gym.envs.registration.load_env_creator(creator)
  return list(getattr(creator, 'metadata', {}).get('render_modes', []))


def is_image(space):
  return (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8
          and len(space.shape) == 3 and space.shape[-1] == 3)


def check_action_space(env_id, space):
  if isinstance(space, gym.spaces.Box) and space.dtype.kind == 'f':
    return
  if isinstance(space, gym.spaces.Discrete):
    return
  raise ValueError(
      f'The Gymnasium environment {env_id} has the action space {space}, '
      'which Dreamer does not support: it takes Box (float) actions, or '
      f'Discrete ones with {DISCRETE_FLAGS}.')


def _make(spec, size):
  # MuJoCo environments render at the size asked for; the others (pygame's
  # classic control) take no size, and their frames are resized.
  height, width = size
  try:
    return gym.make(spec, render_mode='rgb_array', width=width, height=height)
  except TypeError:
    return gym.make(spec, render_mode='rgb_array')
