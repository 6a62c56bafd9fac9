"""docs/episode_starts.py: repeated starts and near-copies in a replay."""

import time

import numpy as np

import runs
from runs import run
import tools


def load_script():
  return runs.load_script('docs', 'episode_starts')


def episode(start, actions):
  image = np.zeros((len(actions), 4, 4, 3), np.uint8)
  image[0] = start
  return {'image': image, 'action': np.array(actions, np.float16)[:, None],
          'reward': np.zeros(len(actions), np.float16)}


def write(datadir, episodes):
  for content in episodes:
    tools.save_episodes(datadir, [content])
    time.sleep(0.01)  # Distinct modification times: the write order.


class TestEpisodeStarts:

  EPISODES = [
      episode(1, [0.5, -0.5, 0.1]),      # 1
      episode(2, [0.3, 0.3, 0.3]),       # 2
      episode(1, [-1.0, 1.0, 0.0]),      # 3: start of 1, other actions
      episode(1, [0.5, -0.5, 0.1002]),   # 4: start of 1, a near-copy of 1
      episode(3, [0.0, 0.0, 0.0]),       # 5
  ]

  def test_repeats_in_write_order(self, tmp_path):
    write(tmp_path / 'episodes', self.EPISODES)
    script = load_script()
    found = script.repeats(script.load_starts(tmp_path / 'episodes'))
    assert [(index, closest) for index, closest, _ in found] == [(3, 1), (4, 1)]
    assert found[0][2] == 1.5 and found[1][2] < 0.001

  def test_prints_counts_and_near_copies(self, tmp_path):
    write(tmp_path / 'episodes', self.EPISODES)
    before = sorted(p.name for p in tmp_path.rglob('*'))
    code, output = run('--logdir', tmp_path, script='docs/episode_starts.py')
    assert code == 0, output
    assert output.startswith(
        '5 episodes, 3 distinct first images; 2 start where an earlier one '
        'did, 1 of them with actions within 0.001')
    assert 'near-copies: 4\n' in output
    assert sorted(p.name for p in tmp_path.rglob('*')) == before
