"""cli.py: flags, presets and the refusal of bad input."""

import os
import pathlib
import subprocess
import sys

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

  @pytest.mark.parametrize('flags, message', [
      (['--precision', '8'], '--precision 8 is not valid; choose one of: 16, 32'),
      (['--parallel', 'gpu'], 'choose one of: none, thread, process'),
      (['--batch_size', '0'], '--batch_size must be positive'),
      (['--batch_length', '600'], 'longer than an episode can be'),
      (['--task', 'dmc_walker_fly'], 'walker_walk'),
      (['--task', 'gym_cartpole'], 'Unknown suite "gym"'),
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
