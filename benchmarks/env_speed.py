"""Measures environment frames per second, as the agent's collection sees them.

DeepMind Control walker_walk (64x64, action repeat 2, random actions) with the
render-once ActionRepeat of wrappers.py versus a reference loop that renders
after every physics step, as the original Dreamer did; and Atari pong (action
repeat 4, 64x64). Frames count physics steps or emulator frames.

Usage: MUJOCO_GL=egl python benchmarks/env_speed.py [--frames 2000]
"""

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import wrappers  # pylint: disable=wrong-import-position


def dmc_render_once(seed):
  env = wrappers.DeepMindControl('walker_walk', (64, 64), seed=seed)
  return wrappers.ActionRepeat(env, 2)


class RenderEveryStep:
  """The original collection: render after each physics step of a repeat."""

  def __init__(self, env, repeat):
    self._env = env
    self._repeat = repeat
    self.action_space = env.action_space

  def reset(self):
    return self._env.reset()

  def step(self, action):
    total_reward, done = 0.0, False
    for _ in range(self._repeat):
      obs, reward, done, info = self._env.step(action)  # Renders each time.
      total_reward += reward
      if done:
        break
    return obs, total_reward, done, info


def dmc_render_every_step(seed):
  env = wrappers.DeepMindControl('walker_walk', (64, 64), seed=seed)
  return RenderEveryStep(env, 2)


def atari_pong(seed):
  env = wrappers.Atari(
      'pong', 4, (64, 64), grayscale=False, life_done=True, seed=seed)
  return wrappers.OneHotAction(env)


def measure(envs, repeat, frames, seed, rounds=4):
  """Returns frames per second of each env over `frames` random-action frames.

  The envs take turns in rounds, so that a change in the machine's load while
  measuring affects all of them alike.
  """
  seconds = [0.0] * len(envs)
  for env in envs:
    env.action_space.seed(seed)
    env.reset()  # Outside the timing: the first render sets up OpenGL.
  steps_per_round = frames // repeat // rounds
  for _ in range(rounds):
    for index, env in enumerate(envs):
      start = time.perf_counter()
      for _ in range(steps_per_round):
        _, _, done, _ = env.step(env.action_space.sample())
        if done:
          env.reset()
      seconds[index] += time.perf_counter() - start
  return [steps_per_round * rounds * repeat / s for s in seconds]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--frames', type=int, default=2000)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  print(f'python {platform.python_version()}, {os.cpu_count()} CPUs, '
        f"MUJOCO_GL={os.environ['MUJOCO_GL']}, {args.frames} frames each")
  once, every = measure(
      [dmc_render_once(args.seed), dmc_render_every_step(args.seed)], 2,
      args.frames, args.seed)
  print(f'dmc walker_walk, repeat 2, render once per agent step: '
        f'{once:8.1f} frames/s')
  print(f'dmc walker_walk, repeat 2, render every physics step:  '
        f'{every:8.1f} frames/s')
  print(f'speed-up of render once: {once / every:.2f}x')
  pong, = measure([atari_pong(args.seed)], 4, args.frames, args.seed)
  print(f'atari pong, repeat 4, 64x64 RGB:                       '
        f'{pong:8.1f} frames/s')


if __name__ == '__main__':
  main()
