import argparse
import errno
import functools
import glob
import json
import math
import os
import pathlib
import shutil
import sys
import time

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')  # Keras 2 layers, as TFP.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('MUJOCO_GL', 'egl')

import console  # noqa: F401  Imports TensorFlow without its start-up noise.
import numpy as np
import tensorflow as tf
import tf_keras
from tf_keras import mixed_precision as prec

import models
import replay
import tools
import wrappers

import tensorflow_probability as tfp
tfd = tfp.distributions


def define_config():
  config = tools.AttrDict()
  # General.
  config.logdir = pathlib.Path('.')
  config.seed = 0
  config.steps = 5e6
  config.eval_every = 1e4
  config.log_every = 1e3
  config.log_scalars = True
  config.log_images = True
  config.gpu_growth = True
  config.precision = 16
  config.deterministic = False
  # Environment.
  config.task = 'dmc_walker_walk'
  config.envs = 1
  config.parallel = 'none'
  config.action_repeat = 2
  config.time_limit = 1000
  config.prefill = 5000
  config.eval_noise = 0.0
  config.clip_rewards = 'none'
  # Model.
  config.deter_size = 200
  config.stoch_size = 30
  config.num_units = 400
  config.dense_act = 'elu'
  config.cnn_act = 'relu'
  config.cnn_depth = 32
  config.pcont = False
  config.free_nats = 3.0
  config.kl_scale = 1.0
  config.pcont_scale = 10.0
  config.weight_decay = 0.0
  config.weight_decay_pattern = r'.*'
  config.rssm_noise = 'shared'
  # Training.
  config.batch_size = 50
  config.batch_length = 50
  config.train_every = 1000
  config.train_steps = 100
  config.pretrain = 100
  config.model_lr = 6e-4
  config.value_lr = 8e-5
  config.actor_lr = 8e-5
  config.grad_clip = 100.0
  config.dataset_balance = False
  # Behavior.
  config.discount = 0.99
  config.disclam = 0.95
  config.horizon = 15
  config.action_dist = 'tanh_normal'
  config.action_init_std = 5.0
  config.expl = 'additive_gaussian'
  config.expl_amount = 0.3
  config.expl_decay = 0.0
  config.expl_min = 0.0
  return config


# Named bundles of flag values; explicit flags on the command line win.
PRESETS = {
    # Discrete actions, as users of the original found in its issue tracker,
    # plus the paper's tanh bound on rewards.
    'atari': dict(
        action_repeat=4, action_dist='onehot', expl='epsilon_greedy',
        expl_amount=0.4, expl_min=0.1, expl_decay=100000, horizon=10,
        kl_scale=0.1, pcont=True, clip_rewards='tanh'),
    # Hours on a 2-core CPU for easy DeepMind Control tasks (docs/learning.md):
    # smaller networks and batch, the paper's schedule; float32, since
    # bfloat16 was no faster at these sizes without AMX (docs/benchmarks.md).
    'cpu': dict(
        cnn_depth=16, num_units=200, deter_size=100, stoch_size=20,
        batch_size=16, precision=32),
    # Minutes on a CPU: for smoke runs and the end-to-end tests.
    'tiny': dict(
        steps=3000, prefill=1000, eval_every=1000, log_every=500,
        train_every=500, train_steps=5, pretrain=5, batch_size=4,
        batch_length=16, cnn_depth=8, num_units=32, deter_size=32,
        stoch_size=8),
}

ACTS = dict(
    elu=tf.nn.elu, relu=tf.nn.relu, swish=tf.nn.swish,
    leaky_relu=tf.nn.leaky_relu)

METRICS = (
    'expl_amount', 'model_grad_norm', 'value_grad_norm', 'actor_grad_norm',
    'prior_ent', 'post_ent', 'image_loss', 'reward_loss', 'pcont_loss', 'div',
    'model_loss', 'value_loss', 'actor_loss', 'action_ent')


