"""support/evaluation.py: --eval_episodes N, the mean of N test episodes as
`test/return`."""

import json

import numpy as np
import pytest

import dreamer
import plotting
import tools
from runs import read_metrics, run
from support import cli
from support import evaluation

EPISODE = [('test/return', 12.5), ('test/length', 500), ('episodes', 3)]


def append(path, *entries):
  with path.open('a') as f:
    for entry in entries:
      f.write(json.dumps(entry) + '\n')


def test_one_episode_changes_nothing(tmp_path):
  # The original's default: the episode's own line is test/return.
  assert evaluation.episode_metrics(EPISODE, 'test', 1) == EPISODE
  append(tmp_path / 'metrics.jsonl', {'step': 5000, 'test/return': 3.0})
  before = (tmp_path / 'metrics.jsonl').read_text()
  evaluated = evaluation.Evaluation(tmp_path, 1)
  append(tmp_path / 'metrics.jsonl', {'step': 15000, 'test/return': 4.0})
  assert evaluated.write_mean() is None
  assert (tmp_path / 'metrics.jsonl').read_text() == before + json.dumps(
      {'step': 15000, 'test/return': 4.0}) + '\n'


def test_default_is_the_originals_one_episode():
  assert dreamer.define_config().eval_episodes == 1
  config = cli.parse_args(
      dreamer.define_config, tools.args_type, ['--eval_episodes', '0'])
  with pytest.raises(cli.ConfigError, match='--eval_episodes must be'):
    cli.validate(config)


def test_episodes_renamed_only_for_test_with_several():
  assert evaluation.episode_metrics(EPISODE, 'train', 3) == EPISODE
  assert evaluation.episode_metrics(EPISODE, 'test', 3) == [
      ('test/episode_return', 12.5), ('test/episode_length', 500),
      ('episodes', 3)]


