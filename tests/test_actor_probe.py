"""docs/actor_probe.py: its gradient against the equations; on the shared
tiny run, what it prints, and a run untouched."""

import re
import shutil
import types

import numpy as np
import pytest

import runs
from runs import run
from test_evaluate import fingerprint

POLICIES = ['actor', 'constant -1.0', 'constant -0.5', 'constant +0.0',
            'constant +0.5', 'constant +1.0', 'actor + N(0, 0.3), clipped',
            'actor + N(0, 1.0), clipped', 'uniform random']
NUMBER = r'([-+]?[\d.]+)'
GENERAL = r'([-+]?[\d.]+(?:e[-+]\d+)?)'  # Also as %g prints small ones.
ROW = (rf'^  (.+?) +{NUMBER} ± {NUMBER} +{NUMBER} ± {NUMBER} +{NUMBER} '
       rf'+{NUMBER}$')


@pytest.mark.parametrize('precision', [[], ['--precision', '32']])
def test_prints_the_actor_and_each_policy_and_leaves_the_run(
    cartpole_run, tmp_path, precision):
  logdir = tmp_path / 'run'
  shutil.copytree(cartpole_run[0], logdir)
  # The replay would build its cache anew in the run's folder if it read it.
  shutil.rmtree(logdir / 'episodes' / '.cache')
  before = fingerprint(logdir), sorted(logdir.rglob('*'))
  code, output = run('--logdir', logdir, '--batches', '3', *precision,
                     script='docs/actor_probe.py')
  assert code == 0, output[-3000:]
  # The tiny run's own precision is 16; the flag sets another.
  # Its 3000 frames are 3 episodes, all stored by the checkpoint.
  assert re.search(r'Checkpoint \S+ckpt-3000; 3 batches of 4 x 16 replay '
                   r'steps from its 3 episodes, precision '
                   rf'{precision[-1] if precision else 16}\.', output)
  actor = re.search(rf'pre-tanh mean {NUMBER} \({NUMBER} to {NUMBER}\), '
                    rf'std {NUMBER}', output)
  mean, low, high, std = map(float, actor.groups())
  assert low <= mean <= high and std > 0, output
  rows = {name: list(map(float, numbers))
          for name, *numbers in re.findall(ROW, output, re.M)}
  assert list(rows) == POLICIES, output
  assert rows['actor'][2:4] == [0, 0]  # Its difference to itself.
  for name, (ret, _, difference, _, _, _) in rows.items():
    assert abs(ret - rows['actor'][0] - difference) <= 0.0015, name
  # Constant actions differ, so the model's rewards for them do too.
  assert len({rows[name][4] for name in POLICIES[1:6]}) > 1, output
  # The gradient at each of 4 x 16 states' 15 imagined actions.
  gradient = re.search(
      rf'at the actor\'s (\d+) imagined actions.*\n.*d return / d action: '
      rf'{NUMBER} ± {NUMBER}, positive at {NUMBER} of the actions, mean '
      rf'\|\.\| {NUMBER}\n.*pre-tanh sample\): {NUMBER} ± {NUMBER}', output)
  count, mean, _, positive, size, slope, _ = map(float, gradient.groups())
  assert count == 3 * 4 * 16 * 15 and 0 <= positive <= 1, output
  assert abs(mean) <= size and abs(slope) <= size and size > 0, output
  # The tiny run's actor: the original's building step, 5 pretraining
  # updates at 1000 frames, and 5 in each phase at 1500, 2000 and 2500.
  adam = re.search(
      rf'last Adam update \(step count t = (\d+)\), .* median {GENERAL}, '
      rf'99th percentile {GENERAL}, largest {GENERAL}; .*sum v\^\): '
      rf'{GENERAL}\n.*learning rate {GENERAL} \(\+ raises the mean\), m\^ '
      rf'{GENERAL}, sqrt\(v\^\) {GENERAL}$', output, re.M)
  count, median, high, largest, norm, bias, m, root_v = map(
      float, adam.groups())
  assert count == 21 and 0 < median <= high <= largest, output
  assert 0 < abs(bias) <= largest and 0 < root_v <= norm, output
  assert bias * m < 0, output  # Adam steps against the loss's gradient.
  assert (fingerprint(logdir), sorted(logdir.rglob('*'))) == before


@pytest.mark.parametrize('flags, message', [
    ([], 'has no checkpoint'),
    (['--batches', '1'], '--batches must be at least 2'),
])
def test_refuses_with_a_message(tmp_path, flags, message):
  (tmp_path / 'config.json').write_text('{"task": "dmc_cartpole_balance"}')
  code, output = run('--logdir', tmp_path, *flags,
                     script='docs/actor_probe.py')
  assert code == 2 and message in output, output


def load_script():
  return runs.load_script('docs', 'actor_probe')


class Toy:
  """An agent whose imagination is a sum: deter += action at each step.

  Its actor takes base + 0.3 x deter; reward deter², value deter / 2, and
  a continuation probability that depends on deter, so the actor loss's
  gradient can be written out in NumPy; see objective().
  """

  def __init__(self, base):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    head = lambda name, f: (lambda feat: types.SimpleNamespace(
        **{name: lambda: f(feat)}))
    self._dynamics = self
    self._actor = lambda feat: types.SimpleNamespace(
        sample=lambda: tf.constant(base, tf.float32) + 0.3 * feat)
    self._reward = head('mode', lambda feat: feat[..., 0] ** 2)
    self._value = head('mode', lambda feat: 0.5 * feat[..., 0])
    self._pcont = head('mean', lambda feat: 0.9 - 0.05 * tf.tanh(feat[..., 0]))

  def get_feat(self, state):
    return state['deter']

  def img_step(self, prev, action):
    return {'deter': prev['deter'] + action, 'stoch': prev['stoch']}