class Dreamer(tools.Module):

  def __init__(
      self, config, datadir, actspace, writer, strategy=None, stop=None):
    super().__init__()
    self._c = config
    self._actspace = actspace
    self._actdim = actspace.n if hasattr(actspace, 'n') else actspace.shape[0]
    self._writer = writer
    self._stop = stop
    self._random = np.random.RandomState(config.seed)
    with tf.device('cpu:0'):
      self._step = tf.Variable(count_steps(datadir, config), dtype=tf.int64)
    self._should_pretrain = tools.Once()
    self._should_train = tools.Every(config.train_every)
    self._should_log = tools.Every(config.log_every)
    self._last_log = None
    self._last_time = time.time()
    self.updates = 0
    self._float = prec.global_policy().compute_dtype
    # Created up front (not on first use) so the checkpoint always holds them,
    # and outside the strategy so the policy can update them too.
    keys = [k for k in METRICS if config.pcont or k != 'pcont_loss']
    self._metrics = {k: tf_keras.metrics.Mean(k) for k in keys}
    self._strategy = strategy or make_strategy()
    with self._strategy.scope():
      self._dataset = iter(self._strategy.experimental_distribute_dataset(
          load_dataset(datadir, self._c)))
      self._build_model()

  def __call__(self, obs, reset, state=None, training=True):
    step = self._step.numpy().item()
    tf.summary.experimental.set_step(step)
    if state is not None and reset.any():
      mask = 1 - reset.astype(np.float32)[:, None]
      state = tf.nest.map_structure(
          lambda x: x * tf.cast(mask, x.dtype), state)
    if self._should_train(step):
      log = self._should_log(step)
      n = self._c.pretrain if self._should_pretrain() else self._c.train_steps
      print(f'Training for {n} steps.')
      losses = []
      progress = tools.PhaseProgress(n)
      try:
        with self._strategy.scope():  # Outside it, train() would retrace.
          for train_step in range(n):
            if self._stop:
              self._stop()
            data = next(self._dataset)
            losses.append(self.train(data))
            self.updates += 1
            progress(train_step + 1)
            if self._c.log_images and log and train_step == 0:
              self._write_openl(data)
      finally:
        # Read once per phase, not per step: reading forces a device sync.
        # Also on a signal, so that a diverged agent is never checkpointed.
        self._check_finite(losses, step)
      if log:
        self._write_summaries()
    action, state = self.policy(obs, state, training)
    if training:
      self._step.assign_add(len(reset) * self._c.action_repeat)
    return action, state

  @tf.function
  def policy(self, obs, state, training):
    if state is None:
      latent = self._dynamics.initial(len(obs['image']))
      action = tf.zeros((len(obs['image']), self._actdim), tf.float32)
    else:
      latent, action = state
    embed = self._encode(preprocess(obs, self._c))
    latent, _ = self._dynamics.obs_step(latent, action, embed)
    feat = self._dynamics.get_feat(latent)
    if training:
      action = self._actor(feat).sample()
    else:
      action = self._actor(feat).mode()
    action = self._exploration(action, training)
    state = (latent, action)
    return action, state

  def checkpoint(self):
    # Every variable the agent owns: networks, optimizer moments and loss
    # scale, metric accumulators and the step.
    parts = dict(
        step=self._step, encode=self._encode, dynamics=self._dynamics,
        decode=self._decode, reward=self._reward, value=self._value,
        actor=self._actor, model_opt=self._model_opt,
        value_opt=self._value_opt, actor_opt=self._actor_opt,
        metrics=dict(self._metrics))
    if self._c.pcont:
      parts['pcont'] = self._pcont
    return tf.train.Checkpoint(**parts)

  def restore(self, path, datadir):
    status = self.checkpoint().read(path)
    # Only the manager's save counter is not part of the agent.
    status.assert_existing_objects_matched().expect_partial()
    # The step is derived from the stored episodes (SPEC), which may hold
    # more than the checkpoint saw if the run was killed between saves.
    self._step.assign(count_steps(datadir, self._c))
    self._should_pretrain()
    for optimizer in (self._model_opt, self._value_opt, self._actor_opt):
      optimizer.reset_learning_rate()

  @tf.function
  def train(self, data):
    losses = self._strategy.run(self._train, args=(data,))
    return self._strategy.reduce('MEAN', losses, axis=None)

  def _train(self, data):
    with tf.GradientTape() as model_tape:
      embed = self._encode(data)
      post, prior = self._dynamics.observe(embed, data['action'])
      feat = self._dynamics.get_feat(post)
      image_pred = self._decode(feat)
      reward_pred = self._reward(feat)
      likes = tools.AttrDict()
      likes.image = tf.reduce_mean(image_pred.log_prob(data['image']))
      likes.reward = tf.reduce_mean(reward_pred.log_prob(data['reward']))
      if self._c.pcont:
        pcont_pred = self._pcont(feat)
        pcont_target = self._c.discount * data['discount']
        likes.pcont = tf.reduce_mean(pcont_pred.log_prob(pcont_target))
        likes.pcont *= self._c.pcont_scale
      prior_dist = self._dynamics.get_dist(prior)
      post_dist = self._dynamics.get_dist(post)
      div = tf.reduce_mean(tfd.kl_divergence(post_dist, prior_dist))
      div = tf.maximum(div, self._c.free_nats)
      model_loss = self._c.kl_scale * div - sum(likes.values())

    with tf.GradientTape() as actor_tape:
      imag_feat = self._imagine_ahead(post)
      reward = self._reward(imag_feat).mode()
      if self._c.pcont:
        pcont = self._pcont(imag_feat).mean()
      else:
        pcont = self._c.discount * tf.ones_like(reward)
      value = self._value(imag_feat).mode()
      returns = tools.lambda_return(
          reward[:-1], value[:-1], pcont[:-1],
          bootstrap=value[-1], lambda_=self._c.disclam, axis=0)
      discount = tf.stop_gradient(tf.math.cumprod(tf.concat(
          [tf.ones_like(pcont[:1]), pcont[:-2]], 0), 0))
      actor_loss = -tf.reduce_mean(discount * returns)

    with tf.GradientTape() as value_tape:
      value_pred = self._value(imag_feat)[:-1]
      target = tf.stop_gradient(returns)
      value_loss = -tf.reduce_mean(discount * value_pred.log_prob(target))

    model_norm = self._model_opt(model_tape, model_loss)
    actor_norm = self._actor_opt(actor_tape, actor_loss)
    value_norm = self._value_opt(value_tape, value_loss)

    if self._c.log_scalars:
      self._scalar_summaries(
          data, feat, prior_dist, post_dist, likes, div,
          model_loss, value_loss, actor_loss, model_norm, value_norm,
          actor_norm)
    return dict(model=model_loss, actor=actor_loss, value=value_loss)

  def _build_model(self):
    cnn_act = ACTS[self._c.cnn_act]
    act = ACTS[self._c.dense_act]
    self._encode = models.ConvEncoder(self._c.cnn_depth, cnn_act)
    self._dynamics = models.RSSM(
        self._c.stoch_size, self._c.deter_size, self._c.deter_size,
        noise=self._c.rssm_noise)
    self._decode = models.ConvDecoder(self._c.cnn_depth, cnn_act)
    self._reward = models.DenseDecoder((), 2, self._c.num_units, act=act)
    if self._c.pcont:
      self._pcont = models.DenseDecoder(
          (), 3, self._c.num_units, 'binary', act=act)
    self._value = models.DenseDecoder((), 3, self._c.num_units, act=act)
    self._actor = models.ActionDecoder(
        self._actdim, 4, self._c.num_units, self._c.action_dist,
        init_std=self._c.action_init_std, act=act)
    model_modules = [self._encode, self._dynamics, self._decode, self._reward]
    if self._c.pcont:
      model_modules.append(self._pcont)
    Optimizer = functools.partial(
        tools.Adam, wd=self._c.weight_decay, clip=self._c.grad_clip,
        wdpattern=self._c.weight_decay_pattern)
    self._model_opt = Optimizer('model', model_modules, self._c.model_lr)
    self._value_opt = Optimizer('value', [self._value], self._c.value_lr)
    self._actor_opt = Optimizer('actor', [self._actor], self._c.actor_lr)
    self._create_variables()
    # Do a train step to initialize all variables, including optimizer
    # statistics. Ideally, we would use batch size zero, but that doesn't work
    # in multi-GPU mode.
    self.train(next(self._dataset))

  def _create_variables(self):
    # One eager pass of each network on a single step, then Adam's moments:
    # a tf.function that creates variables is traced twice, and tracing the
    # train step takes ~10 s at the paper's sizes.
    image = tf.zeros((1, 1, 64, 64, 3))
    embed = self._encode({'image': image})
    post, _ = self._dynamics.observe(embed, tf.zeros((1, 1, self._actdim)))
    feat = self._dynamics.get_feat(post)
    heads = [self._decode, self._reward, self._value, self._actor]
    heads += [self._pcont] if self._c.pcont else []
    for head in heads:
      head(feat)
    for optimizer in (self._model_opt, self._actor_opt, self._value_opt):
      optimizer.build()

  def _exploration(self, action, training):
    if training:
      amount = self._c.expl_amount
      if self._c.expl_decay:
        amount *= 0.5 ** (tf.cast(self._step, tf.float32) / self._c.expl_decay)
      if self._c.expl_min:
        amount = tf.maximum(self._c.expl_min, amount)
      self._metrics['expl_amount'].update_state(amount)
    elif self._c.eval_noise:
      amount = self._c.eval_noise
    else:
      return action
    if self._c.expl == 'additive_gaussian':
      return tf.clip_by_value(tfd.Normal(action, amount).sample(), -1, 1)
    if self._c.expl == 'completely_random':
      return tf.random.uniform(action.shape, -1, 1)
    if self._c.expl == 'epsilon_greedy':
      indices = tfd.Categorical(0 * action).sample()
      return tf.where(
          tf.random.uniform(action.shape[:1], 0, 1)[:, None] < amount,
          tf.one_hot(indices, action.shape[-1], dtype=action.dtype),
          action)
    raise NotImplementedError(self._c.expl)

  def _imagine_ahead(self, post):
    if self._c.pcont:  # Last step could be terminal.
      post = {k: v[:, :-1] for k, v in post.items()}
    flatten = lambda x: tf.reshape(x, [-1] + list(x.shape[2:]))
    start = {k: flatten(v) for k, v in post.items()}
    policy = lambda state: self._actor(
        tf.stop_gradient(self._dynamics.get_feat(state))).sample()
    states = tools.static_scan(
        lambda prev, _: self._dynamics.img_step(prev, policy(prev)),
        tf.range(self._c.horizon), start)
    imag_feat = self._dynamics.get_feat(states)
    return imag_feat

  def _scalar_summaries(
      self, data, feat, prior_dist, post_dist, likes, div,
      model_loss, value_loss, actor_loss, model_norm, value_norm,
      actor_norm):
    self._metrics['model_grad_norm'].update_state(model_norm)
    self._metrics['value_grad_norm'].update_state(value_norm)
    self._metrics['actor_grad_norm'].update_state(actor_norm)
    self._metrics['prior_ent'].update_state(prior_dist.entropy())
    self._metrics['post_ent'].update_state(post_dist.entropy())
    for name, logprob in likes.items():
      self._metrics[name + '_loss'].update_state(-logprob)
    self._metrics['div'].update_state(div)
    self._metrics['model_loss'].update_state(model_loss)
    self._metrics['value_loss'].update_state(value_loss)
    self._metrics['actor_loss'].update_state(actor_loss)
    self._metrics['action_ent'].update_state(self._actor(feat).entropy())

  @tf.function
  def _image_summaries(self, data):
    # Outside the train step, so that step is traced once, not once per
    # value of a log_images flag.
    embed = self._encode(data)
    truth = data['image'][:6] + 0.5
    recon = self._decode(self._dynamics.get_feat(
        self._dynamics.observe(embed[:6], data['action'][:6])[0])).mode()
    init, _ = self._dynamics.observe(embed[:6, :5], data['action'][:6, :5])
    init = {k: v[:, -1] for k, v in init.items()}
    prior = self._dynamics.imagine(data['action'][:6, 5:], init)
    openl = self._decode(self._dynamics.get_feat(prior)).mode()
    model = tf.concat([recon[:, :5] + 0.5, openl + 0.5], 1)
    error = (model - truth + 1) / 2
    return tf.concat([truth, model, error], 2)

  def _write_openl(self, data):
    if self._c.batch_length <= 5:
      return  # No frames left to predict after the 5 context frames.
    data = self._strategy.experimental_local_results(data)[0]
    openl = self._image_summaries(data)
    with self._writer.as_default():
      tools.video_summary('agent/openl', openl.numpy(), self._step.numpy())

  def _write_summaries(self):
    step = int(self._step.numpy())
    metrics = [(k, float(v.result())) for k, v in logged(self._metrics)]
    if self._last_log is not None:
      duration = time.time() - self._last_time
      self._last_time += duration
      metrics.append(('fps', (step - self._last_log) / duration))
    self._last_log = step
    [m.reset_state() for m in self._metrics.values()]
    with (self._c.logdir / 'metrics.jsonl').open('a') as f:
      f.write(json.dumps({'step': step, **dict(metrics)}) + '\n')
    with self._writer.as_default():
      [tf.summary.scalar('agent/' + k, m, step) for k, m in metrics]
    print(f'[{step}]', ' / '.join(f'{k} {v:.1f}' for k, v in metrics))
    self._writer.flush()

  def _check_finite(self, losses, step):
    for name, value in (item for l in losses for item in l.items()):
      if not math.isfinite(float(value)):
        raise NonFiniteLoss(
            f'The {name} loss became {float(value)} at step {step}. The run '
            'stopped without saving, so the last checkpoint is the last good '
            'one. Lower the learning rates or check the data.')