def test_mean_of_the_episodes_after_the_mark(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  # An evaluation at the same step that a kill interrupted: not counted.
  append(path, {'step': 10000, 'test/episode_return': 900.0})
  evaluated = evaluation.Evaluation(tmp_path, 3)
  append(path, *[{'step': 10000, 'test/episode_return': r,
                  'test/episode_length': 500, 'episodes': 4}
                 for r in (10.0, 20.0, 60.0)])
  line = evaluated.write_mean()
  assert line == {'step': 10000, 'test/return': 30.0, 'test/length': 500.0,
                  'test/returns': [10.0, 20.0, 60.0], 'test/episodes': 3}
  assert read_metrics(tmp_path)[-1] == line
  # plotting.py counts the three episodes behind the one evaluation.
  steps, returns, episodes = plotting.read_test_episodes(path)
  assert (list(steps), list(returns), list(episodes)) == (
      [10000], [30.0], [3])


def test_no_episode_no_line(tmp_path):
  evaluated = evaluation.Evaluation(tmp_path, 3)
  append(tmp_path / 'metrics.jsonl', {'step': 1000, 'model_loss': 1.0})
  assert evaluated.write_mean() is None
  assert len(read_metrics(tmp_path)) == 1


def test_run_logs_the_mean_of_two_episodes(tmp_path):
  logdir = tmp_path / 'run'
  # Short episodes: one evaluation at 200 frames, after the prefill.
  code, output = run('--preset', 'tiny', '--task', 'dmc_cartpole_balance',
                     '--time_limit', '200', '--prefill', '200',
                     '--eval_every', '200', '--train_every', '200',
                     '--log_every', '200', '--steps', '400',
                     '--eval_episodes', '2', '--log_images', 'False',
                     '--logdir', str(logdir), timeout=900)
  assert code == 0, output[-3000:]
  metrics = read_metrics(logdir)
  episodes = [m for m in metrics if 'test/episode_return' in m]
  means = [m for m in metrics if 'test/return' in m]
  # One evaluation: two episodes, one mean.
  assert len(episodes) == 2 and len(means) == 1
  (mean,) = means
  assert mean['test/returns'] == [e['test/episode_return'] for e in episodes]
  assert mean['test/return'] == pytest.approx(np.mean(mean['test/returns']))
  assert mean['step'] == episodes[0]['step'] == 200
  assert mean['test/length'] == 100  # Agent steps: 200 frames / repeat 2.
  assert 'Test return over 2 episodes' in output


class TestSchedule:
  """Where dreamer.py's loop evaluates: a resumed run on the grid of one never
  stopped (prefill 5k, --eval_every 10k: 5k, 15k, 25k, ...)."""

  STATE = ('carried', 'simulation', 'state')  # After a start's first pass.

  def config(self, logdir, eval_every=10000, action_repeat=2):
    return tools.AttrDict(
        logdir=logdir, eval_every=eval_every, action_repeat=action_repeat)

  def test_fresh_run_evaluates_at_once(self, tmp_path):
    config = self.config(tmp_path)
    assert evaluation.due(config, 5000, None)
    append(tmp_path / 'metrics.jsonl', {'step': 5000, 'train/return': 1.0})
    assert evaluation.due(config, 5000, None)

  def test_after_an_evaluation_a_whole_collection(self, tmp_path):
    append(tmp_path / 'metrics.jsonl', {'step': 5000, 'test/return': 1.0})
    assert evaluation.steps_to_collect(self.config(tmp_path), 5000, None) == (
        5000)

  def test_resumed_between_evaluations_collects_up_to_the_next(
      self, tmp_path, capsys):
    append(tmp_path / 'metrics.jsonl', {'step': 5000, 'test/return': 1.0},
           {'step': 15000, 'test/return': 2.0},
           {'step': 18000, 'train/return': 3.0})
    config = self.config(tmp_path)
    assert not evaluation.due(config, 18000, None)
    assert 'due at 25000 frames' in capsys.readouterr().out
    assert evaluation.steps_to_collect(config, 18000, None) == 3500

  def test_resumed_when_one_is_due(self, tmp_path):
    # Killed after the collection, before (or during) the evaluation.
    append(tmp_path / 'metrics.jsonl', {'step': 15000, 'test/return': 2.0})
    assert evaluation.due(self.config(tmp_path), 25000, None)
    assert evaluation.due(self.config(tmp_path), 26000, None)

  def test_after_the_first_pass_the_originals_loop(self, tmp_path):
    # The carried state holds any overshoot of the last collection (several
    # environments, episodes of varying length); the log must not correct
    # for it a second time.
    append(tmp_path / 'metrics.jsonl', {'step': 15000, 'test/return': 2.0})
    config = self.config(tmp_path)
    assert evaluation.due(config, 18000, self.STATE)
    assert evaluation.steps_to_collect(config, 27000, self.STATE) == 5000

  def test_grid_off_the_action_repeat_still_collects(self, tmp_path):
    append(tmp_path / 'metrics.jsonl', {'step': 15000, 'test/return': 2.0})
    config = self.config(tmp_path, eval_every=1001, action_repeat=2)
    assert evaluation.steps_to_collect(config, 16000, None) == 1

  def test_an_evaluation_cut_short_does_not_count(self, tmp_path):
    # --eval_episodes 3: two episode lines of the 25k evaluation, no mean.
    append(tmp_path / 'metrics.jsonl', {'step': 15000, 'test/return': 2.0},
           {'step': 25000, 'test/episode_return': 3.0},
           {'step': 25000, 'test/episode_return': 4.0})
    assert evaluation.due(self.config(tmp_path), 25000, None)

  def test_truncated_line_is_skipped(self, tmp_path):
    append(tmp_path / 'metrics.jsonl', {'step': 15000, 'test/return': 2.0})
    with (tmp_path / 'metrics.jsonl').open('a') as f:
      f.write('{"step": 25000, "test/ret')
    assert evaluation.frames_until_due(tmp_path, 20000, 10000) == 5000
