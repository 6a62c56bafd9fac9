"""The command line of dreamer.py: flags, presets, validation, exit codes.

`python dreamer.py ...` calls run(). Bad input is refused before any work
with a message that names the valid choices (exit 2); errors that stop a run
say what is kept and how to resume (exit 1); a signal stops the run between
whole steps after saving a checkpoint (exit 128 + the signal's number).
"""

import argparse
import errno
import json
import os
import pathlib
import shlex
import sys

from support import checkpoint
from support import gymtask
from support import progress
from support import renderer
from support import replay
from support import runtime
from support import storage

ACTIVATIONS = ('elu', 'relu', 'swish', 'leaky_relu')

# The valid values of the flags that have a fixed set of them.
CHOICES = dict(
    precision=(16, 32), parallel=('none', 'thread', 'process'),
    clip_rewards=('none', 'tanh'), dense_act=ACTIVATIONS,
    cnn_act=ACTIVATIONS, action_dist=('tanh_normal', 'onehot'),
    expl=('additive_gaussian', 'completely_random', 'epsilon_greedy'),
    rssm_noise=('shared', 'independent'))

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
    rssm_noise=(
        'shared: one noise vector per step for the whole batch, as the '
        "original's sampler does; independent: one per entry, as the paper "
        'describes'))

# A full or read-only disk: the run stops with what it wrote intact.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


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
    # bfloat16 was no faster at these sizes without AMX (docs/benchmarks.md);
    # per-entry RSSM noise, which beat the original's shared noise at 105k
    # frames of cartpole_balance on each seed compared.
    'cpu': dict(
        cnn_depth=16, num_units=200, deter_size=100, stoch_size=20,
        batch_size=16, precision=32, rssm_noise='independent'),
    # Minutes on a CPU: for smoke runs and the end-to-end tests.
    'tiny': dict(
        steps=3000, prefill=1000, eval_every=1000, log_every=500,
        train_every=500, train_steps=5, pretrain=5, batch_size=4,
        batch_length=16, cnn_depth=8, num_units=32, deter_size=32,
        stoch_size=8),
}


def write_config(config):
  # Which task and seed a run is: read by plotting.py, and by the user.
  config.logdir.mkdir(parents=True, exist_ok=True)
  content = {k: str(v) if isinstance(v, pathlib.Path) else v
             for k, v in vars_of(config).items()}
  storage.write_atomic(
      config.logdir / 'config.json', json.dumps(content, indent=2).encode())


def vars_of(config):
  return dict(config) if isinstance(config, dict) else vars(config)