def logged(metrics):
  # The original's metrics were a defaultdict that created a metric on its
  # first update, so only those updated (and `expl_amount`, created up front)
  # were written; with --log_scalars False that is `expl_amount` alone.
  return [(k, m) for k, m in metrics.items()
          if k == 'expl_amount' or m.count.numpy() > 0]


class NonFiniteLoss(Exception):
  pass


class ConfigError(Exception):
  pass


class CheckpointError(Exception):
  pass


def preprocess(obs, config):
  obs = obs.copy()
  with tf.device('cpu:0'):
    # Inputs and likelihood targets in float32 (layers cast to their compute
    # dtype themselves); stored episodes may hold float16.
    for key, value in obs.items():
      if key != 'image' and tf.as_dtype(value.dtype).is_floating:
        obs[key] = tf.cast(value, tf.float32)
    obs['image'] = tf.cast(obs['image'], tf.float32) / 255.0 - 0.5
    clip_rewards = dict(none=lambda x: x, tanh=tf.tanh)[config.clip_rewards]
    obs['reward'] = clip_rewards(obs['reward'])
  return obs


def count_steps(datadir, config):
  return tools.count_episodes(datadir)[1] * config.action_repeat


def load_dataset(directory, config):
  episode = widen(next(tools.load_episodes(directory, 1)))
  signature = {
      k: tf.TensorSpec((None,) + v.shape[1:], v.dtype)
      for k, v in episode.items()}
  generator = lambda: map(widen, tools.load_episodes(
      directory, config.train_steps, config.batch_length,
      config.dataset_balance, config.seed))
  dataset = tf.data.Dataset.from_generator(
      generator, output_signature=signature)
  dataset = dataset.batch(config.batch_size, drop_remainder=True)
  dataset = dataset.map(functools.partial(preprocess, config=config))
  dataset = dataset.prefetch(10)
  # Nothing here is tuned (fixed prefetch, sequential map), and the tuning
  # thread made deleting the iterator wait ~15 s at every exit.
  options = tf.data.Options()
  options.autotune.enabled = False
  return dataset.with_options(options)


