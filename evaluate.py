"""Evaluates a trained agent: returns of N episodes and a video, run untouched.

  python evaluate.py --logdir ./logs/walker --episodes 10
  python evaluate.py --logdir ./logs/walker --video walker.gif --seed 3

Reads the run's config.json, builds its environment and agent, restores the
latest readable checkpoint (or --checkpoint), and acts with the evaluation
policy (the actor's mode, plus `eval_noise` if the run had it), without
training. Writes `<logdir>/eval/<step>.json` and a video of the first episode;
nothing under episodes/ or checkpoints/ is touched.
"""

import argparse
import json
import os
import pathlib
import re
import shutil
import sys
import tempfile
import time

os.environ.setdefault('MUJOCO_GL', 'egl')

from support import console  # noqa: F401  Filters TensorFlow's start-up noise.
import numpy as np

import dreamer
import tools
import wrappers
from support import checkpoint, runtime, storage

import tensorflow as tf

SCALE = 4  # Nearest-neighbour upscaling of the 64x64 frames for viewing.
# The files of a checkpoint, where its prefix is meant.
CHECKPOINT_FILE = re.compile(r'\.(index|data-\d+-of-\d+)$')


class EvalError(Exception):
  pass


class EpisodeRecorder:
  """Keeps each finished episode, which Collect puts into the step's info."""

  def __init__(self, env, episodes):
    self._env = env
    self._episodes = episodes

  def __getattr__(self, name):
    return getattr(self._env, name)

  def step(self, action):
    obs, reward, done, info = self._env.step(action)
    if done:
      self._episodes.append(info['episode'])
    return obs, reward, done, info

  def reset(self):
    return self._env.reset()


def read_config(logdir):
  path = logdir / 'config.json'
  if not logdir.is_dir():
    raise EvalError(f'{logdir} is not a directory.')
  if not path.exists():
    raise EvalError(
        f'{logdir} is not a run of dreamer.py: it has no config.json.')
  try:
    values = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise EvalError(f'Cannot read {path}: {e}.') from e
  if not isinstance(values, dict) or 'task' not in values:
    raise EvalError(f'{path} is not the config.json of a dreamer.py run.')
  config = dreamer.define_config()
  unknown = set(values) - set(config)
  if unknown:
    print(f'Ignoring unknown flags in config.json: {", ".join(sorted(unknown))}')
  config.update({k: v for k, v in values.items() if k in config})
  config.logdir = logdir
  config.envs, config.parallel = 1, 'none'
  return config


def build_agent(config, logdir, path, actspace, scratch):
  datadir = logdir / 'episodes'
  directory = logdir / 'checkpoints'
  path = check_listed(logdir, directory, path)
  writer = tf.summary.create_noop_writer()
  # The agent's constructor takes one train step on replay data. It gets a
  # copy of one episode, so that the run's replay (and its cache) is never
  # written; the step comes from the run's episodes below.
  agent = dreamer.Dreamer(
      config, one_episode(datadir, config.batch_length, scratch), actspace,
      writer)
  # Acting only: the agent's training phases (and their summaries, which
  # would go to the run's metrics.jsonl) never start.
  agent._should_train = lambda step: False
  try:
    restored = checkpoint.load(agent, directory if path is None else path)
  except (AssertionError, ValueError) as e:
    raise EvalError(f'The checkpoint {path} does not fit the agent of '
                    f'this run ({e}).') from e
  except (tf.errors.OpError, IndexError) as e:
    # A truncated data file raises IndexError ("Read less bytes than
    # requested"), as in checkpoint.restore_latest.
    message = getattr(e, 'message', None) or str(e)
    raise EvalError(f'Cannot read the checkpoint {path}: {message}') from e
  except checkpoint.CheckpointError as e:
    raise EvalError(str(e)) from e
  agent._step.assign(dreamer.count_steps(datadir, config))
  return agent, restored


def check_listed(logdir, directory, path):
  """Names a missing checkpoint before the agent is built (a minute at the
  paper's sizes); returns the --checkpoint path with `~` expanded.

  A directory only has to list one: checkpoint.load falls back from a
  damaged newest one to an older one, as for a run's own checkpoints.
  """
  target = directory if path is None else pathlib.Path(path).expanduser()
  if CHECKPOINT_FILE.search(target.name):
    prefix = CHECKPOINT_FILE.sub('', str(target))
    raise EvalError(f'{path} is one file of a checkpoint; give its prefix, '
                    f'--checkpoint {prefix}.')
  try:
    if path is None or target.is_dir():
      if not checkpoint.exists(target):
        raise EvalError(f'{logdir} has no checkpoint in {directory}.'
                        if path is None else
                        f'Cannot read the checkpoint {path}: the directory '
                        'lists no checkpoint.')
    else:
      tf.train.load_checkpoint(str(target))  # Reads only the index.
  except tf.errors.OpError as e:
    raise EvalError(f'Cannot read the checkpoint {path}: {e.message}') from e
  except ValueError as e:  # A `checkpoint` file that TensorFlow cannot parse.
    raise EvalError(f'Cannot read the list of checkpoints in {target}: '
                    f'{e}') from e
  return None if path is None else target


