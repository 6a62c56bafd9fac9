"""Learning, not just updating: the world model fits and the actor improves.

One small agent (the tiny preset's networks) on fixed synthetic episodes whose
reward depends on the action, `1 + 0.5 * action[0]`, so the best policy pushes
the first action dimension to +1 and no reward exceeds 1.5. First only the
world model trains, then, with the model frozen, only the actor and the value.
3-6 minutes on two shared cores. It fails when a key piece of learning is
broken: the actor's gradient through the dynamics cut, the λ-return's value
bootstrap or its discount dropped, a reward model blind to the action, the
world model's losses not falling.

The discount is 0.95 here, not the paper's 0.99: with the faster value
learning rate the test needs, the value then settles within the 300 steps
(19.2-28.9 over seeds 0-4, under the 1.5 / 0.05 = 30 that the rewards
allow), while at 0.99 its fixed point lies beyond them and Adam overshoots it
on the way (measured 266 at 300 steps on seed 0, against a bound of 150).
`LEARNING_SEED` picks another seed for the episodes and the agent; every
margin below held on seeds 0-4 (`LEARNING_SEED=i pytest -s` prints the
figures).
"""


import os

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

import dreamer
import runs
import tools
from support import cli
from support import runtime

MODEL_STEPS = 300
BEHAVIOR_STEPS = 300
MAX_REWARD = 1.5  # Of 1 + 0.5 * action[0] with actions in [-1, 1].
DISCOUNT = 0.95
SEED = int(os.environ.get('LEARNING_SEED', '0'))
# Passes of imagination averaged per measurement: the imagined reward of one
# pass varies by about 0.1 with the sampled actions and states.
PASSES = 5
# The least gap between the predicted rewards of actions +1 and -1: under
# half the smallest measured over seeds 0-4 (0.117; up to 0.386).
REWARD_GAP = 0.05


def write_episodes(datadir, count=8, length=101, seed=0):
  rng = np.random.RandomState(seed)
  for _ in range(count):
    action = rng.uniform(-1, 1, (length, 2)).astype(np.float32)
    action[0] = 0  # The first step of an episode has no action.
    # A plain colour per episode with pixel noise: something to reconstruct.
    colour = rng.uniform(0, 255, 3)
    image = np.clip(colour + rng.normal(0, 10, (length, 64, 64, 3)), 0, 255)
    reward = 1.0 + 0.5 * action[:, 0]
    reward[0] = 0
    tools.save_episodes(datadir, [dict(
        image=image.astype(np.uint8), action=action.astype(np.float16),
        reward=reward.astype(np.float16),
        discount=np.ones(length, np.float16))])


def set_learning_rates(agent, **rates):
  optimizers = dict(
      model=agent._model_opt, actor=agent._actor_opt, value=agent._value_opt)
  for name, optimizer in optimizers.items():
    optimizer._opt.learning_rate.assign(rates.get(name, 0.0))


def train(agent, steps):
  history = []
  for _ in range(steps):
    for metric in agent._metrics.values():
      metric.reset_state()
    with agent._strategy.scope():
      agent.train(next(agent._dataset))
    history.append({k: float(m.result()) for k, m in agent._metrics.items()})
  return history


def imagined(agent, batch):
  """Mean imagined reward, value and first action from the batch's states."""
  embed = agent._encode(batch)
  post, _ = agent._dynamics.observe(embed, batch['action'])
  passes = []
  for _ in range(PASSES):
    feat = agent._imagine_ahead(post)
    passes.append(dict(
        reward=float(tf.reduce_mean(agent._reward(feat).mode())),
        value=float(tf.reduce_mean(agent._value(feat).mode())),
        action=float(tf.reduce_mean(agent._actor(feat).mode()[..., 0]))))
  return {k: float(np.mean([p[k] for p in passes])) for k in passes[0]}


def predicted_rewards(agent, batch, first_actions):
  """Mean predicted reward one step after the batch's states, per action.

  Each step takes one of `first_actions` in the first dimension and 0 in the
  other, from the same posterior states, and the reward is read at the
  prior's mean: no sampling noise between the actions, so any difference is
  the world model's response to the action alone.
  """
  embed = agent._encode(batch)
  post, _ = agent._dynamics.observe(embed, batch['action'])
  start = {k: tf.reshape(v, [-1] + list(v.shape[2:])) for k, v in post.items()}
  rewards = {}
  for first_action in first_actions:
    action = np.zeros((start['deter'].shape[0], 2), np.float32)
    action[:, 0] = first_action
    prior = agent._dynamics.img_step(start, tf.constant(action))
    prior = dict(prior, stoch=prior['mean'])
    feat = agent._dynamics.get_feat(prior)
    rewards[first_action] = float(tf.reduce_mean(agent._reward(feat).mode()))
  return rewards