def widen(episode):
  # Stored float16 entries become float32 before TensorFlow sees them, which
  # preprocess does anyway: no op then takes float16 on a CPU, where oneDNN
  # logged an error for it ("oneDNN supports DT_HALF only ...").
  return {k: v.astype(np.float32) if v.dtype == np.float16 else v
          for k, v in episode.items()}


def summarize_episode(episode, config, datadir, writer, prefix):
  writer = writer or process_writer(config.logdir)
  episodes, steps = tools.count_episodes(datadir)
  length = (len(episode['reward']) - 1) * config.action_repeat
  ret = episode['reward'].sum()
  print(f'{prefix.title()} episode of length {length} with return {ret:.1f}.')
  metrics = [
      (f'{prefix}/return', float(episode['reward'].sum())),
      (f'{prefix}/length', len(episode['reward']) - 1),
      (f'episodes', episodes)]
  step = count_steps(datadir, config)
  with (config.logdir / 'metrics.jsonl').open('a') as f:
    f.write(json.dumps(dict([('step', step)] + metrics)) + '\n')
  with writer.as_default():  # Env might run in a different thread.
    tf.summary.experimental.set_step(step)
    [tf.summary.scalar('sim/' + k, v) for k, v in metrics]
    if prefix == 'test':
      tools.video_summary(f'sim/{prefix}/video', episode['image'][None])


