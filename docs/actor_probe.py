"""Where a run's actor acts, and what its world model thinks of other actions.

  python docs/actor_probe.py --logdir runs/paper/dmc_cartpole_balance/0
  python docs/actor_probe.py --logdir LOGDIR \
      --checkpoint LOGDIR/checkpoints/ckpt-20000

For a checkpoint of a continuous-action run, on --batches replay batches of
the run's size (drawn from batch_size of the episodes stored when the
checkpoint was saved, picked at random; later ones are left out):
the actor's pre-tanh mean and standard deviation on the posterior states
(how many actions sit at the tanh bound), and the λ-return that the world
model and value head predict from those states for the actor's own policy,
for constant actions, for the actor with noise, and for uniform random
actions, all imagined over the run's horizon as in training, with each
one's difference to the actor's, as mean and standard error over batches.
A policy at its bound whose model rates no other action higher has little
gradient to leave it (scores/paper/README.md).

It also prints the gradient that training's actor loss sends to each action
the actor imagines (over the run's horizon from every posterior state): its
sign says whether the world model and value head would score a larger action
higher, and times tanh's slope 1 - a² it is what reaches the actor's
pre-tanh sample. What the actor's weights then do with it is Adam's: the
last lines say how far Adam's last update moved them, over the learning
rate, and what gradient norm its second moment remembers. --precision 32
repeats everything in float32 on the same batches and noise, to see what a
run's 16-bit precision (bfloat16 on a CPU) does to these figures.
Reads the run; writes nothing there (the replay's cache goes to scratch).
"""

import argparse
import os
import pathlib
import re
import sys
import tempfile
import types

os.environ.setdefault('MUJOCO_GL', 'egl')
ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from support import console  # noqa: E402,F401  Quiets TensorFlow's start-up.
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import dreamer  # noqa: E402
import evaluate  # noqa: E402
import tools  # noqa: E402
from support import runtime  # noqa: E402
from support import storage  # noqa: E402

CONSTANTS = (-1.0, -0.5, 0.0, 0.5, 1.0)
NOISE = (0.3, 1.0)


def imagined_return(agent, config, start, policy):
  """Mean λ-return at the first imagined step, mean reward and value."""
  states = tools.static_scan(
      lambda prev, _: agent._dynamics.img_step(prev, policy(prev)),
      tf.range(config.horizon), start)
  returns, _, reward, value = lambda_returns(agent, config, states)
  return [float(tf.reduce_mean(x)) for x in (returns[0], reward, value)]


def lambda_returns(agent, config, states):
  """Training's λ-returns of imagined states, their weights, reward, value."""
  feat = agent._dynamics.get_feat(states)
  reward = agent._reward(feat).mode()
  value = agent._value(feat).mode()
  if config.pcont:
    pcont = agent._pcont(feat).mean()
  else:
    pcont = config.discount * tf.ones_like(reward)
  returns = tools.lambda_return(
      reward[:-1], value[:-1], pcont[:-1], bootstrap=value[-1],
      lambda_=config.disclam, axis=0)
  discount = tf.math.cumprod(tf.concat(
      [tf.ones_like(pcont[:1]), pcont[:-2]], 0), 0)
  return returns, discount, reward, value


def action_gradient(agent, config, start, actdim):
  """The actor loss's gradient with respect to each imagined action.

  Training's actor loss is minus the mean of discount x λ-return over the
  imagined steps and start states. Returns minus its gradient with respect
  to each action the actor took (an offset of zero is added to each, and
  differentiated), times the number of entries of that mean, so an entry is
  how the weighted λ-returns change per unit of that one action: positive
  means the model would score a larger action higher. Also returns the
  actions. As in training, the actor sees its states through stop_gradient.
  """
  size = tf.nest.flatten(start)[0].shape[0]
  offsets = tf.zeros([config.horizon, size, actdim])

  def step(prev, offset):
    feat = tf.stop_gradient(agent._dynamics.get_feat(prev))
    action = agent._actor(feat).sample() + offset
    return dict(agent._dynamics.img_step(prev, action), action=action)

  with tf.GradientTape() as tape:
    tape.watch(offsets)
    states = tools.static_scan(
        step, offsets, dict(start, action=offsets[0]))
    returns, discount, _, _ = lambda_returns(agent, config, states)
    loss = -tf.reduce_mean(tf.stop_gradient(discount) * returns)
  entries = tf.cast(tf.size(returns), tf.float32)
  gradient = -entries * tape.gradient(loss, offsets)
  return gradient.numpy(), states['action'].numpy()


