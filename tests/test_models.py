import collections

import numpy as np
import pytest
import tensorflow as tf

import models


def count(module):
  return sum(int(np.prod(v.shape)) for v in module.variables)


class TestParameterCounts:
  """The original architecture's counts for dmc_walker_walk (6 actions)."""

  @pytest.fixture(scope='class')
  def built(self):
    feat = tf.zeros((1, 230))
    encoder = models.ConvEncoder(32)
    embed = encoder({'image': tf.zeros((1, 64, 64, 3))})
    rssm = models.RSSM(30, 200, 200)
    post, _ = rssm.obs_step(rssm.initial(1), tf.zeros((1, 6)), embed)
    decoder = models.ConvDecoder(32)
    decoder(feat)
    reward = models.DenseDecoder((), 2, 400)
    reward(feat)
    value = models.DenseDecoder((), 3, 400)
    value(feat)
    actor = models.ActionDecoder(6, 4, 400)
    actor(feat)
    return dict(encoder=encoder, rssm=rssm, decoder=decoder, reward=reward,
                value=value, actor=actor, embed=embed, post=post)

  def test_parts(self, built):
    assert count(built['encoder']) == 690144
    assert count(built['rssm']) == 557920
    assert count(built['decoder']) == 3795555
    assert count(built['reward']) == 253201
    assert count(built['value']) == 413601
    assert count(built['actor']) == 578412

  def test_model_total(self, built):
    parts = ('encoder', 'rssm', 'decoder', 'reward')
    assert sum(count(built[k]) for k in parts) == 5296820

  def test_encoder_output(self, built):
    assert built['embed'].shape == (1, 1024)


class TestRSSM:

  def test_observe_and_imagine_shapes(self):
    rssm = models.RSSM(stoch=4, deter=8, hidden=8)
    embed = tf.random.normal((3, 5, 16))
    action = tf.random.normal((3, 5, 2))
    post, prior = rssm.observe(embed, action)
    for state in (post, prior):
      assert state['mean'].shape == (3, 5, 4)
      assert state['std'].shape == (3, 5, 4)
      assert state['stoch'].shape == (3, 5, 4)
      assert state['deter'].shape == (3, 5, 8)
      assert np.all(state['std'].numpy() >= 0.1)
    # The posterior keeps the prior's deterministic state.
    np.testing.assert_array_equal(post['deter'], prior['deter'])
    assert rssm.get_feat(post).shape == (3, 5, 12)
    start = {k: v[:, -1] for k, v in post.items()}
    imagined = rssm.imagine(tf.random.normal((3, 7, 2)), start)
    assert imagined['stoch'].shape == (3, 7, 4)
    assert imagined['deter'].shape == (3, 7, 8)

  @staticmethod
  def _noise(rssm, batch=64):
    # All entries share the same input, so only the noise differs.
    prior = rssm.img_step(rssm.initial(batch), tf.zeros((batch, 2)))
    post, _ = rssm.obs_step(prior, tf.zeros((batch, 2)), tf.zeros((batch, 5)))
    return [((s['stoch'] - s['mean']) / s['std']).numpy()
            for s in (prior, post)]

  def test_default_noise_is_shared_over_the_batch(self):
    # The original's sampler: one standard-normal vector per call.
    for noise in self._noise(models.RSSM(stoch=4, deter=8, hidden=8)):
      np.testing.assert_allclose(noise, np.repeat(noise[:1], 64, 0), atol=1e-5)
      assert np.std(noise[0]) > 0.1  # Still random over the units.

  def test_independent_noise_is_drawn_per_entry(self):
    rssm = models.RSSM(stoch=4, deter=8, hidden=8, noise='independent')
    for noise in self._noise(rssm):
      assert np.all(np.std(noise, 0) > 0.5)
      assert abs(np.mean(noise)) < 0.2

  def test_shared_noise_changes_between_calls(self):
    rssm = models.RSSM(stoch=4, deter=8, hidden=8)
    state, action = rssm.initial(2), tf.zeros((2, 2))
    first, second = [rssm.img_step(state, action) for _ in range(2)]
    noise = [((s['stoch'] - s['mean']) / s['std']).numpy()
             for s in (first, second)]
    assert np.abs(noise[0][0] - noise[1][0]).max() > 1e-3

  def test_initial_state_is_zero(self):
    state = models.RSSM(stoch=4, deter=8).initial(2)
    for value in state.values():
      assert not np.any(value.numpy())