@functools.lru_cache(None)
def process_writer(logdir):
  # Environments in worker processes cannot share the main process's writer.
  return tf.summary.create_file_writer(str(logdir), max_queue=1000)


def make_env(config, writer, prefix, datadir, store, seed=None):
  suite, task = config.task.split('_', 1)
  if suite == 'dmc':
    env = wrappers.DeepMindControl(task, seed=seed)
    env = wrappers.ActionRepeat(env, config.action_repeat)
    env = wrappers.NormalizeActions(env)
  elif suite == 'atari':
    env = wrappers.Atari(
        task, config.action_repeat, (64, 64), grayscale=False,
        life_done=True, sticky_actions=True, seed=seed)
    env = wrappers.OneHotAction(env)
  else:
    raise NotImplementedError(suite)
  env = wrappers.TimeLimit(env, config.time_limit / config.action_repeat)
  callbacks = []
  if store:
    callbacks.append(lambda ep: tools.save_episodes(datadir, [ep]))
  callbacks.append(
      lambda ep: summarize_episode(ep, config, datadir, writer, prefix))
  env = wrappers.Collect(env, callbacks, config.precision)
  env = wrappers.RewardObs(env)
  return env


def make_async_env(config, writer, prefix, datadir, store, seed):
  # A worker process gets no writer: it cannot be pickled, and the worker
  # opens its own on the same logdir.
  writer = None if config.parallel == 'process' else writer
  ctor = functools.partial(
      make_env, config, writer, prefix, datadir, store, seed)
  return wrappers.Async(ctor, config.parallel)


def make_strategy():
  # All GPUs, else the first CPU; the original's MirroredStrategy() default.
  gpus = tf.config.list_logical_devices('GPU')
  devices = [d.name for d in gpus] or ['/cpu:0']
  return tf.distribute.MirroredStrategy(devices)


