"""cli.py: flags, presets and the refusal of bad input."""

import os
import pathlib
import subprocess
import sys

import gymnasium
import numpy as np
import pytest

import dreamer
import tools
from support import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]


class TestCommandLine:

  def test_help_lists_every_flag_with_default(self):
    result = subprocess.run(
        [sys.executable, 'dreamer.py', '--help'], cwd=ROOT,
        capture_output=True, text=True, timeout=120,
        env={**os.environ, 'COLUMNS': '200'})
    assert result.returncode == 0, result.stderr
    for key, value in dreamer.define_config().items():
      assert f'--{key}' in result.stdout, key
    assert '(default: 5000000.0)' in result.stdout
    assert '(default: dmc_walker_walk)' in result.stdout

  def test_flag_parsing(self):
    config = cli.parse_args(dreamer.define_config, tools.args_type, [
        '--steps', '1e4', '--prefill', '2e3', '--pcont', 'True',
        '--logdir', '~/runs/x', '--action_repeat', '4'])
    assert config.steps == 10000 and config.prefill == 2000
    assert config.pcont is True
    assert config.logdir == pathlib.Path('~/runs/x').expanduser()
    assert config.action_repeat == 4 and isinstance(config.action_repeat, int)

  def test_presets_and_explicit_flags_win(self):
    config = cli.parse_args(
        dreamer.define_config, tools.args_type,
        ['--preset', 'atari', '--task', 'atari_pong', '--horizon', '12'])
    assert config.action_dist == 'onehot' and config.pcont is True
    assert config.clip_rewards == 'tanh'
    assert config.horizon == 12

  def test_cpu_preset_is_the_measured_bundle(self):
    # docs/learning.md measured exactly these; the schedule stays the paper's.
    config = cli.parse_args(dreamer.define_config, tools.args_type, ['--preset', 'cpu'])
    default = cli.parse_args(dreamer.define_config, tools.args_type, [])
    changed = {k: v for k, v in vars(config).items()
               if v != vars(default)[k]}
    assert changed == dict(
        cnn_depth=16, num_units=200, deter_size=100, stoch_size=20,
        batch_size=16, precision=32, rssm_noise='independent')
    config = cli.parse_args(
        dreamer.define_config, tools.args_type,
        ['--preset', 'cpu', '--rssm_noise', 'shared'])
    assert config.rssm_noise == 'shared' and config.num_units == 200

  def test_parsers_are_named_in_errors(self, capsys):
    with pytest.raises(SystemExit):
      cli.parse_args(dreamer.define_config, tools.args_type, ['--envs', 'x'])
    assert "invalid int value: 'x'" in capsys.readouterr().err

  def test_resume_message_quotes_the_command(self):
    config = cli.parse_args(dreamer.define_config, tools.args_type, [])
    message = cli.resume_message(config, ['--logdir', 'my runs/a'])
    assert message.endswith("python dreamer.py --logdir 'my runs/a'")

  def test_task_names_checked_without_an_environment(self):
    with pytest.raises(cli.ConfigError, match='walker_walk') as error:
      cli.check_task('dmc_walker_fly')
    assert 'cup_catch' in str(error.value)
    assert 'point_mass' not in str(error.value)  # Split at its underscore.
    cli.check_task('dmc_cup_catch')
    cli.check_task('atari_space_invaders')
    with pytest.raises(cli.ConfigError, match="Atari game 'notagame'"):
      cli.check_task('atari_notagame')
    # A ROM that ale-py ships but registers no v5 environment for.
    with pytest.raises(cli.ConfigError, match="Atari game 'joust'"):
      cli.check_task('atari_joust')

  @pytest.mark.parametrize('flags, message', [
      (['--precision', '8'], '--precision 8 is not valid; choose one of: 16, 32'),
      (['--parallel', 'gpu'], 'choose one of: none, thread, process'),
      (['--batch_size', '0'], '--batch_size must be positive'),
      (['--batch_length', '600'], 'longer than an episode can be'),
      (['--eval_every', '1'], '--eval_every 1 is less than one agent step'),
      (['--batch_length', '5'], 'no frame to predict in the open-loop GIF'),
      (['--task', 'dmc_walker_fly'], 'walker_walk'),
      (['--task', 'mujoco_cheetah'], 'Unknown suite "mujoco"'),
      (['--prefill', '-1'], '--prefill must be 0 or more'),
      (['--pretrain', '-5'], '--pretrain must be 0 or more'),
      (['--rssm_noise', 'none'], 'choose one of: shared, independent'),
  ])
  def test_bad_input_is_refused(self, flags, message, tmp_path):
    config = cli.parse_args(
        dreamer.define_config, tools.args_type,
        flags + ['--logdir', str(tmp_path / 'x')])
    with pytest.raises(cli.ConfigError, match=message):
      cli.validate(config)
    assert not (tmp_path / 'x').exists()


