import errno
import io
import os
import pathlib
import signal
import threading

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from tensorboard.backend.event_processing import event_accumulator
from tf_keras import mixed_precision as prec

import runs
import tools
from support import progress
from support import storage

tfd = tfp.distributions


def reference_lambda_return(reward, value, pcont, bootstrap, lambda_):
  # target_t = r_t + g_t * ((1 - lambda) * v_{t+1} + lambda * target_{t+1}),
  # with v_T and target_T both the bootstrap, written as a plain loop.
  horizon = len(reward)
  targets = np.zeros_like(reward)
  next_target = bootstrap
  for t in reversed(range(horizon)):
    next_value = value[t + 1] if t + 1 < horizon else bootstrap
    targets[t] = reward[t] + pcont[t] * (
        (1 - lambda_) * next_value + lambda_ * next_target)
    next_target = targets[t]
  return targets


class TestLambdaReturn:

  def _inputs(self, horizon=7, batch=5, seed=0):
    rng = np.random.RandomState(seed)
    reward = rng.randn(horizon, batch).astype(np.float32)
    value = rng.randn(horizon, batch).astype(np.float32)
    pcont = rng.uniform(0.5, 1.0, (horizon, batch)).astype(np.float32)
    bootstrap = rng.randn(batch).astype(np.float32)
    return reward, value, pcont, bootstrap

  @pytest.mark.parametrize('lambda_', [0.0, 0.5, 0.95, 1.0])
  def test_matches_recursion(self, lambda_):
    reward, value, pcont, bootstrap = self._inputs()
    ours = tools.lambda_return(
        tf.constant(reward), tf.constant(value), tf.constant(pcont),
        tf.constant(bootstrap), lambda_, axis=0)
    ref = reference_lambda_return(reward, value, pcont, bootstrap, lambda_)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5, atol=1e-5)

  def test_time_axis_one(self):
    reward, value, pcont, bootstrap = self._inputs()
    ours = tools.lambda_return(
        tf.constant(reward.T), tf.constant(value.T), tf.constant(pcont.T),
        tf.constant(bootstrap), 0.95, axis=1)
    ref = reference_lambda_return(reward, value, pcont, bootstrap, 0.95)
    np.testing.assert_allclose(ours.numpy(), ref.T, rtol=1e-5, atol=1e-5)

  def test_lambda_zero_is_one_step_target(self):
    reward = np.array([1.0, 2.0, 3.0], np.float32)
    value = np.array([10.0, 20.0, 30.0], np.float32)
    ours = tools.lambda_return(
        tf.constant(reward), tf.constant(value), 0.5, tf.constant(40.0),
        0.0, axis=0)
    # r_t + 0.5 * v_{t+1}, the last one bootstrapped with 40.
    np.testing.assert_allclose(ours.numpy(), [11.0, 17.0, 23.0])

  def test_lambda_one_is_discounted_monte_carlo(self):
    reward = np.array([1.0, 2.0, 3.0], np.float32)
    value = np.array([10.0, 20.0, 30.0], np.float32)
    ours = tools.lambda_return(
        tf.constant(reward), tf.constant(value), 0.5, tf.constant(40.0),
        1.0, axis=0)
    # 3 + .5 * 40 = 23; 2 + .5 * 23 = 13.5; 1 + .5 * 13.5 = 7.75.
    np.testing.assert_allclose(ours.numpy(), [7.75, 13.5, 23.0])

  def test_scalar_pcont_equals_tensor_pcont(self):
    reward, value, _, bootstrap = self._inputs()
    args = (tf.constant(reward), tf.constant(value))
    a = tools.lambda_return(*args, 0.9, tf.constant(bootstrap), 0.7, axis=0)
    b = tools.lambda_return(
        *args, tf.fill(reward.shape, 0.9), tf.constant(bootstrap), 0.7, 0)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