def one_episode(datadir, length, scratch):
  for filename in sorted(datadir.glob('*.npz'), reverse=True):
    usable = storage.episode_length(filename)
    if usable and usable > length:
      folder = scratch / 'build'
      folder.mkdir(exist_ok=True)
      shutil.copy(filename, folder / filename.name)
      return folder
  raise EvalError(f'{datadir} holds no episode to build the agent on.')


def make_env(config, scratch, seed, episodes):
  # The run's own stack; its episode summaries go to a scratch logdir, so the
  # run's metrics.jsonl and TensorBoard files stay as they were.
  quiet = tools.AttrDict(config, logdir=scratch)
  ctor = lambda: EpisodeRecorder(dreamer.make_env(
      quiet, None, 'eval', scratch / 'episodes', False, seed), episodes)
  return wrappers.Async(ctor, 'none')


def write_video(path, episode, fps=20):
  import imageio.v3 as iio
  frames = np.repeat(np.repeat(episode['image'], SCALE, 1), SCALE, 2)
  returns = np.cumsum(episode['reward'].astype(np.float64))
  frames = np.stack([caption(f, f'return {r:.1f}')
                     for f, r in zip(frames, returns)])
  path.parent.mkdir(parents=True, exist_ok=True)
  if path.suffix.lower() == '.gif':
    iio.imwrite(path, frames, extension='.gif', duration=1000 / fps, loop=0)
  else:
    _write_mp4(path, frames, fps)


def _write_mp4(path, frames, fps):
  import imageio.v2 as imageio
  # The imageio-ffmpeg wheel ships its own ffmpeg binary.
  with imageio.get_writer(path, fps=fps, codec='libx264', quality=8,
                          macro_block_size=16) as writer:
    for frame in frames:
      writer.append_data(frame)


def caption(frame, text):
  from PIL import Image, ImageDraw
  image = Image.fromarray(frame)
  ImageDraw.Draw(image).text((4, 2), text, fill=(255, 255, 255))
  return np.asarray(image)


def evaluate(args):
  logdir = pathlib.Path(args.logdir).expanduser()
  config = read_config(logdir)
  if args.episodes < 1:
    raise EvalError(f'--episodes must be at least 1, got {args.episodes}.')
  seed = config.seed if args.seed is None else args.seed
  config.seed = seed
  runtime.set_precision(config)
  runtime.set_seed(seed)
  episodes = []
  with tempfile.TemporaryDirectory(prefix='dreamer-eval-') as scratch:
    env = make_env(config, pathlib.Path(scratch), seed + 2000, episodes)
    try:
      agent, restored = build_agent(
          config, logdir, args.checkpoint, env.action_space,
          pathlib.Path(scratch))
      step = int(agent._step.numpy())
      print(f'Evaluating {restored} (step {step}) for {args.episodes} '
            f'episodes.')
      start = time.time()
      policy = lambda obs, reset, state: agent(obs, reset, state, False)
      tools.simulate(policy, [env], episodes=args.episodes)
      duration = time.time() - start
    finally:
      env.close()
  returns = [float(e['reward'].astype(np.float64).sum()) for e in episodes]
  lengths = [(len(e['reward']) - 1) * config.action_repeat for e in episodes]
  for i, (ret, length) in enumerate(zip(returns, lengths)):
    print(f'Episode {i + 1}: return {ret:.1f}, length {length}')
  print(f'Mean return {np.mean(returns):.1f} ± {np.std(returns):.1f} '
        f'over {len(returns)} episodes.')
  outdir = logdir / 'eval'
  outdir.mkdir(exist_ok=True)
  video = pathlib.Path(args.video) if args.video else outdir / f'{step}.mp4'
  write_video(video, episodes[0])
  result = dict(
      step=step, checkpoint=str(restored), task=config.task, seed=seed,
      episodes=len(returns), returns=returns, lengths=lengths,
      mean=float(np.mean(returns)), std=float(np.std(returns)),
      eval_noise=config.eval_noise, wall_time=duration, video=str(video))
  path = outdir / f'{step}.json'
  storage.write_atomic(path, (json.dumps(result, indent=2) + '\n').encode())
  print(f'Wrote {path} and {video}.')
  return result


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--logdir', required=True, help='a run of dreamer.py')
  parser.add_argument('--episodes', type=int, default=10)
  parser.add_argument(
      '--checkpoint', default=None,
      help='a checkpoint prefix, e.g. LOGDIR/checkpoints/ckpt-100000 '
      '(default: the latest readable one)')
  parser.add_argument(
      '--video', default=None,
      help='video of the first episode; .mp4 or .gif by the name '
      '(default: LOGDIR/eval/<step>.mp4)')
  parser.add_argument(
      '--seed', type=int, default=None,
      help="seeds the environment and the agent (default: the run's seed)")
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  try:
    evaluate(args)
  except EvalError as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
