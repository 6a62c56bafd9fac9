import json
import pathlib
import re

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from tf_keras import mixed_precision as prec

import dreamer
import runs
import tools
from support import checkpoint
from support import cli
from support import progress
from support import runtime
from support import storage

tfd = tfp.distributions


def tiny_config(logdir, **overrides):
  config = dreamer.define_config()
  config.update(cli.PRESETS['tiny'])
  config.logdir = pathlib.Path(logdir)
  config.precision = 32
  config.update(overrides)
  return config


def write_episodes(datadir, action_dim, onehot=False, count=3, length=21):
  rng = np.random.RandomState(0)
  for _ in range(count):
    if onehot:
      action = np.eye(action_dim)[rng.randint(0, action_dim, length)]
    else:
      action = rng.uniform(-1, 1, (length, action_dim))
    tools.save_episodes(datadir, [{
        'image': rng.randint(0, 255, (length, 64, 64, 3)).astype(np.uint8),
        'action': action.astype(np.float16),
        'reward': rng.randn(length).astype(np.float16),
        'discount': (rng.uniform(size=length) > 0.1).astype(np.float16),
    }])


def make_agent(tmp_path, strategy=None, action_dim=2, **overrides):
  config = tiny_config(tmp_path, **overrides)
  onehot = config.action_dist == 'onehot'
  datadir = tmp_path / 'episodes'
  write_episodes(datadir, action_dim, onehot)
  if onehot:
    space = gym.spaces.Discrete(action_dim)
  else:
    space = gym.spaces.Box(-1, 1, (action_dim,), np.float32)
  writer = tf.summary.create_file_writer(str(tmp_path))
  agent = runs.build_agent(config, datadir, space, writer, strategy)
  return agent, config


# Agents are expensive to build (the train step is traced), so tests share
# them. free_nats 0: while the KL is below free_nats, max(KL, free_nats) is
# constant and the layers that only shape the prior get no gradient.


@pytest.fixture(scope='module')
def continuous(tmp_path_factory):
  return make_agent(tmp_path_factory.mktemp('continuous'), free_nats=0.0)


@pytest.fixture(scope='module')
def discrete(tmp_path_factory):
  return make_agent(
      tmp_path_factory.mktemp('discrete'), action_dim=4,
      **{**cli.PRESETS['atari'], 'free_nats': 0.0})


def optimizer_variables(agent):
  return {
      name: list(opt._variables)
      for name, opt in (('model', agent._model_opt),
                        ('actor', agent._actor_opt),
                        ('value', agent._value_opt))}


def assert_train_step_updates_everything(agent):
  before = {k: [v.numpy().copy() for v in vs]
            for k, vs in optimizer_variables(agent).items()}
  with agent._strategy.scope():
    losses = agent.train(next(agent._dataset))
  for name, value in losses.items():
    assert np.isfinite(float(value)), name
  for name, variables in optimizer_variables(agent).items():
    assert variables, name
    for var, old in zip(variables, before[name]):
      assert not np.array_equal(var.numpy(), old), (name, var.name)


class TestTrainStep:

  def test_updates_every_variable(self, continuous):
    assert_train_step_updates_everything(continuous[0])

  def test_traced_once_per_value_of_log_images(self, continuous):
    # Variables are created before the first trace, and later steps run in
    # the strategy's scope, so a step retraces only for the other flag.
    agent = continuous[0]
    assert agent.train.experimental_get_tracing_count() == 1
    tf.summary.experimental.set_step(agent._step)  # As __call__ does.
    with agent._strategy.scope():
      for log_images in (True, False, True):
        agent.train(next(agent._dataset), log_images)
    assert agent.train.experimental_get_tracing_count() == 2

  def test_short_sequences_train_without_the_gif(self, tmp_path):
    # The GIF observes 5 frames; only a logging step's trace holds it, so
    # shorter sequences still build and train with log_images off.
    agent, _ = make_agent(tmp_path, batch_length=5, log_images=False)
    with agent._strategy.scope():
      losses = agent.train(next(agent._dataset), False)
    assert np.isfinite(float(losses['model']))

  def test_discrete_actions_with_pcont(self, discrete):
    assert 'pcont_loss' in discrete[0]._metrics
    assert_train_step_updates_everything(discrete[0])

  def test_mirrored_strategy_on_two_cpus(self, tmp_path):
    strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
    agent, _ = make_agent(tmp_path, strategy=strategy, free_nats=0.0)
    assert agent._strategy.num_replicas_in_sync == 2
    assert_train_step_updates_everything(agent)