class TestStaticScan:

  def test_forward_nested(self):
    inputs = (tf.constant([1.0, 2.0, 3.0]), {'b': tf.constant([[1.0], [0.0],
                                                               [2.0]])})
    start = {'sum': tf.constant(0.0), 'pair': (tf.constant([0.0]),
                                               tf.constant(1.0))}

    def fn(prev, inp):
      a, nested = inp
      return {'sum': prev['sum'] + a,
              'pair': (prev['pair'][0] + nested['b'], prev['pair'][1] * 2)}

    out = tools.static_scan(fn, inputs, start)
    np.testing.assert_allclose(out['sum'].numpy(), [1, 3, 6])
    np.testing.assert_allclose(out['pair'][0].numpy(), [[1], [1], [3]])
    np.testing.assert_allclose(out['pair'][1].numpy(), [2, 4, 8])

  def test_reverse_keeps_time_order(self):
    inputs = tf.constant([1.0, 2.0, 3.0])
    out = tools.static_scan(
        lambda agg, x: agg + x, inputs, tf.constant(0.0), reverse=True)
    # Suffix sums, stored at the index they belong to.
    np.testing.assert_allclose(out.numpy(), [6, 5, 3])

  def test_gradient_stacks_instead_of_summing_slices(self):
    # The gradient of T slices x[t] would be T tensors the size of x, summed.
    @tf.function
    def grad(x):
      with tf.GradientTape() as tape:
        tape.watch(x)
        out = tools.static_scan(lambda agg, x: agg * 0.5 + x, x, tf.zeros(3))
        loss = tf.reduce_sum(out * tf.range(1.0, 5.0)[:, None])
      return tape.gradient(loss, x)

    graph = grad.get_concrete_function(tf.TensorSpec((4, 3))).graph
    ops = graph.get_operations()
    # No per-step gradient of x's full size (slice, strided slice or pad)
    # and no sum over the steps: one stack gathers them.
    types = {op.type for op in ops}
    assert not types & {'StridedSliceGrad', 'SliceGrad', 'Pad'}, types
    assert max(len(op.inputs) for op in ops if op.type == 'AddN') < 4
    assert 'Pack' in types, types
    # Output t sums 0.5 ** (t - s) x_s; weighted by t + 1 and summed.
    expected = [sum((t + 1) * 0.5 ** (t - s) for t in range(s, 4))
                for s in range(4)]
    np.testing.assert_allclose(
        grad(tf.ones((4, 3))).numpy(), np.tile(expected, (3, 1)).T,
        rtol=1e-6)


class TestTanhBijector:

  def test_inverse_of_forward(self):
    x = tf.linspace(-5.0, 5.0, 101)
    bijector = tools.TanhBijector()
    np.testing.assert_allclose(
        bijector.inverse(bijector.forward(x)).numpy(), x.numpy(), atol=2e-3)

  def test_log_det_jacobian(self):
    x = np.linspace(-5.0, 5.0, 101).astype(np.float64)
    ours = tools.TanhBijector().forward_log_det_jacobian(
        tf.constant(x), event_ndims=0)
    expected = np.log(1 - np.tanh(x) ** 2)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-6, atol=1e-9)

  def test_inverse_is_finite_at_the_bounds(self):
    y = tf.constant([-1.0, 1.0])
    assert np.all(np.isfinite(tools.TanhBijector().inverse(y).numpy()))