def validate(config):
  """Refuses bad input before any work, naming the valid choices."""
  c = vars_of(config)
  for key, valid in CHOICES.items():
    if c[key] not in valid:
      raise ConfigError(
          f'--{key} {c[key]} is not valid; choose one of: '
          f'{", ".join(str(v) for v in valid)}.')
  positive = (
      'steps', 'eval_every', 'eval_episodes', 'log_every', 'envs',
      'action_repeat', 'time_limit', 'deter_size', 'stoch_size', 'num_units',
      'cnn_depth', 'batch_size', 'batch_length', 'train_every', 'train_steps',
      'model_lr', 'value_lr', 'actor_lr', 'horizon')
  for key in positive:
    if not c[key] > 0:
      raise ConfigError(f'--{key} must be positive, got {c[key]}.')
  for key in ('prefill', 'pretrain'):  # 0: no random episodes, no pretrain.
    if not c[key] >= 0:
      raise ConfigError(f'--{key} must be 0 or more, got {c[key]}.')
  if c['eval_every'] < c['action_repeat']:
    # eval_every // action_repeat agent steps between evaluations: 0 would
    # evaluate forever without collecting.
    raise ConfigError(
        f'--eval_every {c["eval_every"]:g} is less than one agent step of '
        f'--action_repeat {c["action_repeat"]} frames; use at least '
        f'{c["action_repeat"]}.')
  episode = int(c['time_limit'] // c['action_repeat'])
  if c['batch_length'] > episode:
    raise ConfigError(
        f'--batch_length {c["batch_length"]} is longer than an episode can '
        f'be: --time_limit {c["time_limit"]} / --action_repeat '
        f'{c["action_repeat"]} = {episode} steps. Use at most {episode}.')
  if c['log_images'] and c['batch_length'] < 6:  # 5 context frames, then 1+.
    raise ConfigError(
        f'--batch_length {c["batch_length"]} leaves no frame to predict in '
        f'the open-loop GIF, which observes 5 frames: use --batch_length 6 '
        f'or more, or --log_images False.')
  check_task(c['task'], c)
  check_writable(pathlib.Path(c['logdir']).expanduser())


class ConfigError(Exception):
  pass


def check_task(task, config=None):
  """Refuses an unknown suite, task or game (DMC and Atari unbuilt)."""
  suite, _, name = task.partition('_')
  if suite == 'dmc':
    valid = dmc_tasks()
  elif suite == 'atari':
    valid = atari_games()
  elif suite == 'gym':
    try:
      return check_gym(name, config or {})
    except ValueError as e:
      raise ConfigError(str(e)) from e
  else:
    raise ConfigError(
        f'Unknown suite "{suite}" in --task {task}. Valid suites: dmc '
        '(e.g. dmc_walker_walk), atari (e.g. atari_pong) and gym (any '
        'Gymnasium id, e.g. gym_HalfCheetah-v5).')
  if name not in valid:
    kind = 'DeepMind Control task' if suite == 'dmc' else 'Atari game'
    raise ConfigError(
        f'Unknown {kind} {name!r} in --task {task}; valid names are: '
        + ', '.join(sorted(valid)))


def dmc_tasks():
  # As wrappers.DeepMindControl names them: domain_task, 'cup' for the
  # domain ball_in_cup (its task name is split at the first underscore).
  return {f"{'cup' if d == 'ball_in_cup' else d}_{t}"
          for d, t in renderer.import_suite().ALL_TASKS
          if d == 'ball_in_cup' or '_' not in d}


def atari_games():
  # The ROMs that ale-py ships and registers as v5 environments (a few, such
  # as joust, it does not), in the snake case of the original's names.
  import ale_py  # pylint: disable=import-outside-toplevel
  import gymnasium as gym  # pylint: disable=import-outside-toplevel
  gym.register_envs(ale_py)
  camel = lambda rom: ''.join(word.title() for word in rom.split('_'))
  return {rom for rom in ale_py.roms.get_all_rom_ids()
          if f'ALE/{camel(rom)}-v5' in gym.registry}


def check_gym(name, config):
  max_steps = gymtask.check(
      name, config.get('action_dist', 'tanh_normal'),
      config.get('expl', 'additive_gaussian'))
  if not max_steps or 'batch_length' not in config:
    return
  # The environment's own limit counts its frames and, like --time_limit,
  # bounds the episodes, which the training sequences must fit in.
  episode = -(-max_steps // config['action_repeat'])
  if config['batch_length'] > episode:
    raise ConfigError(
        f'--batch_length {config["batch_length"]} is longer than an episode '
        f'of gym_{name} can be: its max_episode_steps {max_steps} / '
        f'--action_repeat {config["action_repeat"]} = {episode} steps. Use '
        f'at most {episode}.')


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


def parse_args(define_config, args_type, argv=None):
  """Flags of define_config(), after the values of any --preset.

  args_type is the original's tools.args_type, passed down so that this
  module does not import the files above it.
  """
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
  group = parser
  for key, value in config.items():
    if key in SECTIONS:
      group = parser.add_argument_group(SECTIONS[key])
    parse = named(args_type(value), value)
    group.add_argument(
        f'--{key}', type=parse, default=value, metavar=parse.__name__,
        help=flag_help(key))
  args = parser.parse_args(argv)
  del args.preset
  return args


def named(parse, default):
  # argparse names the type in its errors ("invalid int value: 'abc'"), and
  # the original's parsers are lambdas.
  if isinstance(default, bool):
    parse.__name__ = 'bool'
  elif isinstance(default, int):
    parse.__name__ = 'int'
  elif isinstance(default, pathlib.Path):
    parse.__name__ = 'path'
  return parse


def flag_help(key):
  text = SECTIONS_HELP.get(key, '')
  if key in CHOICES and key not in SECTIONS_HELP:
    text = ' or '.join(
        [', '.join(str(v) for v in CHOICES[key][:-1]), str(CHOICES[key][-1])])
  return (text + ' (default: %(default)s)').strip()


def run(main, define_config, args_type, argv=None):
  """Parses the flags and runs main(config); returns the exit status."""
  argv = sys.argv[1:] if argv is None else list(argv)
  config = parse_args(define_config, args_type, argv)
  try:
    validate(config)
    config.steps = int(config.steps)
    write_config(config)
    try:
      return main(config) or 0
    except progress.Interrupted as e:
      progress.stopped()  # Saves the checkpoint, as main() asked.
      print(f'Stopped by {e}. Collected episodes are kept in '
            f'{config.logdir / "episodes"}.')
      print(resume_message(config, argv))
      return 128 + e.signum
    finally:
      progress.uninstall()
  except (ConfigError, replay.DiskFull, runtime.SeedsError) as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2
  except (progress.NonFiniteLoss, checkpoint.CheckpointError) as e:
    print(f'Error: {e}', file=sys.stderr)
    return 1
  except OSError as e:
    if not isinstance(e, storage.WriteError) and e.errno not in DISK_ERRORS:
      raise
    # A full or read-only disk: the files written so far are complete.
    print(f'Error: {e}', file=sys.stderr)
    print('Free some space. ' + resume_message(config, argv),
          file=sys.stderr)
    return 1


def resume_message(config, argv):
  flags = shlex.join(argv) or f'--logdir {shlex.quote(str(config.logdir))}'
  return f'To resume, run the same command again: python dreamer.py {flags}'