def metrics_after_step(agent):
  for metric in agent._metrics.values():
    metric.reset_state()
  with agent._strategy.scope():
    agent.train(next(agent._dataset))
  return {k: float(v.result()) for k, v in agent._metrics.items()}


class TestLosses:

  def test_free_nats_bound_the_kl(self, tmp_path):
    agent, _ = make_agent(tmp_path, free_nats=1000.0, kl_scale=0.5)
    metrics = metrics_after_step(agent)
    # max(mean KL, free_nats) = free_nats; model loss = kl_scale * div - likes.
    assert metrics['div'] == 1000.0
    expected = 0.5 * 1000.0 + metrics['image_loss'] + metrics['reward_loss']
    assert metrics['model_loss'] == pytest.approx(expected, rel=1e-5)

  def test_kl_above_free_nats_passes_through(self, continuous):
    metrics = metrics_after_step(continuous[0])
    assert 0.0 < metrics['div'] < 1000.0
    expected = metrics['div'] + metrics['image_loss'] + metrics['reward_loss']
    assert metrics['model_loss'] == pytest.approx(expected, rel=1e-5)

  def test_pcont_loss_is_scaled(self, discrete):
    agent, config = discrete
    data = next(agent._dataset)
    saved = snapshot(agent)
    try:
      metrics, rec = eager_step(agent, data, ('_pcont',))
    finally:
      restore(saved)
    # The first call is on the posterior features, against discount x the
    # stored discount flags, scaled by pcont_scale.
    (feat,), dist = rec['_pcont'].calls[0]
    assert feat.shape[:2] == data['discount'].shape
    target = config.discount * data['discount']
    logprob = tf.reduce_mean(dist.log_prob(target))
    expected = -config.pcont_scale * float(logprob)
    assert config.pcont_scale != 1
    assert metrics['pcont_loss'] == pytest.approx(expected, rel=1e-5)
    expected = (config.kl_scale * metrics['div'] + metrics['image_loss'] +
                metrics['reward_loss'] + metrics['pcont_loss'])
    assert metrics['model_loss'] == pytest.approx(expected, rel=1e-5)


