"""A tiny custom Gymnasium environment, as README's "Your own environment".

`--task gym_dot_env:Dot-v0` imports this module, which registers Dot-v0. The
image shows a red dot, which the action moves, and a green target; reaching
the target ends the episode (terminated), else the time limit does
(truncated).
"""

import gymnasium as gym
import numpy as np


class Dot(gym.Env):
  metadata = {'render_modes': ['rgb_array'], 'render_fps': 10}

  def __init__(self, render_mode=None):
    self.render_mode = render_mode
    self.observation_space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

  def reset(self, seed=None, options=None):
    super().reset(seed=seed)
    self.dot, self.target = self.np_random.uniform(0.1, 0.9, (2, 2))
    return self._image(), {}

  def step(self, action):
    self.dot = np.clip(self.dot + 0.1 * np.clip(action, -1, 1), 0, 1)
    distance = np.linalg.norm(self.dot - self.target)
    success = bool(distance < 0.1)
    reward = 10.0 if success else -float(distance)
    return self._image(), reward, success, False, {}

  def render(self):
    return self._image()

  def _image(self):
    image = np.full((64, 64, 3), 255, np.uint8)
    for (x, y), color in ((self.target, (0, 200, 0)), (self.dot, (255, 0, 0))):
      row, col = int(y * 60), int(x * 60)
      image[row:row + 4, col:col + 4] = color
    return image


gym.register('Dot-v0', entry_point=Dot, max_episode_steps=100)