class TestSampleDist:

  def _dist(self, mean, std):
    dist = tfd.Normal(tf.constant(mean), tf.constant(std))
    dist = tfd.TransformedDistribution(dist, tools.TanhBijector())
    return tools.SampleDist(tfd.Independent(dist, 1))

  def test_mode_in_support_and_near_tanh_of_mean(self):
    mean = np.array([[-1.0, 0.0, 0.5], [2.0, -0.3, 0.1]], np.float32)
    dist = self._dist(mean, np.full_like(mean, 0.01))
    mode = dist.mode().numpy()
    assert mode.shape == mean.shape
    assert np.all(np.abs(mode) <= 1)
    np.testing.assert_allclose(mode, np.tanh(mean), atol=0.03)

  def test_mode_picks_per_batch_entry(self):
    # Opposite means: one shared index for the batch would fail one of them.
    mean = np.array([[3.0], [-3.0]], np.float32)
    mode = self._dist(mean, np.full_like(mean, 0.05)).mode().numpy()
    assert mode[0, 0] > 0.9 and mode[1, 0] < -0.9

  def test_mean_and_entropy_shapes(self):
    dist = self._dist(np.zeros((4, 2), np.float32), np.ones((4, 2), np.float32))
    assert dist.mean().shape == (4, 2)
    assert dist.entropy().shape == (4,)


class TestOneHotDist:

  def test_sample_is_one_hot(self):
    dist = tools.OneHotDist(tf.random.normal((16, 5)))
    sample = dist.sample().numpy()
    assert sample.shape == (16, 5)
    np.testing.assert_allclose(sample.sum(-1), 1, atol=1e-6)
    assert set(np.unique(np.round(sample, 6))) <= {0.0, 1.0}
    assert dist.sample(3).shape == (3, 16, 5)

  def test_straight_through_gradient(self):
    logits = tf.Variable(tf.random.normal((4, 3)))
    weights = tf.constant([[1.0, 2.0, 3.0]])
    with tf.GradientTape() as tape:
      sample = tools.OneHotDist(logits).sample()
      loss = tf.reduce_sum(sample * weights)
    grad = tape.gradient(loss, logits)
    assert grad is not None
    # The gradient is that of sum(probs * weights) with respect to the logits.
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.nn.softmax(logits) * weights)
    np.testing.assert_allclose(
        grad.numpy(), tape.gradient(loss, logits).numpy(), atol=1e-6)

  def test_mode_and_log_prob(self):
    logits = tf.constant([[0.0, 5.0, 0.0]])
    dist = tools.OneHotDist(logits)
    np.testing.assert_allclose(dist.mode().numpy(), [[0, 1, 0]])
    expected = np.log(np.exp(5) / (2 + np.exp(5)))
    np.testing.assert_allclose(
        dist.log_prob(tf.constant([[0.0, 1.0, 0.0]])).numpy(), [expected],
        rtol=1e-5)


class TestAdam:

  def _setup(self, clip):
    module = tools.Module()
    module.get('dense', tf.keras.layers.Dense, 1)(tf.zeros((1, 3)))
    return module, tools.Adam('test', [module], 0.1, clip=clip)

  def test_returns_norm_before_clipping(self):
    module, opt = self._setup(clip=1e-3)
    x = tf.constant([[100.0, 200.0, 300.0]])
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(module.get('dense', None)(x))
    before = [v.numpy().copy() for v in module.variables]
    norm = opt(tape, loss)
    # d loss / d kernel = x, d loss / d bias = 1.
    expected = np.sqrt(100 ** 2 + 200 ** 2 + 300 ** 2 + 1)
    np.testing.assert_allclose(norm.numpy(), expected, rtol=1e-5)
    after = [v.numpy() for v in module.variables]
    assert all(not np.allclose(a, b) for a, b in zip(before, after))

  def test_weight_decay_shrinks_matching_variables(self):
    module = tools.Module()
    layer = module.get('dense', tf.keras.layers.Dense, 1)
    layer(tf.zeros((1, 3)))
    opt = tools.Adam('test', [module], 0.0, wd=0.5, wdpattern=r'kernel')
    layer.kernel.assign(tf.ones((3, 1)))
    layer.bias.assign(tf.ones((1,)))
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(layer(tf.zeros((1, 3))))
    tf.distribute.get_strategy()  # Default strategy: merge_call is immediate.
    opt(tape, loss)
    np.testing.assert_allclose(layer.kernel.numpy(), 0.5)
    np.testing.assert_allclose(layer.bias.numpy(), 1.0)