class TestActing:

  @pytest.fixture
  def agent(self, continuous):
    return continuous[0]

  def _obs(self, batch):
    rng = np.random.RandomState(1)
    image = rng.randint(0, 255, (batch, 64, 64, 3)).astype(np.uint8)
    return {'image': image, 'reward': np.zeros(batch)}

  def test_reset_zeroes_latent_of_reset_envs(self, agent):
    obs = self._obs(2)
    _, state = agent(obs, np.array([True, True]))  # May train first.
    latent, action = state
    ones = ({k: tf.ones_like(v) for k, v in latent.items()},
            tf.ones_like(action))
    _, (after, _) = agent(obs, np.array([True, False]), ones)
    _, (fresh, _) = agent(obs, np.array([True, True]), None)
    _, (kept, _) = agent(obs, np.array([False, False]), ones)
    # The deterministic state depends only on the (masked) previous state.
    np.testing.assert_allclose(
        after['deter'][0], fresh['deter'][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        after['deter'][1], kept['deter'][1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(after['deter'][1], fresh['deter'][1])

  def test_training_actions_are_in_bounds(self, agent):
    action, _ = agent(self._obs(3), np.array([True, True, True]))
    assert action.shape == (3, 2)
    assert np.all(np.abs(action.numpy()) <= 1)

  def test_step_counts_frames(self, agent):
    before = int(agent._step.numpy())
    agent(self._obs(2), np.array([False, False]))
    assert int(agent._step.numpy()) == before + 2 * 2  # envs x repeat.

  def test_evaluation_does_not_count(self, agent):
    before = int(agent._step.numpy())
    agent(self._obs(1), np.array([True]), training=False)
    assert int(agent._step.numpy()) == before


class TestExploration:

  def test_epsilon_greedy_one_hot_and_decay(self, discrete):
    agent, config = discrete
    action = tf.one_hot([1] * 500, 4)
    step = int(agent._step.numpy())
    try:
      agent._step.assign(0)
      out = agent._exploration(action, True).numpy()
      np.testing.assert_allclose(out.sum(-1), 1)
      changed = np.mean(np.argmax(out, -1) != 1)
      # A random one-hot replaces 40% of actions, a quarter of which hit 1.
      assert 0.22 < changed < 0.38
      amount = agent._metrics['expl_amount']
      for frames, expected in ((config.expl_decay, 0.2),  # Halved.
                               (10 * config.expl_decay, 0.1)):  # Floored.
        agent._step.assign(int(frames))
        amount.reset_state()
        agent._exploration(action, True)
        assert float(amount.result()) == pytest.approx(expected)
    finally:
      agent._step.assign(step)

  def test_additive_gaussian_clipped(self, continuous):
    agent, config = continuous
    action = tf.fill((2000, 2), 0.9)
    out = agent._exploration(action, True).numpy()
    assert np.all(np.abs(out) <= 1)
    # Normal(0.9, 0.3) clipped at 1: P(> 1) = P(z > 1/3) = 0.37.
    assert 0.33 < np.mean(out == 1.0) < 0.41
    assert 0.15 < np.std(out) < 0.3
    np.testing.assert_array_equal(
        agent._exploration(action, False).numpy(), action.numpy())


class TestCheckpoint:

  def test_round_trip(self, tmp_path, continuous):
    first = continuous[0]
    with first._strategy.scope():
      first.train(next(first._dataset))
    manager = tf.train.CheckpointManager(
        checkpoint.variables(first), tmp_path / 'ckpt', max_to_keep=2)
    path = checkpoint.save(manager, 10)
    tf.random.set_seed(2)
    second, config = make_agent(tmp_path / 'b')
    second.load(path)
    # The step is derived from the episodes on disk, not the checkpoint.
    expected_step = dreamer.count_steps(tmp_path / 'b' / 'episodes', config)
    assert int(second._step.numpy()) == expected_step
    pairs = list(zip(_all_variables(first), _all_variables(second)))
    assert len(pairs) > 50
    for a, b in pairs:
      if a is first._step:
        continue
      np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    # A batch size no other test uses, so both policies are traced afresh
    # after the seed is set and draw the same random numbers.
    obs = {'image': np.full((5, 64, 64, 3), 100, np.uint8),
           'reward': np.zeros(5)}
    tf.random.set_seed(5)
    a1, _ = first.policy(obs, None, False)
    tf.random.set_seed(5)
    a2, _ = second.policy(obs, None, False)
    np.testing.assert_array_equal(a1.numpy(), a2.numpy())

  def test_schedule_restored_and_older_checkpoints_still_load(
      self, continuous, tmp_path, monkeypatch):
    agent = continuous[0]
    every = agent._should_train
    last = every._last
    monkeypatch.setattr(progress.Phase, 'resumed', 0)  # Undone at the end.
    try:
      every._last = 1234
      path = checkpoint.variables(agent).write(str(tmp_path / 'new'))
      assert tf.train.load_variable(
          path, 'schedule/.ATTRIBUTES/VARIABLE_VALUE') == 1234
      every._last = None
      checkpoint.load(agent, path)
      assert every._last == 1234
      assert progress.Phase.resumed == 0  # Saved between phases.
      # Saved on a stop inside a phase, with 2 of its updates left: that
      # phase is entered again and does only those.
      monkeypatch.setattr(progress.Phase, 'left', 2)
      assert int(checkpoint.schedule(agent).numpy()) == 1234 - every._every
      path = checkpoint.variables(agent).write(str(tmp_path / 'inside'))
      monkeypatch.setattr(progress.Phase, 'left', 0)
      checkpoint.load(agent, path)
      assert every._last == 1234 - every._every
      assert progress.Phase.resumed == 2 and progress.Phase.rest(5) == 2
      # Saved again before that phase began: the count is kept.
      path = checkpoint.variables(agent).write(str(tmp_path / 'again'))
      assert tf.train.load_variable(
          path, 'phase_left/.ATTRIBUTES/VARIABLE_VALUE') == 2
      assert tf.train.load_variable(
          path, 'schedule/.ATTRIBUTES/VARIABLE_VALUE') == 1234 - every._every
      # Saved inside a first phase at fewer frames than train_every: its
      # schedule is negative, and still not "no phase yet" (-1).
      every._last = every._every - 1
      monkeypatch.setattr(progress.Phase, 'left', 2)
      path = checkpoint.variables(agent).write(str(tmp_path / 'first'))
      monkeypatch.setattr(progress.Phase, 'left', 0)
      every._last = None
      checkpoint.load(agent, path)
      assert every._last == -1 and progress.Phase.resumed == 2
      # Written before the schedule was saved (and so before the phase's
      # updates left): loads, schedule untouched, nothing pending.
      every._last = 1234
      old = checkpoint.variables(agent)
      del old.schedule, old.phase_left
      path = old.write(str(tmp_path / 'old'))
      every._last = 77
      checkpoint.load(agent, path)
      assert every._last == 77 and progress.Phase.resumed == 0
      # Written before the updates left were saved: every update is done.
      every._last = 1234
      old = checkpoint.variables(agent)
      del old.phase_left
      path = old.write(str(tmp_path / 'older'))
      progress.Phase.resumed = 3
      checkpoint.load(agent, path)
      assert every._last == 1234 and progress.Phase.resumed == 0
    finally:
      every._last = last

  def test_checkpoint_holds_optimizer_state(self, continuous, tmp_path):
    agent = continuous[0]
    path = checkpoint.variables(agent).write(str(tmp_path / 'ckpt'))
    names = [name for name, _ in tf.train.list_variables(path)]
    for opt in ('model_opt', 'value_opt', 'actor_opt'):
      count = len(getattr(agent, '_' + opt)._variables)
      # Adam's first and second moments of every variable, and its step.
      moments = [n for n in names if n.startswith(opt + '/_opt/_variables/')]
      assert len(moments) >= 2 * count, opt
      assert opt + '/_opt/_iterations/.ATTRIBUTES/VARIABLE_VALUE' in names
    assert any(n.startswith('metrics/') for n in names)
    assert any(n.startswith('step/') for n in names)


def _all_variables(agent):
  # Every variable reachable from the checkpoint, in a stable order.
  children = checkpoint.variables(agent)._trackable_children()
  variables = []
  for name in sorted(children):
    obj = children[name]
    if isinstance(obj, tf.Variable):
      variables.append(obj)
    elif isinstance(obj, dict):
      for key in sorted(obj):
        variables.extend(obj[key].variables)
    else:
      variables.extend(obj.variables)
  return variables


class TestPreprocess:

  def test_image_scaling_and_reward_clipping(self):
    config = dreamer.define_config()
    config.clip_rewards = 'tanh'
    obs = {'image': np.array([[0, 255]], np.uint8),
           'reward': np.array([2.0], np.float16),
           'action': np.array([[0.5]], np.float16)}
    out = dreamer.preprocess(obs, config)
    np.testing.assert_allclose(out['image'].numpy(), [[-0.5, 0.5]])
    np.testing.assert_allclose(out['reward'].numpy(), np.tanh([2.0]),
                               rtol=1e-6)
    assert out['action'].dtype == tf.float32
    assert out['image'].dtype == tf.float32

  def test_count_steps(self, tmp_path):
    config = tiny_config(tmp_path, action_repeat=2)
    write_episodes(tmp_path / 'episodes', 2, count=2, length=21)
    assert dreamer.count_steps(tmp_path / 'episodes', config) == 2 * 20 * 2


class TestPrecision:

  def test_policy_for_each_precision(self, tmp_path):
    config = dreamer.define_config()
    config.logdir = tmp_path  # Not a seeds.jsonl that happens to be in '.'.
    try:
      config.precision = 32
      assert runtime.set_precision(config) == 'float32'
      config.precision = 16
      expected = ('mixed_float16' if tf.config.list_physical_devices('GPU')
                  else runtime.cpu_policy_for_16())
      assert runtime.set_precision(config) == expected
      assert prec.global_policy().name == expected
    finally:
      prec.set_global_policy('float32')

  @pytest.mark.parametrize('flags, expected', [
      ('fpu avx2 avx512f avx512_bf16', 'mixed_bfloat16'),  # AMD EPYC (Zen 4).
      ('fpu avx512f amx_bf16 amx_tile', 'mixed_bfloat16'),  # Intel AMX.
      ('fpu avx2 avx512f', 'float32'),  # No native bfloat16.
      ('fpu avx2', 'float32')])
  def test_cpu_policy_follows_native_bfloat16(self, tmp_path, flags, expected):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text(
        f'processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\n'
        f'processor\t: 1\nflags\t\t: {flags}\n')
    assert runtime.cpu_policy_for_16(cpuinfo) == expected

  def test_cpu_policy_without_cpuinfo_is_float32(self, tmp_path):
    assert runtime.cpu_policy_for_16(tmp_path / 'missing') == 'float32'

  def test_train_step_under_mixed_bfloat16(self, tmp_path):
    prec.set_global_policy('mixed_bfloat16')
    try:
      agent, _ = make_agent(tmp_path, free_nats=0.0)
      assert agent._dynamics.initial(1)['deter'].dtype == tf.bfloat16
      assert agent._encode.get('h1', None).compute_dtype == 'bfloat16'
      assert_train_step_updates_everything(agent)
      obs = {'image': np.zeros((1, 64, 64, 3), np.uint8),
             'reward': np.zeros(1)}
      action, _ = agent(obs, np.array([True]))
      assert action.dtype == tf.float32
    finally:
      prec.set_global_policy('float32')


# Behaviour of the original that a train step's loss values alone do not pin
# down. Most tests run `_train` eagerly, with the networks' outputs recorded,
# and recompute the quantity in NumPy from those outputs.


class Recorder:
  """Stands in for a network and records each call's input and output."""

  def __init__(self, module):
    self.module = module
    self.calls = []

  def __call__(self, *args):
    out = self.module(*args)
    self.calls.append((args, out))
    return out

  def __getattr__(self, name):
    return getattr(self.module, name)


def snapshot(agent):
  variables = [v for vs in optimizer_variables(agent).values() for v in vs]
  variables += [v for o in (agent._model_opt, agent._actor_opt,
                            agent._value_opt) for v in o.variables]
  return [(v, v.numpy().copy()) for v in variables]


def restore(saved):
  for var, value in saved:
    var.assign(value)


def eager_step(agent, data, record=()):
  """One `_train` call run eagerly, with the named networks recorded."""
  originals = {name: getattr(agent, name) for name in record}
  for name in record:
    setattr(agent, name, Recorder(originals[name]))
  for metric in agent._metrics.values():
    metric.reset_state()
  try:
    with agent._strategy.scope():
      agent._strategy.run(agent._train, args=(data, False))
    recorders = {name: getattr(agent, name) for name in record}
  finally:
    for name, module in originals.items():
      setattr(agent, name, module)
  metrics = {k: float(v.result()) for k, v in agent._metrics.items()}
  return metrics, recorders


def imagined_calls(recorder, config):
  # Calls on imagined features: [horizon, batch x length, features].
  size = config.batch_size * (config.batch_length - int(config.pcont))
  return [(args, out) for args, out in recorder.calls
          if args[0].shape[:2] == (config.horizon, size)]


def numpy_lambda_return(reward, value, gamma, lambda_):
  """The λ-return by its recursion: reward[:-1], bootstrap value[-1]."""
  horizon = len(reward)
  returns = np.zeros_like(reward[:-1])
  last = value[-1]
  for t in reversed(range(horizon - 1)):
    last = reward[t] + gamma * ((1 - lambda_) * value[t + 1] + lambda_ * last)
    returns[t] = last
  return returns


@pytest.fixture(scope='module')
def eager(tmp_path_factory):
  """A small agent for eager steps: short horizon, batch and sequences."""
  agent, config = make_agent(
      tmp_path_factory.mktemp('eager'), free_nats=0.0, horizon=6,
      batch_length=8, batch_size=3)
  return agent, config, next(agent._dataset)


class TestActorAndValueLosses:

  @pytest.fixture(scope='class')
  def step(self, eager):
    agent, config, data = eager
    saved = snapshot(agent)
    metrics, rec = eager_step(agent, data, ('_reward', '_value'))
    after = snapshot(agent)
    restore(saved)
    reward = imagined_calls(rec['_reward'], config)
    value = imagined_calls(rec['_value'], config)
    return dict(metrics=metrics, reward=reward, value=value, saved=saved,
                after=after, agent=agent, config=config)

  def _returns_and_weights(self, step):
    config = step['config']
    reward = step['reward'][0][1].mode().numpy()
    value = step['value'][0][1].mode().numpy()
    returns = numpy_lambda_return(
        reward, value, config.discount, config.disclam)
    # cumprod([1, γ_0 … γ_{H-3}]): one weight per return, H - 1 of them.
    weights = config.discount ** np.arange(config.horizon - 1)[:, None]
    return returns, weights, value

  def test_heads_see_the_imagined_trajectory_once_each(self, step):
    # Reward once (actor loss); value twice (actor loss, value loss).
    assert len(step['reward']) == 1
    assert len(step['value']) == 2

  def test_actor_loss_is_the_discounted_lambda_return(self, step):
    returns, weights, _ = self._returns_and_weights(step)
    expected = -np.mean(weights * returns)
    assert step['metrics']['actor_loss'] == pytest.approx(expected, rel=1e-5)
    # Tells the pieces apart: no weights, reward[1:], or value[:-1] as the
    # bootstrap would each give another value.
    assert not np.isclose(-np.mean(returns), expected, rtol=1e-3)

  def test_value_loss_regresses_the_returns(self, step):
    returns, weights, value = self._returns_and_weights(step)
    logprob = -0.5 * (value[:-1] - returns) ** 2 - 0.5 * np.log(2 * np.pi)
    expected = -np.mean(weights * logprob)
    assert step['metrics']['value_loss'] == pytest.approx(expected, rel=1e-5)

  def test_value_target_is_not_differentiated(self, step):
    agent = step['agent']
    returns, weights, _ = self._returns_and_weights(step)
    feat = step['value'][1][0][0]
    current = snapshot(agent)
    restore(step['saved'])
    try:
      with tf.GradientTape() as tape:
        pred = agent._value(feat).mode()[:-1]
        # The target as a constant: only the prediction carries gradients.
        loss = -tf.reduce_mean(weights * (
            -0.5 * (pred - returns) ** 2 - 0.5 * np.log(2 * np.pi)))
      grads = tape.gradient(loss, agent._value.variables)
      norm = float(tf.linalg.global_norm(grads))
    finally:
      restore(current)
    assert step['metrics']['value_grad_norm'] == pytest.approx(norm, rel=1e-4)

  def test_actor_gradient_flows_through_the_dynamics(self, step):
    # The actor sees only stopped features; its loss reaches it only through
    # the actions fed to the dynamics.
    assert step['metrics']['actor_grad_norm'] > 0


class TestOptimizersStayApart:

  @pytest.mark.parametrize('only', ['model', 'actor', 'value'])
  def test_each_loss_moves_only_its_own_variables(self, eager, only):
    agent, config, data = eager
    saved = snapshot(agent)
    optimizers = dict(
        model=agent._model_opt, actor=agent._actor_opt,
        value=agent._value_opt)
    rates = {k: o._opt.learning_rate.numpy() for k, o in optimizers.items()}
    try:
      for name, optimizer in optimizers.items():
        optimizer._opt.learning_rate.assign(1e-3 if name == only else 0.0)
      before = {k: [v.numpy().copy() for v in vs]
                for k, vs in optimizer_variables(agent).items()}
      eager_step(agent, data)
      for name, variables in optimizer_variables(agent).items():
        moved = any(not np.array_equal(v.numpy(), b)
                    for v, b in zip(variables, before[name]))
        assert moved == (name == only), name
    finally:
      restore(saved)
      for name, optimizer in optimizers.items():
        optimizer._opt.learning_rate.assign(rates[name])


class TestFreeNats:
  """div = max(mean KL over batch and time, free_nats), not the reverse."""

  @pytest.mark.parametrize('side', ['mean_above', 'mean_below'])
  def test_reduction_order(self, eager, monkeypatch, side):
    agent, config, data = eager
    saved = snapshot(agent)
    kl_divergence = tfd.kl_divergence
    seen = {}

    def record_and_set_bound(*args, **kwargs):
      # Eagerly, free_nats is read after the KL is known: a bound with
      # per-step KLs on both sides of it, and the mean on the side under test.
      kl = kl_divergence(*args, **kwargs)
      values = kl.numpy()
      if side == 'mean_above':
        bound = np.percentile(values, 25)
      else:
        bound = 0.5 * (values.mean() + values.max())
      config['free_nats'] = float(bound)
      seen.update(kl=values, bound=float(bound))
      return kl

    monkeypatch.setitem(config, 'free_nats', 0.0)
    monkeypatch.setattr(tfd, 'kl_divergence', record_and_set_bound)
    try:
      metrics, _ = eager_step(agent, data)
    finally:
      restore(saved)
    kl, bound = seen['kl'], seen['bound']
    assert kl.min() < bound < kl.max()
    assert (kl.mean() > bound) == (side == 'mean_above')
    expected = max(kl.mean(), bound)
    assert metrics['div'] == pytest.approx(expected, rel=1e-5)
    # The other order would give a clearly different value.
    assert not np.isclose(np.maximum(kl, bound).mean(), expected, rtol=1e-3)


class TestImagineAhead:

  def _post(self, agent, config, batch=3, length=5):
    embed = agent._encode({'image': tf.zeros((batch, length, 64, 64, 3))})
    action = tf.random.uniform((batch, length, 2), -1, 1)
    return agent._dynamics.observe(embed, action)[0]

  def test_starts_from_every_posterior(self, eager):
    agent, config, _ = eager
    post = self._post(agent, config)
    feat = agent._imagine_ahead(post)
    # [horizon, batch x length, stoch + deter]: the start states themselves
    # are not among the imagined features.
    assert feat.shape == (config.horizon, 3 * 5, 8 + 32)
    start = tf.reshape(agent._dynamics.get_feat(post), (15, -1))
    assert not np.any(np.all(np.isclose(feat[0], start), -1))

  def test_last_step_dropped_with_pcont(self, eager, monkeypatch):
    agent, config, _ = eager
    post = self._post(agent, config)
    monkeypatch.setitem(config, 'pcont', True)
    feat = agent._imagine_ahead(post)
    assert feat.shape == (config.horizon, 3 * 4, 8 + 32)

  def test_actor_input_is_stopped(self, eager):
    agent, config, _ = eager
    post = self._post(agent, config)
    actor = agent._actor
    agent._actor = Recorder(actor)
    try:
      with tf.GradientTape(persistent=True) as tape:
        tape.watch(post['stoch'])
        feat = agent._imagine_ahead(post)
      inputs = [args[0] for args, _ in agent._actor.calls]
    finally:
      agent._actor = actor
    assert len(inputs) == config.horizon
    for x in inputs:
      grad = tape.gradient(x, post['stoch'])
      assert grad is None or not np.any(grad.numpy())
    # The dynamics path itself is differentiable.
    assert np.any(tape.gradient(feat, post['stoch']).numpy())


class TestZeroPrefillAndPretrain:

  @pytest.mark.parametrize('flag', ['--prefill', '--pretrain'])
  def test_zero_is_accepted(self, flag, tmp_path):
    config = cli.parse_args(
        dreamer.define_config, tools.args_type,
        ['--logdir', str(tmp_path), '--task', 'dmc_cartpole_balance', flag,
         '0'])
    cli.validate(config)  # Raises on a refused value.
    assert getattr(config, flag[2:]) == 0


class TestSchedule:
  """Pretrain once, then train_steps every train_every frames; log_every.

  Without the open-loop GIF: its own trace of the train step made these
  tests take 195 s here, against 92 s without.
  """

  @pytest.fixture(scope='class')
  def built(self, tmp_path_factory):
    logdir = tmp_path_factory.mktemp('schedule')
    agent, config = make_agent(
        logdir, pretrain=3, train_steps=2, train_every=100, log_every=300,
        log_images=False)
    prefix = str(logdir / 'ckpt')
    checkpoint.variables(agent).write(prefix)
    return agent, config, logdir, prefix

  @staticmethod
  def drive(agent, calls, monkeypatch):
    """Acting steps of one env; returns (step, updates, logged) per call."""
    updates, logs = [], []
    train = agent.train
    monkeypatch.setattr(agent, 'train', lambda *args: (
        updates.append(1), train(*args))[1])
    monkeypatch.setattr(agent, '_write_summaries', lambda: logs.append(1))
    obs = {'image': np.zeros((1, 64, 64, 3), np.uint8), 'reward': np.zeros(1)}
    trace, state = [], None
    for _ in range(calls):
      step = int(agent._step.numpy())
      _, state = agent(obs, np.array([state is None]), state)
      trace.append((step, len(updates), len(logs)))
    return trace

  def test_pretrain_then_every_train_every_frames(
      self, built, monkeypatch, capsys):
    agent, config, _, _ = built
    monkeypatch.setenv('DREAMER_STATUS_EVERY', '0')  # A line every update.
    trace = self.drive(agent, 160, monkeypatch)  # 2 frames a call.
    out = capsys.readouterr().out
    assert re.search(r'^\[training\] updates 2/3 \| [\d.]+ s/update \| '
                     r'ETA \d:\d\d:\d\d$', out, re.M), out
    assert '[training] updates 1/2 ' in out
    start = trace[0][0]
    assert trace[0][1:] == (3, 1)  # Pretrain and a log in the first call.
    for step, updates, logs in trace:
      phases = (step - start) // config.train_every
      assert updates == 3 + 2 * phases, (step, updates)
      assert logs == 1 + (step - start) // config.log_every, (step, logs)

  def test_a_stop_inside_pretraining_resumes_its_rest(
      self, built, tmp_path, monkeypatch):
    _, config, logdir, _ = built
    agent, _ = make_agent(
        tmp_path, pretrain=5, train_steps=2, train_every=100, log_every=300,
        log_images=False)
    # As if stopped after 1 of the 5 pretraining updates of the first call.
    first = self.drive(agent, 1, monkeypatch)
    assert first[0][1] == 5
    monkeypatch.setattr(progress.Phase, 'left', 4)
    prefix = checkpoint.variables(agent).write(str(tmp_path / 'inside'))
    monkeypatch.setattr(progress.Phase, 'left', 0)
    resumed, _ = make_agent(
        tmp_path / 'resumed', pretrain=5, train_steps=2, train_every=100,
        log_every=300, log_images=False)
    monkeypatch.setattr(progress.Phase, 'resumed', 0)  # Undone at the end.
    resumed._step.assign(agent._step.numpy() - 2)  # The stored frames.
    resumed.load(prefix)
    trace = self.drive(resumed, 1, monkeypatch)
    # The pretraining's 4 updates left: not a later phase's train_steps (2,
    # as before), nor those minus the one done (1).
    assert trace[0][1] == 4
    assert progress.Phase.resumed == 0

  def test_no_pretrain_after_a_restore(self, built, tmp_path, monkeypatch):
    _, config, logdir, prefix = built
    agent, _ = make_agent(
        tmp_path, pretrain=3, train_steps=2, train_every=100, log_every=300,
        log_images=False)
    agent.load(prefix)
    trace = self.drive(agent, 1, monkeypatch)
    assert trace[0][1] == config.train_steps


class TestLoadDataset:

  def test_wiring(self, tmp_path, monkeypatch):
    config = tiny_config(tmp_path, train_steps=3, batch_size=4,
                         batch_length=5, seed=7, dataset_balance=True)
    write_episodes(tmp_path / 'episodes', 2, count=5, length=11)
    calls = []
    load = tools.load_episodes

    def spy(*args, **kwargs):
      calls.append(args)
      return load(*args, **kwargs)

    monkeypatch.setattr(tools, 'load_episodes', spy)
    dataset = dreamer.load_dataset(tmp_path / 'episodes', config)
    # Every batch is whole: the remainder is dropped, so shapes are static.
    assert dataset.element_spec['image'].shape[:2] == (4, None)
    batch = next(iter(dataset))
    assert batch['image'].shape == (4, 5, 64, 64, 3)
    # The replay rescans the folder every train_steps chunks, with the seed.
    assert calls[-1] == (
        tmp_path / 'episodes', 3, 5, True, 7)

  def test_same_seed_same_chunks(self, tmp_path):
    write_episodes(tmp_path / 'episodes', 2, count=5, length=11)

    def take(seed):
      config = tiny_config(tmp_path, seed=seed, batch_size=2, batch_length=4)
      dataset = dreamer.load_dataset(tmp_path / 'episodes', config)
      return np.stack([b['action'].numpy() for b, _ in zip(dataset, range(6))])

    np.testing.assert_array_equal(take(1), take(1))
    assert not np.array_equal(take(1), take(2))


class TestEvaluationNoise:

  def test_no_noise_and_no_expl_metric_in_evaluation(self, continuous):
    agent, config = continuous
    amount = agent._metrics['expl_amount']
    amount.reset_state()
    action = tf.fill((500, 2), 0.5)
    out = agent._exploration(action, False)
    np.testing.assert_array_equal(out.numpy(), action.numpy())
    assert float(amount.count.numpy()) == 0

  def test_eval_noise(self, continuous, monkeypatch):
    agent, config = continuous
    monkeypatch.setitem(config, 'eval_noise', 0.1)
    amount = agent._metrics['expl_amount']
    amount.reset_state()
    out = agent._exploration(tf.zeros((4000, 2)), False).numpy()
    assert 0.09 < np.std(out) < 0.11  # Normal(0, 0.1), not expl_amount 0.3.
    assert float(amount.count.numpy()) == 0

  def test_completely_random(self, continuous, monkeypatch):
    agent, config = continuous
    monkeypatch.setitem(config, 'expl', 'completely_random')
    out = agent._exploration(tf.fill((4000, 2), 0.9), True).numpy()
    assert np.all(np.abs(out) <= 1)
    # Uniform on [-1, 1] whatever the policy chose: mean 0, std 1/sqrt(3).
    assert abs(out.mean()) < 0.05
    assert abs(out.std() - 3 ** -0.5) < 0.03


class TestLogScalars:

  def test_off_logs_what_the_original_logs(self, tmp_path):
    agent, config = make_agent(tmp_path, log_scalars=False)
    for _ in range(2):
      agent._should_log._last = None  # Due now.
      agent._should_train._last = None
      agent({'image': np.zeros((1, 64, 64, 3), np.uint8),
             'reward': np.zeros(1)}, np.array([True]))
    lines = [json.loads(l) for l in
             (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    assert lines and all(
        set(line) <= {'step', 'expl_amount', 'fps'} for line in lines)


class TestEnsureOneEpisode:

  def test_empty_replay_gets_one_random_episode(self, tmp_path, capsys):
    config = tiny_config(tmp_path, task='dmc_cartpole_balance', prefill=0,
                         time_limit=100)
    datadir = tmp_path / 'episodes'
    writer = tf.summary.create_file_writer(str(tmp_path))
    env = dreamer.make_async_env(config, writer, 'train', datadir, True, 0)
    try:
      space = env.action_space
      agent = lambda o, d, _: ([space.sample() for _ in d], None)
      collect = lambda: tools.simulate(agent, [env], episodes=1)
      storage.ensure_one_episode(datadir, collect)
      assert tools.count_episodes(datadir) == (1, 50)
      assert 'collecting one random episode' in capsys.readouterr().out
      # A replay that holds an episode is left alone.
      storage.ensure_one_episode(datadir, collect)
      assert tools.count_episodes(datadir) == (1, 50)
    finally:
      env.close()