def policies(agent, actdim):
  size = lambda state: state['deter'].shape[0]
  actor = lambda state: agent._actor(
      tf.stop_gradient(agent._dynamics.get_feat(state))).sample()
  yield 'actor', actor
  for value in CONSTANTS:
    yield f'constant {value:+.1f}', lambda state, value=value: tf.fill(
        [size(state), actdim], value)
  for amount in NOISE:
    yield f'actor + N(0, {amount}), clipped', (
        lambda state, amount=amount: tf.clip_by_value(actor(state) + amount *
        tf.random.normal([size(state), actdim]), -1, 1))
  yield 'uniform random', lambda state: tf.random.uniform(
      [size(state), actdim], -1, 1)


def adam_steps(agent):
  """The actor's last Adam update of each weight over the learning rate.

  From the checkpoint's moments m and v after that update, at its step
  count t (tf_keras's Adam, without amsgrad): the update is -lr x sqrt(1 -
  beta_2^t) / (1 - beta_1^t) x m / (sqrt(v) + epsilon); divided by lr, its
  size is near 1 where a gradient's sign held for long, and far below where
  v still remembers larger gradients than the recent ones. Returns the
  sizes (one array per actor variable, in the optimizer's order), the
  signed update of the last variable (the output layer's bias; positive
  raises the output), that bias's bias-corrected moments m^ and sqrt(v^),
  the square root of v^ summed over all weights (the gradient norm that
  Adam's second moment remembers), and t.
  """
  opt = agent._actor_opt._opt
  opt = getattr(opt, 'inner_optimizer', opt)  # Loss scaling under float16.
  if opt.amsgrad:
    raise evaluate.EvalError('The probe reads Adam without amsgrad.')
  t = float(opt.iterations.numpy())
  first, second = 1 - opt.beta_1 ** t, 1 - opt.beta_2 ** t
  moments = [(m.numpy(), v.numpy())
             for m, v in zip(opt._momentums, opt._velocities)]
  updates = [-np.sqrt(second) / first * m / (np.sqrt(v) + opt.epsilon)
             for m, v in moments]
  m, v = moments[-1]
  return types.SimpleNamespace(
      sizes=[np.abs(x) for x in updates], bias_update=updates[-1],
      bias_m=m / first, bias_root_v=np.sqrt(v / second),
      root_sum_v=np.sqrt(sum(v.sum() for _, v in moments) / second),
      count=int(t))


def episodes_until(datadir, frames, config):
  """The episodes a checkpoint at `frames` had stored, oldest first.

  Episode names begin with the time they were stored, and a run's frames
  are its stored episodes' steps; the episodes stored since the checkpoint
  are left out. All of them if `frames` is None.
  """
  files, total = [], 0
  for filename in sorted(datadir.glob('*.npz')):
    length = storage.episode_length(filename)
    if length is None:
      continue
    total += (length - 1) * config.action_repeat
    if frames is not None and total > frames:
      break
    files.append(filename)
  return files


def checkpoint_frames(path):
  # dreamer.py names its checkpoints after the frames stored (ckpt-16000).
  match = re.search(r'ckpt-(\d+)$', str(path))
  return int(match.group(1)) if match else None


