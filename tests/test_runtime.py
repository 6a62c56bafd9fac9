"""support/runtime.py: the seed of each start of a run."""

import json

import pytest

import tools
from support import runtime


def config_of(logdir, seed=0):
  return tools.AttrDict(seed=seed, logdir=logdir, envs=1)


def starts_of(logdir):
  with (logdir / 'seeds.jsonl').open() as f:
    return [json.loads(line) for line in f]


class TestSeedOfStart:

  def test_fresh_run_keeps_the_seed(self, tmp_path, capsys):
    config = config_of(tmp_path, seed=3)
    assert runtime.seed_of_start(config, 0) is config
    assert starts_of(tmp_path) == [dict(frames=0, seed=3)]
    assert 'Resumed' not in capsys.readouterr().out

  def test_resume_draws_from_seed_and_frames(self, tmp_path, capsys):
    seeds = set()
    for seed in (0, 1):
      for frames in (1000, 2000, 43000):
        logdir = tmp_path / f'{seed}-{frames}'
        runtime.seed_of_start(config_of(logdir, seed), 0)
        seeds.add(runtime.seed_of_start(config_of(logdir, seed), frames).seed)
    assert len(seeds) == 6
    assert not seeds & {0, 1}
    assert 'Resumed at 43000 frames (start 2): seed ' in capsys.readouterr().out

  def test_two_starts_at_the_same_frames_differ(self, tmp_path):
    # E.g. a start stopped inside its first training phase stores no episode.
    runtime.seed_of_start(config_of(tmp_path), 0)
    second = runtime.seed_of_start(config_of(tmp_path), 5000).seed
    third = runtime.seed_of_start(config_of(tmp_path), 5000).seed
    assert second != third
    assert starts_of(tmp_path) == [
        dict(frames=0, seed=0), dict(frames=5000, seed=second),
        dict(frames=5000, seed=third)]

  def test_logdir_of_older_code_counts_as_resumed(self, tmp_path):
    # Episodes stored, but no list of starts: not the first start.
    assert runtime.seed_of_start(config_of(tmp_path, 4), 43000).seed != 4

  def test_same_stop_points_same_seeds(self, tmp_path):
    # What --deterministic needs: the same stop points give the same run.
    runs = []
    for name in ('a', 'b'):
      runs.append([runtime.seed_of_start(config_of(tmp_path / name, 5), f).seed
                   for f in (0, 12000, 12000, 30000)])
    assert runs[0] == runs[1] and len(set(runs[0])) == 4

  def test_environment_seeds_stay_valid(self, tmp_path):
    # seed + 1000 + index seeds a test environment's NumPy RandomState.
    for frames in range(1000, 100000, 1000):
      seed = runtime.seed_of_start(config_of(tmp_path, 7), frames).seed
      assert 0 <= seed and seed + 1000 + 16 < 2 ** 32

  def test_users_config_keeps_its_seed(self, tmp_path):
    # The caller's config is the one cli.py reports with; only this start's
    # copy has the drawn seed.
    config = tools.AttrDict(seed=2, logdir=tmp_path, task='dmc_walker_walk')
    resumed = runtime.seed_of_start(config, 5000)
    assert config.seed == 2 and resumed.seed != 2
    assert type(resumed) is tools.AttrDict and resumed.task == config.task

  def test_damaged_list_is_refused_and_kept(self, tmp_path):
    (tmp_path / 'seeds.jsonl').write_text('{"frames": 0, "seed": 0}\n{"fr')
    with pytest.raises(runtime.SeedsError, match='is not one JSON object'):
      runtime.seed_of_start(config_of(tmp_path), 1000)
    assert (tmp_path / 'seeds.jsonl').read_text().endswith('{"fr')