@pytest.fixture
def float16_policy():
  """Keras' mixed_float16, the GPU's policy, forced on the CPU."""
  before = prec.global_policy()
  prec.set_global_policy('mixed_float16')
  yield
  prec.set_global_policy(before)


class TestLossScale:
  """tools.Adam's dynamic loss scaling under mixed_float16, as the original's.

  The input sets the gradient: d loss / d kernel = x times the loss scale,
  computed in float16, so |x| = 100 overflows at 2**15 (3.3e6 > 65504) and
  |x| = 1 does not.
  """

  def _setup(self):
    module = tools.Module()
    module.get('dense', tf.keras.layers.Dense, 1)(tf.zeros((1, 3)))
    return module, tools.Adam('test', [module], 0.1)

  def _step(self, module, opt, x):
    with tf.GradientTape() as tape:
      out = module.get('dense', None)(tf.convert_to_tensor(x, tf.float32)[None])
      loss = tf.cast(tf.reduce_sum(out), tf.float32)
    return opt(tape, loss)

  def _state(self, module, opt):
    return dict(
        weights=[v.numpy().copy() for v in module.variables],
        moments=[v.numpy().copy() for v in opt.variables
                 if 'iteration' not in v.name],
        iterations=int(opt._opt.iterations.numpy()),
        scale=float(opt._opt.loss_scale.numpy()))

  def test_dynamic_with_the_originals_settings(self, float16_policy):
    _, opt = self._setup()
    assert isinstance(opt._opt, prec.LossScaleOptimizer)
    assert opt._opt.dynamic
    assert opt._opt.initial_scale == 2 ** 15
    assert opt._opt.dynamic_growth_steps == 2000

  def test_no_loss_scale_in_float32(self):
    _, opt = self._setup()
    assert not isinstance(opt._opt, prec.LossScaleOptimizer)

  @pytest.mark.parametrize('traced', [False, True])
  def test_overflow_skips_the_update_and_halves_the_scale(
      self, float16_policy, traced):
    module, opt = self._setup()
    step = tf.function(self._step) if traced else self._step
    opt.build()
    before = self._state(module, opt)
    norm = step(module, opt, [100.0, 1.0, 1.0])
    assert not np.isfinite(norm.numpy())
    skipped = self._state(module, opt)
    for key in ('weights', 'moments'):
      for a, b in zip(before[key], skipped[key]):
        np.testing.assert_array_equal(a, b, err_msg=key)
    assert skipped['scale'] == 2 ** 14
    # TF 2.2 did not count a skipped update; tf-keras alone would give 1.
    assert skipped['iterations'] == 0
    norm = step(module, opt, [1.0, 1.0, 1.0])
    assert np.isfinite(norm.numpy())
    applied = self._state(module, opt)
    assert applied['scale'] == 2 ** 14
    assert applied['iterations'] == 1
    # Adam's first step moves every element by about the learning rate.
    for a, b in zip(skipped['weights'], applied['weights']):
      np.testing.assert_allclose(a - b, 0.1, rtol=1e-3)

  def test_scale_doubles_after_2000_finite_steps(self, float16_policy):
    module, opt = self._setup()
    step = tf.function(self._step)
    opt.build()
    # 1998 finite steps so far; the period's last two decide.
    opt._opt.dynamic_counter.assign(1998)
    step(module, opt, [1.0, 1.0, 1.0])
    assert float(opt._opt.loss_scale.numpy()) == 2 ** 15
    step(module, opt, [1.0, 1.0, 1.0])
    assert float(opt._opt.loss_scale.numpy()) == 2 ** 16
    assert int(opt._opt.dynamic_counter.numpy()) == 0
    assert int(opt._opt.iterations.numpy()) == 2

  def test_skipped_on_every_replica_when_one_overflows(self, float16_policy):
    # Without collective ops: their instance keys would clash with those of
    # another two-replica strategy that ran earlier in this process.
    strategy = tf.distribute.MirroredStrategy(
        ['/cpu:0', '/cpu:1'],
        cross_device_ops=tf.distribute.ReductionToOneDevice())
    with strategy.scope():
      module, opt = self._setup()
      opt.build()
    weights = [v.numpy().copy() for v in module.variables]
    inputs = iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(
            [[100.0, 1.0, 1.0], [1.0, 1.0, 1.0]]).batch(2)))

    @tf.function
    def step(x):
      def replica(x):
        return self._step(module, opt, x[0])
      return strategy.run(replica, args=(x,))

    step(next(inputs))
    for a, b in zip(weights, module.variables):
      np.testing.assert_array_equal(a, b.numpy())
    assert float(opt._opt.loss_scale.numpy()) == 2 ** 14
    assert int(opt._opt.iterations.numpy()) == 0

  def test_scale_and_count_are_checkpointed(self, float16_policy, tmp_path):
    module, opt = self._setup()
    opt.build()
    self._step(module, opt, [100.0, 1.0, 1.0])
    self._step(module, opt, [1.0, 1.0, 1.0])
    path = tf.train.Checkpoint(opt=opt).write(str(tmp_path / 'ckpt'))
    module, restored = self._setup()
    restored.build()
    tf.train.Checkpoint(opt=restored).read(path).assert_consumed()
    assert float(restored._opt.loss_scale.numpy()) == 2 ** 14
    assert int(restored._opt.dynamic_counter.numpy()) == 1
    assert int(restored._opt.iterations.numpy()) == 1