def replay_sample(files, scratch, config):
  """Links batch_size of the files drawn at random into a scratch folder.

  The replay builds its cache beside the episodes it reads, so it reads
  links in scratch, never the run's folder (which a running run also uses).
  """
  rng = np.random.RandomState(config.seed)
  folder = scratch / 'replay'
  folder.mkdir()
  for index in rng.choice(
      len(files), min(len(files), config.batch_size), replace=False):
    (folder / files[index].name).symlink_to(files[index].resolve())
  return folder


def probe(args):
  logdir = pathlib.Path(args.logdir).expanduser()
  config = evaluate.read_config(logdir)
  if config.action_dist != 'tanh_normal':
    raise evaluate.EvalError(
        f'--action_dist {config.action_dist}: the probe reads a tanh_normal '
        'actor.')
  if args.batches < 2:
    raise evaluate.EvalError(
        f'--batches must be at least 2 (for a standard error), got '
        f'{args.batches}.')
  config.seed = args.seed  # The episodes drawn, their chunks, the noise.
  config.precision = args.precision or config.precision
  runtime.set_precision(config)
  runtime.set_seed(args.seed)
  with tempfile.TemporaryDirectory(prefix='dreamer-probe-') as scratch:
    scratch = pathlib.Path(scratch)
    env = evaluate.make_env(config, scratch, 0, [])
    actdim = env.action_space.shape[0]
    agent, restored = evaluate.build_agent(
        config, logdir, args.checkpoint, env.action_space, scratch)
    env.close()
    files = episodes_until(
        logdir / 'episodes', checkpoint_frames(restored), config)
    if not files:
      raise evaluate.EvalError(f'{logdir / "episodes"} holds no episode '
                               f'of {restored}.')
    dataset = iter(dreamer.load_dataset(
        replay_sample(files, scratch, config), config))
    print(f'Checkpoint {restored}; {args.batches} batches of '
          f'{config.batch_size} x {config.batch_length} replay steps from '
          f'its {len(files)} episodes, precision {config.precision}.')
    rows = [measure(agent, config, actdim, next(dataset))
            for _ in range(args.batches)]
    adam = adam_steps(agent)
  report(config, rows)
  report_adam(adam, actdim)


def measure(agent, config, actdim, data):
  """The actor's statistics and every policy's figures on one batch."""
  post, _ = agent._dynamics.observe(agent._encode(data), data['action'])
  normal = agent._actor(agent._dynamics.get_feat(post))
  normal = normal.distribution.distribution  # Independent, then tanh.
  if config.pcont:  # As training's imagination: the last could be terminal.
    post = {k: v[:, :-1] for k, v in post.items()}
  flatten = lambda x: tf.reshape(x, [-1] + list(x.shape[2:]))
  start = {k: flatten(v) for k, v in post.items()}
  gradient, actions = action_gradient(agent, config, start, actdim)
  return dict(
      action=np.asarray(data['action']), loc=normal.loc.numpy(),
      scale=normal.scale.numpy(), states=start['deter'].shape[0],
      gradient=gradient, actions=actions,
      policies={name: imagined_return(agent, config, start, policy)
                for name, policy in policies(agent, actdim)})