class VectorOnly(gymnasium.Env):
  """Neither renders nor observes an image."""
  metadata = {'render_modes': []}
  observation_space = gymnasium.spaces.Box(-1, 1, (3,), np.float32)
  action_space = gymnasium.spaces.Box(-1, 1, (2,), np.float32)

  def __init__(self, render_mode=None):
    self.render_mode = render_mode


class MultiBinaryActions(VectorOnly):
  metadata = {'render_modes': ['rgb_array']}
  action_space = gymnasium.spaces.MultiBinary(3)


gymnasium.register('TestVectorOnly-v0', entry_point=VectorOnly)
gymnasium.register('TestMultiBinary-v0', entry_point=MultiBinaryActions)


class TestGymTasks:

  @pytest.mark.parametrize('flags, message', [
      (['--task', 'gym_CartPol-v1'],
       "Unknown Gymnasium environment id 'CartPol-v1'.*Close matches: "
       'gym_CartPole-v1'),
      (['--task', 'gym_no_such_module_xyz:Dot-v0'],
       "Cannot import the module 'no_such_module_xyz'"),
      (['--task', 'gym_TestVectorOnly-v0'], 'has no image'),
      (['--task', 'gym_TestMultiBinary-v0'], 'MultiBinary.*does not support'),
      (['--task', 'gym_CartPole-v1'],
       'discrete actions.*--action_dist onehot --expl epsilon_greedy.*'
       '--preset atari'),
      (['--task', 'gym_CartPole-v1', '--action_dist', 'onehot'],
       'got --action_dist onehot --expl additive_gaussian'),
      (['--task', 'gym_HalfCheetah-v5', '--action_dist', 'onehot'],
       'continuous actions.*--action_dist tanh_normal'),
      (['--task', 'gym_dot_env:Dot-v0', '--batch_length', '51'],
       'max_episode_steps 100 / --action_repeat 2 = 50 steps'),
  ])
  def test_bad_gym_task_is_refused(self, flags, message, tmp_path):
    config = cli.parse_args(
        dreamer.define_config, tools.args_type,
        flags + ['--logdir', str(tmp_path / 'x')])
    with pytest.raises(cli.ConfigError, match=message):
      cli.validate(config)
    assert not (tmp_path / 'x').exists()

  @pytest.mark.parametrize('flags', [
      ['--task', 'gym_CartPole-v1', '--preset', 'atari'],
      ['--task', 'gym_CartPole-v1', '--action_dist', 'onehot', '--expl',
       'epsilon_greedy'],
      ['--task', 'gym_HalfCheetah-v5'],
      ['--task', 'gym_dot_env:Dot-v0', '--batch_length', '50'],
  ])
  def test_gym_task_is_accepted(self, flags, tmp_path):
    config = cli.parse_args(
        dreamer.define_config, tools.args_type,
        flags + ['--logdir', str(tmp_path / 'x')])
    cli.validate(config)

  def test_module_error_exits_2_and_writes_nothing(self, tmp_path):
    (tmp_path / 'broken_envs.py').write_text(
        'raise RuntimeError("the registration failed on purpose")\n')
    logdir = tmp_path / 'run'
    result = subprocess.run(
        [sys.executable, 'dreamer.py', '--task', 'gym_broken_envs:Mine-v0',
         '--logdir', str(logdir)], cwd=ROOT, capture_output=True, text=True,
        timeout=300, env={**os.environ, 'PYTHONPATH': str(tmp_path)})
    assert result.returncode == 2, result.stderr
    assert ("Error: Cannot import the module 'broken_envs' of --task "
            'gym_broken_envs:Mine-v0: RuntimeError: the registration failed '
            'on purpose') in result.stderr
    assert 'Traceback' not in result.stderr
    assert not logdir.exists()