class TestSchedules:

  def test_every(self):
    every = tools.Every(10)
    assert [every(s) for s in (0, 5, 10, 15, 20, 21, 35)] == [
        True, False, True, False, True, False, True]

  def test_once(self):
    once = tools.Once()
    assert [once(), once(), once()] == [True, False, False]


class TestArgsType:

  def test_parsers(self):
    assert tools.args_type(True)('False') is False
    assert tools.args_type(True)('True') is True
    assert tools.args_type(3)('1e4') == 10000
    assert tools.args_type(3)('7') == 7
    assert tools.args_type(pathlib.Path('.'))('~/x') == pathlib.Path(
        os.path.expanduser('~/x'))
    assert tools.args_type(0.5)('0.25') == 0.25

  def test_bad_bool_raises(self):
    with pytest.raises(ValueError):
      tools.args_type(True)('yes')


def make_episode(length, seed=0, action_dim=2):
  rng = np.random.RandomState(seed)
  return {
      'image': rng.randint(0, 255, (length, 8, 8, 3)).astype(np.uint8),
      'action': rng.randn(length, action_dim).astype(np.float16),
      'reward': rng.randn(length).astype(np.float16),
      'discount': np.ones(length, np.float16),
      'step': np.arange(length, dtype=np.int32),
  }