class TestHeads:

  def test_conv_decoder_distribution(self):
    decoder = models.ConvDecoder(8)
    dist = decoder(tf.zeros((2, 3, 10)))
    assert dist.event_shape == (64, 64, 3)
    assert dist.batch_shape == (2, 3)
    # A unit-variance Normal over the pixels.
    mean = dist.mode()
    x = mean + 1.0
    expected = -0.5 * 64 * 64 * 3 * (1 + np.log(2 * np.pi))
    np.testing.assert_allclose(dist.log_prob(x).numpy(), expected, rtol=1e-5)

  def test_conv_layers_take_their_faster_forms(self):
    # support/layers.py: the decoder's first layer as a matmul, its last as
    # a sub-pixel convolution, the encoder's last weight gradient from
    # patches. Same numbers (test_layers.py); only the ops differ.
    encoder, decoder = models.ConvEncoder(4), models.ConvDecoder(4)

    def op_types(fn, *shapes):
      graph = tf.function(fn).get_concrete_function(
          *[tf.TensorSpec(s) for s in shapes]).graph
      return collections.Counter(op.type for op in graph.get_operations())

    def encoder_grads(image):
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(encoder({'image': image}))
      return tape.gradient(loss, encoder.variables)

    encoder_grads(tf.zeros((2, 64, 64, 3)))
    types = op_types(encoder_grads, (2, 64, 64, 3))
    assert types['ExtractImagePatches'] == 1, types
    types = op_types(lambda feat: decoder(feat).mean(), (2, 10))
    assert types['DepthToSpace'] == 1, types
    # Only h3 and h4 are tf_keras's transposed convolutions.
    assert types['Conv2DBackpropInput'] == 2, types

  def test_dense_decoder_binary(self):
    head = models.DenseDecoder((), 3, 16, 'binary')
    dist = head(tf.zeros((4, 5)))
    assert dist.batch_shape == (4,)
    assert np.all((dist.mean().numpy() > 0) & (dist.mean().numpy() < 1))

  def test_action_decoder_init_std(self):
    actor = models.ActionDecoder(3, 2, 16, init_std=5.0)
    dist = actor(tf.zeros((2, 7)))
    # Zero features: pre-activation outputs are the zero-initialized biases,
    # so std = softplus(raw_init_std) + 1e-4 = 5.0001 and the mean is 0.
    base = dist._dist.distribution.distribution
    np.testing.assert_allclose(base.stddev().numpy(), 5.0001, rtol=1e-5)
    np.testing.assert_allclose(base.mean().numpy(), 0.0, atol=1e-6)
    sample = dist.sample().numpy()
    assert sample.shape == (2, 3) and np.all(np.abs(sample) <= 1)

  def test_action_decoder_mean_scale(self):
    actor = models.ActionDecoder(2, 1, 4)
    features = tf.ones((1, 3))
    actor(features)
    actor.get('hout', None).bias.assign([1000.0, -1000.0, 0.0, 0.0])
    base = actor(features)._dist.distribution.distribution
    # mean = 5 * tanh(mean / 5) is bounded by 5.
    assert np.all(np.abs(base.mean().numpy()) <= 5.0)
    assert np.all(np.abs(base.mean().numpy()) > 4.99)

  def test_action_decoder_onehot(self):
    actor = models.ActionDecoder(4, 2, 16, 'onehot')
    sample = actor(tf.zeros((3, 5))).sample().numpy()
    np.testing.assert_allclose(sample.sum(-1), 1, atol=1e-6)