def set_precision(config):
  """Returns the Keras mixed precision policy used for --precision."""
  if config.precision == 32:
    name = 'float32'
  elif tf.config.list_physical_devices('GPU'):
    name = 'mixed_float16'
  else:
    name = cpu_policy_for_16()
  prec.set_global_policy(name)
  return name


def cpu_policy_for_16(cpuinfo='/proc/cpuinfo'):
  # Without a GPU, float16 math is emulated: 40x slower than float32 here (the
  # original took minutes per update). At the paper's sizes bfloat16 took
  # 0.57x float32's time per update with AMX and 0.82x with AVX512_BF16 alone,
  # and trained alike; on CPUs without either it may be slower, so they keep
  # float32 (docs/benchmarks.md).
  try:
    with open(cpuinfo) as f:
      flags = set(f.read().split())
  except OSError:
    return 'float32'
  native = {'avx512_bf16', 'amx_bf16'}
  return 'mixed_bfloat16' if flags & native else 'float32'


def set_seed(seed, deterministic=False):
  # Python's, NumPy's and TensorFlow's generators (Keras draws from Python's).
  tf_keras.utils.set_random_seed(seed)
  if deterministic:
    # Same seed, same run: TensorFlow picks deterministic kernels and refuses
    # ops that have none (docs/benchmarks.md has the cost).
    tf.config.experimental.enable_op_determinism()


def save_checkpoint(manager, step):
  path = os.path.join(manager.directory, f'ckpt-{step}')
  if path in manager.checkpoints:
    # Saved at this step already (a signal right after a save or restore);
    # rewriting it in place would risk the one good copy for nothing.
    return path
  try:
    path = manager.save(checkpoint_number=step)
  except (OSError, tf.errors.OpError) as e:
    remove_partial_checkpoint(path)
    message = getattr(e, 'message', None) or str(e)
    raise tools.WriteError(
        getattr(e, 'errno', None),
        f'Could not write the checkpoint {path}: {message.strip()}. No partial '
        'file was left behind and the previous checkpoints are intact.') from e
  print(f'Saved checkpoint {path}.')
  return path


def remove_partial_checkpoint(prefix):
  # TensorFlow writes a checkpoint into `<prefix>_temp/`, then moves it to
  # `<prefix>.index` and `<prefix>.data-*`; only then does the `checkpoint`
  # file name it. A failed or killed save leaves the pieces, never listed.
  for path in glob.glob(glob.escape(prefix) + '_temp*'):
    shutil.rmtree(path, ignore_errors=True)
  for path in glob.glob(glob.escape(prefix) + '.*'):
    os.remove(path)


def remove_partial_checkpoints(directory):
  """Removes what saves that were killed left in the checkpoints directory."""
  removed = []
  for path in pathlib.Path(directory).glob('*_temp*'):
    shutil.rmtree(path, ignore_errors=True)
    removed.append(path)
  return removed


def restore_latest(agent, manager, datadir):
  """Restores the newest readable checkpoint; returns its path or None."""
  for path in reversed(manager.checkpoints):
    try:
      agent.restore(path, datadir)
      return path
    except (tf.errors.OpError, IndexError) as e:
      # Only a lost or damaged file (not a kill, which leaves the previous
      # checkpoint listed) gets here; the older one is the next best. A
      # truncated file raises IndexError ("Read less bytes than requested").
      message = getattr(e, 'message', None) or str(e)
      print(f'Could not read the checkpoint {path}: {message}. Trying an '
            'older one.')
    except (AssertionError, ValueError) as e:
      raise CheckpointError(
          f'The checkpoint {path} does not fit this agent ({e}). Were model '
          'flags changed? Resume with the flags of the run, or use a new '
          '--logdir.') from e
  if manager.checkpoints:
    # Starting afresh would silently throw the training away.
    raise CheckpointError(
        f'None of the checkpoints in {manager.directory} could be read. To '
        'train a new agent on the stored episodes, move that directory away.')
  return None


def resume_message(config):
  flags = ' '.join(sys.argv[1:]) or f'--logdir {config.logdir}'
  return f'To resume, run the same command again: python dreamer.py {flags}'


