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
import sys

import checkpoint
import progress
import replay
import storage
import tools
import wrappers

ACTIVATIONS = ('elu', 'relu', 'swish', 'leaky_relu')


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
  choices = dict(
      precision=(16, 32), parallel=('none', 'thread', 'process'),
      clip_rewards=('none', 'tanh'), dense_act=ACTIVATIONS,
      cnn_act=ACTIVATIONS, action_dist=('tanh_normal', 'onehot'),
      expl=('additive_gaussian', 'completely_random', 'epsilon_greedy'),
      rssm_noise=('shared', 'independent'))
  for key, valid in choices.items():
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
  episode = int(c['time_limit'] // c['action_repeat'])
  if c['batch_length'] > episode:
    raise ConfigError(
        f'--batch_length {c["batch_length"]} is longer than an episode can '
        f'be: --time_limit {c["time_limit"]} / --action_repeat '
        f'{c["action_repeat"]} = {episode} steps. Use at most {episode}.')
  check_task(c['task'])
  check_writable(pathlib.Path(c['logdir']).expanduser())


class ConfigError(Exception):
  pass


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


def parse_args(define_config, argv=None):
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


def run(main, define_config, argv=None):
  """Parses the flags and runs main(config); returns the exit status."""
  config = parse_args(define_config, argv)
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
      print(resume_message(config))
      return 128 + e.signum
  except (ConfigError, replay.DiskFull) as e:
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
    print('Free some space. ' + resume_message(config), file=sys.stderr)
    return 1


DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def resume_message(config):
  flags = ' '.join(sys.argv[1:]) or f'--logdir {config.logdir}'
  return f'To resume, run the same command again: python dreamer.py {flags}'