def mean(history, key, part):
  return float(np.mean([h[key] for h in part(history)]))


@pytest.fixture(scope='module')
def learned(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('learning')
  write_episodes(tmp / 'episodes', seed=SEED)
  config = dreamer.define_config()
  config.update(cli.PRESETS['tiny'])
  # Faster actor and value than the paper's 8e-5, so that minutes suffice.
  config.update(logdir=tmp, precision=32, batch_size=8, batch_length=16,
                actor_lr=1e-3, value_lr=1e-3, discount=DISCOUNT, seed=SEED)
  runtime.set_precision(config)
  runtime.set_seed(config.seed)
  space = gym.spaces.Box(-1, 1, (2,), np.float32)
  writer = tf.summary.create_file_writer(str(tmp))
  agent = runs.build_agent(config, tmp / 'episodes', space, writer)
  batch = next(agent._dataset)
  set_learning_rates(agent, model=config.model_lr)
  model = train(agent, MODEL_STEPS)
  rewards = predicted_rewards(agent, batch, (-1.0, 1.0))
  before = imagined(agent, batch)
  set_learning_rates(agent, actor=config.actor_lr, value=config.value_lr)
  behavior = train(agent, BEHAVIOR_STEPS)
  after = imagined(agent, batch)
  result = dict(config=config, model=model, rewards=rewards, before=before,
                after=after, behavior=behavior)
  # The figures the margins below rest on, for `pytest -s` over seeds.
  print(f'\nLEARNING_SEED={SEED}', {k: result[k] for k in (
      'rewards', 'before', 'after')})
  return result


def test_world_model_losses_fall(learned):
  first = lambda h: h[:10]
  last = lambda h: h[-10:]
  model = learned['model']
  # Measured: image 11814 -> 11496, reward 1.23 -> 0.94 (negative log-likes).
  assert mean(model, 'image_loss', last) < mean(
      model, 'image_loss', first) - 100
  assert mean(model, 'reward_loss', last) < mean(
      model, 'reward_loss', first) - 0.15


def test_reward_model_orders_the_actions(learned):
  # The environment pays 1.5 for action +1 and 0.5 for -1. A reward model
  # that ignores the action predicts exactly the same for both (measured
  # with the action zeroed in RSSM.img_step: a gap of 0.000).
  rewards = learned['rewards']
  assert rewards[1.0] > rewards[-1.0] + REWARD_GAP


def test_actor_raises_the_imagined_reward(learned):
  before, after = learned['before'], learned['after']
  # Seeds 0-4: the reward rose by 0.160-0.286 and the first action's mode
  # by 0.70-1.29, to 0.9997-0.9999. With the actor's gradient through the
  # dynamics cut, +0.013 and -0.079.
  assert after['reward'] > before['reward'] + 0.1
  assert after['action'] > before['action'] + 0.3
  assert after['action'] > 0.9


def test_value_bootstraps_beyond_the_horizon(learned):
  # Without value[-1] as the bootstrap, a target is at most the discounted
  # sum of horizon - 1 rewards of at most 1.5: 15.4 at 0.95. Seeds 0-4:
  # 19.2-28.9; with bootstrap=None, 6.3.
  config = learned['config']
  horizon_only = sum(MAX_REWARD * config.discount ** t
                     for t in range(config.horizon - 1))
  assert horizon_only == pytest.approx(15.4, abs=0.05)
  assert learned['after']['value'] > horizon_only


def test_value_within_what_the_rewards_allow(learned):
  # No return of rewards at most 1.5 exceeds 1.5 / (1 - 0.95) = 30; a dropped
  # or misapplied discount lets the value grow past it (464 with the
  # imagined discount set to 1). Seeds 0-4: 19.2-28.9, the closest 1.1 short.
  config = learned['config']
  assert learned['after']['value'] < MAX_REWARD / (1 - config.discount)