def report(config, rows):
  action = np.concatenate([r['action'].ravel() for r in rows])
  loc = np.concatenate([r['loc'].ravel() for r in rows])
  scale = np.concatenate([r['scale'].ravel() for r in rows])
  print(f'Replay actions: mean {action.mean():+.3f}, |a| > 0.99: '
        f'{np.mean(np.abs(action) > 0.99):.3f}')
  print(f'Actor on the posterior states: pre-tanh mean {loc.mean():+.3f} '
        f'({loc.min():+.3f} to {loc.max():+.3f}), std {scale.mean():.5f}; '
        f'tanh(mean) > 0.99: {np.mean(np.tanh(loc) > 0.99):.3f}, < -0.99: '
        f'{np.mean(np.tanh(loc) < -0.99):.3f}')
  print(f'Imagined over {config.horizon} steps from each batch\'s '
        f'{rows[0]["states"]} posterior states; mean ± standard error over '
        f'the {len(rows)} batches (the difference is paired by batch):')
  header = ('policy', 'λ-return', 'minus the actor', 'reward', 'value')
  print('  {:<28} {:>15} {:>15} {:>7} {:>7}'.format(*header))
  actor = np.array([r['policies']['actor'][0] for r in rows])
  for name in rows[0]['policies']:
    ret, reward, value = np.array(
        [r['policies'][name] for r in rows]).T
    print(f'  {name:<28} {mean_error(ret):>15} '
          f'{mean_error(ret - actor):>15} {reward.mean():7.3f} '
          f'{value.mean():7.3f}')
  report_gradient(rows)


def report_gradient(rows):
  """The actor loss's gradient at the actor's imagined actions."""
  gradient = np.array([r['gradient'].mean() for r in rows])
  slope = np.array([(r['gradient'] * (1 - r['actions'] ** 2)).mean()
                    for r in rows])
  every = np.concatenate([r['gradient'].ravel() for r in rows])
  actions = np.concatenate([r['actions'].ravel() for r in rows])
  print(f'The actor loss\'s gradient at the actor\'s {every.size} imagined '
        f'actions a (mean {actions.mean():+.5f}, mean |a| '
        f'{np.abs(actions).mean():.5f}, mean 1 - a² '
        f'{np.mean(1 - actions ** 2):.3g}): how the sum over a start\'s '
        'horizon of discount x λ-return changes per unit of one action; '
        'means ± standard error over the batches, shares and |.| over all '
        'actions:')
  print(f'  d return / d action: {mean_error(gradient, 6, "+")}, positive at '
        f'{np.mean(every > 0):.3f} of the actions, mean |.| '
        f'{np.abs(every).mean():.6f}')
  print(f'  times tanh\'s slope 1 - a² (what reaches the pre-tanh sample): '
        f'{mean_error(slope, 8, "+")}')


def report_adam(adam, actdim):
  every = np.concatenate([x.ravel() for x in adam.sizes])
  quantiles = np.quantile(every, [0.5, 0.99])
  numbers = lambda x, sign='+': ', '.join(
      f'{y:{sign}.3g}' for y in x[:actdim])
  print(f'The actor\'s last Adam update (step count t = {adam.count}), '
        f'its size over the learning rate for its {every.size} weights: '
        f'median {quantiles[0]:.3g}, 99th percentile {quantiles[1]:.3g}, '
        f'largest {every.max():.3g}; the gradient norm Adam\'s second moment '
        f'remembers, sqrt(sum v^): {adam.root_sum_v:.3g}')
  print(f'  the output layer\'s bias of the mean: update over the learning '
        f'rate {numbers(adam.bias_update)} (+ raises the mean), m^ '
        f'{numbers(adam.bias_m)}, sqrt(v^) {numbers(adam.bias_root_v, "")}')


def mean_error(values, digits=3, sign=''):
  error = values.std(ddof=1) / np.sqrt(len(values))
  return f'{values.mean():{sign}.{digits}f} ± {error:.{digits}f}'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--logdir', required=True)
  parser.add_argument('--checkpoint', default=None,
                      help='a checkpoint prefix (default: the newest)')
  parser.add_argument('--batches', type=int, default=5,
                      help='replay batches to average over')
  parser.add_argument('--precision', type=int, choices=(16, 32),
                      default=None,
                      help="the run's own unless given (16: mixed, bfloat16 "
                      'on a CPU)')
  parser.add_argument('--seed', type=int, default=0,
                      help='seeds the episodes drawn, their chunks and the '
                      'sampling noise')
  args = parser.parse_args(argv)
  try:
    probe(args)
  except evaluate.EvalError as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
