"""Where a run's actor acts, and what its world model thinks of other actions.

  python docs/actor_probe.py --logdir runs/paper/dmc_cartpole_balance/0
  python docs/actor_probe.py --logdir LOGDIR \
      --checkpoint LOGDIR/checkpoints/ckpt-20000

For a checkpoint of a continuous-action run, on one batch of the run's size
(from batch_size of its episodes drawn at random): the actor's pre-tanh mean
and standard deviation on the posterior states (how many actions sit at the
tanh bound), and the λ-return that the world model and value head predict
from those states for the actor's own policy, for constant actions, for the
actor with noise, and for uniform random actions, all imagined over the
run's horizon as in training. A policy at its bound whose model rates other
actions about as high has little gradient to leave it (docs/learning.md).
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
  pcont = config.discount * tf.ones_like(reward)  # The runs use no --pcont.
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
  random = np.random.RandomState(config.seed)
  folder = scratch / 'replay'
  folder.mkdir()
  for index in random.choice(
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
  runtime.set_precision(config)
  runtime.set_seed(args.seed)
  with tempfile.TemporaryDirectory(prefix='dreamer-probe-') as scratch:
    scratch = pathlib.Path(scratch)
    env = evaluate.make_env(config, scratch, 0, [])
    agent, restored = evaluate.build_agent(
        config, logdir, args.checkpoint, env.action_space, scratch)
    env.close()
    data = next(iter(dreamer.load_dataset(
        replay_sample(logdir / 'episodes', scratch, config), config)))
  actdim = env.action_space.shape[0]
  post, _ = agent._dynamics.observe(agent._encode(data), data['action'])
  normal = agent._actor(agent._dynamics.get_feat(post))
  normal = normal.distribution.distribution  # Independent, then tanh.
  loc, scale = normal.loc.numpy(), normal.scale.numpy()
  action = np.asarray(data['action'])
  print(f'Checkpoint {restored}; one batch of {config.batch_size} x '
        f'{config.batch_length} replay steps, precision {config.precision}.')
  print(f'Replay actions: mean {action.mean():+.3f}, |a| > 0.99: '
        f'{np.mean(np.abs(action) > 0.99):.3f}')
  print(f'Actor on the posterior states: pre-tanh mean {loc.mean():+.3f} '
        f'(|mean| {np.abs(loc).min():.3f} to {np.abs(loc).max():.3f}), '
        f'std {scale.mean():.5f}; tanh(mean) > 0.99: '
        f'{np.mean(np.tanh(loc) > 0.99):.3f}, < -0.99: '
        f'{np.mean(np.tanh(loc) < -0.99):.3f}')
  flatten = lambda x: tf.reshape(x, [-1] + list(x.shape[2:]))
  start = {k: flatten(v) for k, v in post.items()}
  print(f'Imagined over {config.horizon} steps from the '
        f'{start["deter"].shape[0]} posterior states:')
  print(f'  {"policy":<28} {"λ-return":>9} {"reward":>8} {"value":>8}')
  for name, policy in policies(agent, actdim):
    ret, reward, value = imagined_return(agent, config, start, policy)
    print(f'  {name:<28} {ret:9.3f} {reward:8.3f} {value:8.3f}')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--logdir', required=True)
  parser.add_argument('--checkpoint', default=None,
                      help='a checkpoint prefix (default: the newest)')
  parser.add_argument('--seed', type=int, default=0,
                      help='seeds the batch\'s sampling noise')
  args = parser.parse_args(argv)
  try:
    probe(args)
  except evaluate.EvalError as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