class TestEpisodeStorage:

  def test_round_trip_bit_identical(self, tmp_path):
    episode = make_episode(11)
    filename, = runs.save_episodes(tmp_path, [episode])
    assert filename.parent == tmp_path
    timestamp, identifier, length = filename.stem.split('-')
    assert len(timestamp) == 15 and timestamp[8] == 'T'
    assert len(identifier) == 32 and int(identifier, 16) >= 0
    assert length == '11'
    loaded = next(tools.load_episodes(tmp_path, 1))
    assert set(loaded) == set(episode)
    for key in episode:
      assert loaded[key].dtype == episode[key].dtype
      assert np.array_equal(loaded[key], episode[key])
    # Compressed: the npz holds deflated members.
    with np.load(filename) as f:
      assert f.zip.infolist()[0].compress_type == 8

  def test_count_episodes(self, tmp_path):
    tools.save_episodes(tmp_path, [make_episode(11), make_episode(21)])
    assert tools.count_episodes(tmp_path) == (2, 30)

  def test_chunks_have_length_and_valid_offsets(self, tmp_path):
    tools.save_episodes(tmp_path, [make_episode(30, seed=1),
                                   make_episode(40, seed=2)])
    loader = tools.load_episodes(tmp_path, 50, length=8, seed=3)
    for _ in range(200):
      chunk = next(loader)
      assert all(len(v) == 8 for v in chunk.values())
      steps = chunk['step']
      assert np.array_equal(steps, np.arange(steps[0], steps[0] + 8))
      assert steps[0] >= 0 and steps[-1] < 40

  def test_uniform_over_episodes_and_balance(self, tmp_path):
    tools.save_episodes(tmp_path, [make_episode(100)])
    starts = [next_chunk['step'][0] for next_chunk in _take(
        tools.load_episodes(tmp_path, 100, length=10, seed=0), 2000)]
    balanced = [next_chunk['step'][0] for next_chunk in _take(
        tools.load_episodes(tmp_path, 100, length=10, balance=True, seed=0),
        2000)]
    # Uniform over [0, 89]: mean 44.5, never the last start 90.
    assert 42 < np.mean(starts) < 47 and max(starts) == 89
    # min(uniform [0, 99], 90): mean (0 + ... + 89 + 10 * 90) / 100 = 49.05,
    # and about a tenth of the chunks end exactly at the episode's end.
    assert 46.5 < np.mean(balanced) < 51.5
    assert 0.07 < np.mean(np.array(balanced) == 90) < 0.13

  def test_picks_up_new_files(self, tmp_path):
    first = make_episode(20, seed=1)
    tools.save_episodes(tmp_path, [first])
    loader = tools.load_episodes(tmp_path, 5, length=4, seed=0)
    _take(loader, 5)  # One rescan's worth, all from the only episode.
    second = make_episode(20, seed=2)
    tools.save_episodes(tmp_path, [second])
    chunks = _take(loader, 100)
    sources = {
        id_ for c in chunks for id_, ep in ((1, first), (2, second))
        if any(np.array_equal(c['image'], ep['image'][i:i + 4])
               for i in range(16))}
    assert sources == {1, 2}

  def test_skips_short_episodes(self, tmp_path, capsys):
    tools.save_episodes(tmp_path, [make_episode(5), make_episode(30)])
    chunks = _take(tools.load_episodes(tmp_path, 20, length=10, seed=0), 20)
    assert all(len(c['reward']) == 10 for c in chunks)
    assert 'Skipped short episode' in capsys.readouterr().out

  def test_corrupt_files_reported_once_and_skipped(self, tmp_path, capsys):
    good, = runs.save_episodes(tmp_path, [make_episode(20)])
    truncated = tmp_path / '20200101T000000-aaaa-20.npz'
    truncated.write_bytes(good.read_bytes()[:300])
    garbage = tmp_path / '20200101T000000-bbbb-20.npz'
    garbage.write_bytes(b'not an npz file at all')
    loader = tools.load_episodes(tmp_path, 5, length=4, seed=0)
    chunks = _take(loader, 30)  # Several rescans.
    assert all(len(c['reward']) == 4 for c in chunks)
    out = capsys.readouterr().out
    assert out.count(truncated.name) == 1
    assert out.count(garbage.name) == 1

  def test_concurrent_reader_never_sees_partial_file(self, tmp_path):
    errors = []
    done = threading.Event()

    def write():
      for seed in range(40):
        tools.save_episodes(tmp_path, [make_episode(200, seed)])
      done.set()

    writer = threading.Thread(target=write)
    writer.start()
    seen = 0
    while not done.is_set() or seen < 40:
      for filename in tmp_path.glob('*.npz'):
        try:
          with np.load(filename) as f:
            assert len(f['reward']) == 200
        except Exception as e:  # pylint: disable=broad-except
          errors.append((filename.name, e))
      seen = len(list(tmp_path.glob('*.npz')))
    writer.join()
    assert not errors
    assert not list(tmp_path.glob('.*.tmp'))

  def test_disk_full_leaves_no_partial_file(self, tmp_path, monkeypatch):
    earlier, = runs.save_episodes(tmp_path, [make_episode(10)])
    content = earlier.read_bytes()

    def full(fd):
      raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(os, 'fsync', full)
    with pytest.raises(OSError, match='disk is full'):
      tools.save_episodes(tmp_path, [make_episode(10, seed=1)])
    assert sorted(tmp_path.iterdir()) == [earlier]
    assert earlier.read_bytes() == content

  def test_remove_partial_files(self, tmp_path):
    (tmp_path / '.x-1-10.npz.tmp').write_bytes(b'partial')
    keep, = runs.save_episodes(tmp_path, [make_episode(10)])
    removed = storage.remove_matching(tmp_path, '.*.tmp')
    assert [p.name for p in removed] == ['.x-1-10.npz.tmp']
    assert sorted(tmp_path.iterdir()) == [keep]


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


