"""The one-hot action space of wrappers.OneHotAction.

The original patched `sample` of a fresh Box on every access to
`action_space`; that bound method drags the whole environment along when the
space is pickled to or from an environment worker, and cannot be seeded.
"""

import gymnasium as gym
import numpy as np


class OneHotSpace(gym.spaces.Box):
  """Box of one-hot vectors for `n` discrete actions; samples are one-hot."""

  def __init__(self, n, sample_action, seed=None):
    super().__init__(0, 1, (n,), dtype=np.float32, seed=seed)
    self.n = n
    self._sample_action = sample_action  # OneHotAction._sample_action.

  def sample(self, mask=None, probability=None):
    del mask, probability  # Part of gymnasium's signature; unsupported.
    return self._sample_action(self.n, self.np_random)

  def contains(self, x):
    x = np.asarray(x)
    return x.shape == (self.n,) and np.allclose(
        x, np.eye(self.n, dtype=np.float32)[np.argmax(x)])

  def __repr__(self):
    return f'OneHotSpace({self.n})'