def main(config):
  validate(config)
  if config.gpu_growth:
    for gpu in tf.config.experimental.list_physical_devices('GPU'):
      tf.config.experimental.set_memory_growth(gpu, True)
  policy = set_precision(config)
  print(f'Precision policy: {policy}.')
  set_seed(config.seed, config.deterministic)
  config.steps = int(config.steps)
  config.logdir.mkdir(parents=True, exist_ok=True)
  print('Logdir', config.logdir)
  write_config(config)

  # Create environments.
  datadir = config.logdir / 'episodes'
  datadir.mkdir(parents=True, exist_ok=True)
  for path in tools.remove_partial_files(datadir):
    print(f'Removed the partial file {path.name} of an interrupted write.')
  for path in replay.remove_partial_caches(datadir):
    print(f'Removed the partial replay cache {path.name} of an interrupted '
          'write.')
  for path in remove_partial_checkpoints(config.logdir / 'checkpoints'):
    print(f'Removed the partial checkpoint {path.name} of an interrupted save.')
  writer = tf.summary.create_file_writer(
      str(config.logdir), max_queue=1000, flush_millis=20000)
  writer.set_as_default()
  stop = tools.GracefulStop()
  train_envs = [make_async_env(
      config, writer, 'train', datadir, True, config.seed + i)
      for i in range(config.envs)]
  test_envs = [make_async_env(
      config, writer, 'test', datadir, False, config.seed + 1000 + i)
      for i in range(config.envs)]
  actspace = train_envs[0].action_space
  actspace.seed(config.seed)  # The random prefill actions, too.
  agent = manager = None
  try:
    # Prefill dataset with random episodes.
    step = count_steps(datadir, config)
    prefill = max(0, config.prefill - step)
    print(f'Prefill dataset with {prefill} steps.')
    random_agent = lambda o, d, _: ([actspace.sample() for _ in d], None)
    random_agent = tools.Progress(
        random_agent, 'prefill', step, config.prefill, config.action_repeat)
    tools.simulate(
        random_agent, train_envs, prefill / config.action_repeat, stop=stop)
    ensure_one_episode(random_agent, train_envs, datadir, stop)
    writer.flush()
    replay.check_disk(  # In flight: the 10 prefetched batches and one more.
        datadir, config.steps, config.action_repeat,
        11 * config.batch_size * config.batch_length)

    # Train and regularly evaluate the agent.
    step = count_steps(datadir, config)
    print(f'Simulating agent for {config.steps-step} steps.')
    agent = Dreamer(config, datadir, actspace, writer, stop=stop)
    manager = tf.train.CheckpointManager(
        agent.checkpoint(), config.logdir / 'checkpoints', max_to_keep=2)
    restored = restore_latest(agent, manager, datadir)
    if restored:
      print(f'Restored checkpoint {restored}.')
    collect = tools.Progress(
        agent, 'train', step, config.steps, config.action_repeat,
        updates=lambda: agent.updates)
    state = None
    while step < config.steps:
      print('Start evaluation.')
      tools.simulate(
          functools.partial(agent, training=False), test_envs, episodes=1,
          stop=stop)
      writer.flush()
      print('Start collection.')
      steps = config.eval_every // config.action_repeat
      state = tools.simulate(collect, train_envs, steps, state=state, stop=stop)
      step = count_steps(datadir, config)
      save_checkpoint(manager, agent._step.numpy().item())
  except tools.Interrupted as e:
    if manager:
      save_checkpoint(manager, agent._step.numpy().item())
    print(f'Stopped by {e}. Collected episodes are kept in {datadir}.')
    print(resume_message(config))
    return 128 + e.signum
  finally:
    writer.flush()
    for env in train_envs + test_envs:
      env.close()
  return 0


def ensure_one_episode(random_agent, envs, datadir, stop):
  # The replay needs an episode to build the agent (its first train step and
  # the dataset's signature), also with --prefill 0 on an empty logdir.
  if tools.count_episodes(datadir)[0] == 0:
    print('The replay is empty: collecting one random episode to build the '
          'agent on.')
    tools.simulate(random_agent, envs, episodes=1, stop=stop)


def write_config(config):
  # Which task and seed a run is: read by plotting.py, and by the user.
  content = {k: str(v) if isinstance(v, pathlib.Path) else v
             for k, v in vars_of(config).items()}
  tools.write_atomic(
      config.logdir / 'config.json', json.dumps(content, indent=2).encode())


def vars_of(config):
  return dict(config) if isinstance(config, dict) else vars(config)