def rollout(start, actions):
  deter = start + np.cumsum(actions, 0)[..., 0]
  return deter, 0.9 - 0.05 * np.tanh(deter)


def objective(start, base, offsets, disclam):
  """Training's weighted λ-returns summed, written out in NumPy.

  As in training, the actor sees its states through stop_gradient and the
  weights (products of continuation probabilities) are constants: both are
  held at their values without offsets; only the actions' offsets, and
  through them the states, rewards, values and the λ-return's own
  continuation probabilities, change.
  """
  actions = actor_actions(start, base)
  deter, pcont = rollout(start, actions + offsets)
  _, fixed = rollout(start, actions)
  reward, value = deter ** 2, 0.5 * deter
  returns = [value[-1]]  # The bootstrap.
  for t in reversed(range(len(deter) - 1)):
    returns.insert(0, reward[t] + pcont[t] * (
        (1 - disclam) * value[t + 1] + disclam * returns[0]))
  weights = np.cumprod(np.concatenate([np.ones_like(fixed[:1]), fixed[:-2]]),
                       0)
  return (weights * np.array(returns[:-1])).sum()


def actor_actions(start, base, steps=5):
  deter, actions = start, []
  for _ in range(steps):
    actions.append(base[:, 0] + 0.3 * deter)
    deter = deter + actions[-1]
  return np.array(actions)[..., None]


def test_action_gradient_is_the_actor_loss_gradient_per_action():
  probe = load_script()
  config = types.SimpleNamespace(horizon=5, disclam=0.8, pcont=True)
  start = np.array([0.5, -1.0, 2.0])
  base = np.array([[0.3], [-0.7], [0.1]])
  gradient, taken = probe.action_gradient(
      Toy(base), config, {'deter': start[:, None].astype(np.float32),
                          'stoch': np.zeros((3, 1), np.float32)}, 1)
  assert gradient.shape == taken.shape == (5, 3, 1)
  np.testing.assert_allclose(taken, actor_actions(start, base), rtol=1e-5)
  expected = np.zeros((5, 3, 1))
  for index in np.ndindex(expected.shape):
    step = np.zeros((5, 3, 1))
    step[index] = 1e-6
    expected[index] = (objective(start, base, step, 0.8) -
                       objective(start, base, -step, 0.8)) / 2e-6
  np.testing.assert_allclose(gradient, expected, rtol=1e-4, atol=1e-4)


def test_adam_steps_are_the_last_updates_over_the_learning_rate():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tf_keras  # pylint: disable=import-outside-toplevel
  probe = load_script()
  variable = tf.Variable([1.0, -2.0, 3.0, 0.5])
  optimizer = tf_keras.optimizers.Adam(0.01)
  # Large gradients, then small ones: v remembers the large ones.
  for gradient in ([1.0, 0.5, -2.0, 0.0], [0.1, -0.5, -1.0, 0.0],
                   [0.001, 0.2, -0.5, 1e-3]):
    before = variable.numpy()
    optimizer.apply_gradients([(tf.constant(gradient), variable)])
  agent = types.SimpleNamespace(
      _actor_opt=types.SimpleNamespace(_opt=optimizer))
  adam = probe.adam_steps(agent)
  assert adam.count == 3
  np.testing.assert_allclose(
      0.01 * adam.sizes[0], np.abs(variable.numpy() - before), rtol=1e-4)
  np.testing.assert_allclose(
      0.01 * adam.bias_update, variable.numpy() - before, rtol=1e-4)
  # The moments by hand, with beta_1 0.9 and beta_2 0.999.
  gradients = np.array([[1.0, 0.5, -2.0, 0.0], [0.1, -0.5, -1.0, 0.0],
                        [0.001, 0.2, -0.5, 1e-3]])
  weights = lambda beta: beta ** np.arange(2, -1, -1)[:, None] * (1 - beta)
  np.testing.assert_allclose(
      adam.bias_m, (weights(0.9) * gradients).sum(0) / (1 - 0.9 ** 3),
      rtol=1e-5)
  v = (weights(0.999) * gradients ** 2).sum(0) / (1 - 0.999 ** 3)
  np.testing.assert_allclose(adam.bias_root_v, np.sqrt(v), rtol=1e-5)
  np.testing.assert_allclose(adam.root_sum_v, np.sqrt(v.sum()), rtol=1e-5)


def test_replay_reads_only_the_episodes_of_the_checkpoint(tmp_path):
  probe = load_script()
  config = types.SimpleNamespace(action_repeat=2)
  # Names begin with the time stored; 501 steps are 500 transitions.
  names = ['20261130T100000-a-501.npz', '20261130T100100-b-501.npz',
           '20261130T100200-c-251.npz', '20261130T100300-d-501.npz']
  for name in reversed(names):  # Listed order is not stored order.
    np.savez(tmp_path / name, reward=np.zeros(3))
  (tmp_path / '20261130T100030-broken-501.npz').write_bytes(b'cut')
  until = lambda frames: [
      f.name for f in probe.episodes_until(tmp_path, frames, config)]
  assert until(2500) == names[:3]
  assert until(2499) == names[:2]
  assert until(None) == names
  assert probe.checkpoint_frames('logdir/checkpoints/ckpt-16000') == 16000
  assert probe.checkpoint_frames('elsewhere/model') is None