class CountingEnv:
  """An environment of fixed episode lengths, to check simulate's counting."""

  def __init__(self, length):
    self._length = length
    self._t = 0

  def reset(self, blocking=True):
    self._t = 0
    obs = {'image': np.zeros((2, 2, 3), np.uint8), 't': self._t}
    return obs if blocking else (lambda: obs)

  def step(self, action, blocking=True):
    self._t += 1
    obs = {'image': np.zeros((2, 2, 3), np.uint8), 't': self._t}
    result = (obs, 1.0, self._t >= self._length, {})
    return result if blocking else (lambda: result)


class TestSimulate:

  def test_counts_steps_and_episodes(self):
    envs = [CountingEnv(3), CountingEnv(5)]
    calls = []

    def agent(obs, done, state):
      calls.append(done.copy())
      return np.zeros((len(done), 1)), state

    step, episode, *_ = tools.simulate(agent, envs, episodes=3)
    assert episode >= 0
    assert len(calls) == 6  # Episodes end at 3 (env 0), 5 (env 1), 6 (env 0).

  def test_resumes_from_state(self):
    envs = [CountingEnv(4)]
    agent = lambda obs, done, state: (np.zeros((1, 1)), (state or 0) + 1)
    state = tools.simulate(agent, envs, steps=2)
    state = tools.simulate(agent, envs, steps=2, state=state)
    assert state[-1] == 4  # The agent state was carried over.

  def test_stop_is_checked_between_steps(self, monkeypatch):
    envs = [CountingEnv(100)]
    count = [0]

    def stop():
      if count[0] == 3:
        raise progress.Interrupted(signal.SIGTERM)

    def agent(obs, done, state):
      count[0] += 1
      return np.zeros((1, 1)), None

    monkeypatch.setattr(progress, 'poll', stop)
    with pytest.raises(progress.Interrupted):
      tools.simulate(agent, envs, steps=50)
    assert count[0] == 3


class TestSummaries:

  def test_video_summary_writes_gif(self, tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path))
    video = np.random.uniform(0, 1, (2, 5, 16, 16, 3)).astype(np.float32)
    with writer.as_default():
      tools.video_summary('agent/openl', video, step=7)
    writer.flush()
    acc = event_accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    image, = acc.Images('agent/openl/gif')
    assert image.step == 7
    assert image.encoded_image_string[:6] == b'GIF89a'
    # The frames hold the batch side by side (the proto's size fields are
    # the original's, which TensorBoard does not use to decode).
    import imageio.v3 as iio
    frames = iio.imread(
        io.BytesIO(image.encoded_image_string), extension='.gif', index=None)
    assert frames.shape[:3] == (5, 16, 32)

  def test_encode_gif_frames(self):
    import imageio.v3 as iio
    frames = np.random.randint(0, 255, (4, 8, 8, 1)).astype(np.uint8)
    content = tools.encode_gif(frames, fps=10)
    decoded = iio.imread(io.BytesIO(content), extension='.gif', index=None)
    assert len(decoded) == 4