def validate(config):
  """Refuses bad input before any work, naming the valid choices."""
  c = vars_of(config)
  choices = dict(
      precision=(16, 32), parallel=('none', 'thread', 'process'),
      clip_rewards=('none', 'tanh'), dense_act=tuple(ACTS),
      cnn_act=tuple(ACTS), action_dist=('tanh_normal', 'onehot'),
      expl=('additive_gaussian', 'completely_random', 'epsilon_greedy'),
      rssm_noise=('shared', 'independent'))
  for key, valid in choices.items():
    if c[key] not in valid:
      raise ConfigError(
          f'--{key} {c[key]} is not valid; choose one of: '
          f'{", ".join(str(v) for v in valid)}.')
  positive = (
      'steps', 'eval_every', 'log_every', 'envs', 'action_repeat',
      'time_limit', 'deter_size', 'stoch_size', 'num_units', 'cnn_depth',
      'batch_size', 'batch_length', 'train_every', 'train_steps', 'model_lr',
      'value_lr', 'actor_lr', 'horizon')
  for key in positive:
    if not c[key] > 0:
      raise ConfigError(f'--{key} must be positive, got {c[key]}.')
  for key in ('prefill', 'pretrain'):  # 0: no random episodes, no pretrain.
    if not c[key] >= 0:
      raise ConfigError(f'--{key} must be 0 or more, got {c[key]}.')
  episode = int(c['time_limit'] // c['action_repeat'])
  if c['batch_length'] > episode:
    raise ConfigError(
        f'--batch_length {c["batch_length"]} is longer than an episode can '
        f'be: --time_limit {c["time_limit"]} / --action_repeat '
        f'{c["action_repeat"]} = {episode} steps. Use at most {episode}.')
  check_task(c['task'])
  check_writable(pathlib.Path(c['logdir']).expanduser())


def check_task(task):
  suite, _, name = task.partition('_')
  try:
    if suite == 'dmc':
      wrappers.DeepMindControl(name).close()
    elif suite == 'atari':
      wrappers.Atari(name).close()
    else:
      raise ValueError(
          f'Unknown suite "{suite}" in --task {task}. Valid suites: dmc '
          '(e.g. dmc_walker_walk) and atari (e.g. atari_pong).')
  except ValueError as e:
    raise ConfigError(str(e)) from e


def check_writable(logdir):
  existing = logdir
  while not existing.exists():
    existing = existing.parent
  if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
    raise ConfigError(f'Cannot write the logdir {logdir}: {existing} is not '
                      'a writable directory.')
  for sub in (logdir, logdir / 'episodes', logdir / 'checkpoints'):
    if sub.exists() and not os.access(sub, os.W_OK | os.X_OK):
      raise ConfigError(f'Cannot write the logdir: {sub} is not writable.')


def parse_args(argv=None):
  """Flags of define_config(), after the values of any --preset."""
  pre = argparse.ArgumentParser(add_help=False)
  pre.add_argument('--preset', nargs='+', default=[], choices=sorted(PRESETS))
  presets = pre.parse_known_args(argv)[0].preset
  parser = argparse.ArgumentParser(
      description='Dreamer: learning behaviors by latent imagination.')
  parser.add_argument(
      '--preset', nargs='+', default=[], choices=sorted(PRESETS),
      help='named bundles of flag values: ' + '; '.join(
          f'{k}: ' + ' '.join(f'--{f} {v}' for f, v in p.items())
          for k, p in PRESETS.items()))
  config = define_config()
  for name in presets:
    config.update(PRESETS[name])
  group = None
  for key, value in config.items():
    if key in SECTIONS:
      group = parser.add_argument_group(SECTIONS[key])
    parse = tools.args_type(value)
    group.add_argument(
        f'--{key}', type=parse, default=value, metavar=parse.__name__,
        help=(SECTIONS_HELP.get(key, '') + ' (default: %(default)s)').strip())
  args = parser.parse_args(argv)
  del args.preset
  return args


# The sections of define_config(), by their first flag, for --help.
SECTIONS = dict(
    logdir='General', task='Environment', deter_size='Model',
    batch_size='Training', discount='Behavior')
SECTIONS_HELP = dict(
    steps='environment frames (agent steps x action_repeat)',
    precision='16: mixed float16 on GPU (see README for CPU); 32: float32',
    deterministic=(
        "TensorFlow's op determinism: the same command and seed give the "
        'same run'),
    parallel='none, thread or process', clip_rewards='none or tanh',
    action_dist='tanh_normal or onehot',
    expl='additive_gaussian, completely_random or epsilon_greedy',
    dense_act='elu, relu, swish or leaky_relu',
    cnn_act='elu, relu, swish or leaky_relu',
    rssm_noise=(
        'shared: one noise vector per step for the whole batch, as the '
        "original's sampler does; independent: one per entry, as the paper "
        'describes'))


def cli(argv=None):
  config = parse_args(argv)
  try:
    return main(config)
  except (ConfigError, replay.DiskFull) as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2
  except (NonFiniteLoss, CheckpointError) as e:
    print(f'Error: {e}', file=sys.stderr)
    return 1
  except OSError as e:
    if not isinstance(e, tools.WriteError) and e.errno not in DISK_ERRORS:
      raise
    # A full or read-only disk: the files written so far are complete.
    print(f'Error: {e}', file=sys.stderr)
    print('Free some space. ' + resume_message(config), file=sys.stderr)
    return 1


DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


if __name__ == '__main__':
  sys.exit(cli())
