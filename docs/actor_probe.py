"""Where a run's actor acts, and what its world model thinks of other actions.

  python docs/actor_probe.py --logdir runs/paper/dmc_cartpole_balance/0
  python docs/actor_probe.py --logdir LOGDIR \
      --checkpoint LOGDIR/checkpoints/ckpt-20000

For a checkpoint of a continuous-action run, on --batches replay batches of
the run's size (drawn from batch_size of its episodes, picked at random):
the actor's pre-tanh mean and standard deviation on the posterior states
(how many actions sit at the tanh bound), and the λ-return that the world
model and value head predict from those states for the actor's own policy,
for constant actions, for the actor with noise, and for uniform random
actions, all imagined over the run's horizon as in training, with each
one's difference to the actor's, as mean and standard error over batches.
A policy at its bound whose model rates no other action higher has little
gradient to leave it (scores/paper/README.md).
Reads the run; writes nothing there (the replay's cache goes to scratch).
"""

import argparse
import os
import pathlib
import sys
import tempfile

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

CONSTANTS = (-1.0, -0.5, 0.0, 0.5, 1.0)
NOISE = (0.3, 1.0)


def imagined_return(agent, config, start, policy):
  """Mean λ-return at the first imagined step, mean reward and value."""
  states = tools.static_scan(
      lambda prev, _: agent._dynamics.img_step(prev, policy(prev)),
      tf.range(config.horizon), start)
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
  return [float(tf.reduce_mean(x)) for x in (returns[0], reward, value)]


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


def replay_sample(datadir, scratch, config):
  """Links batch_size episodes drawn at random into a scratch folder.

  The replay builds its cache beside the episodes it reads, so it reads
  links in scratch, never the run's folder (which a running run also uses).
  """
  files = sorted(datadir.glob('*.npz'))
  if not files:
    raise evaluate.EvalError(f'{datadir} holds no episode.')
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
  runtime.set_precision(config)
  runtime.set_seed(args.seed)
  with tempfile.TemporaryDirectory(prefix='dreamer-probe-') as scratch:
    scratch = pathlib.Path(scratch)
    env = evaluate.make_env(config, scratch, 0, [])
    actdim = env.action_space.shape[0]
    agent, restored = evaluate.build_agent(
        config, logdir, args.checkpoint, env.action_space, scratch)
    env.close()
    dataset = iter(dreamer.load_dataset(
        replay_sample(logdir / 'episodes', scratch, config), config))
    print(f'Checkpoint {restored}; {args.batches} batches of '
          f'{config.batch_size} x {config.batch_length} replay steps, '
          f'precision {config.precision}.')
    rows = [measure(agent, config, actdim, next(dataset))
            for _ in range(args.batches)]
  report(config, rows)


def measure(agent, config, actdim, data):
  """The actor's statistics and every policy's figures on one batch."""
  post, _ = agent._dynamics.observe(agent._encode(data), data['action'])
  normal = agent._actor(agent._dynamics.get_feat(post))
  normal = normal.distribution.distribution  # Independent, then tanh.
  flatten = lambda x: tf.reshape(x, [-1] + list(x.shape[2:]))
  start = {k: flatten(v) for k, v in post.items()}
  return dict(
      action=np.asarray(data['action']), loc=normal.loc.numpy(),
      scale=normal.scale.numpy(), states=start['deter'].shape[0],
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


def mean_error(values):
  error = values.std(ddof=1) / np.sqrt(len(values))
  return f'{values.mean():.3f} ± {error:.3f}'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--logdir', required=True)
  parser.add_argument('--checkpoint', default=None,
                      help='a checkpoint prefix (default: the newest)')
  parser.add_argument('--batches', type=int, default=5,
                      help='replay batches to average over')
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
