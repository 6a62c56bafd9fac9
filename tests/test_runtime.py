"""support/runtime.py: the seed of each start of a run."""

import tools
from support import runtime


def config_of(seed=0):
  return tools.AttrDict(seed=seed, envs=1)


class TestSeedOfStart:

  def test_fresh_run_keeps_the_seed(self):
    config = config_of(seed=3)
    assert runtime.seed_of_start(config, 0) is config

  def test_resume_draws_from_seed_and_frames(self, capsys):
    seeds = {runtime.seed_of_start(config_of(seed), frames).seed
             for seed in (0, 1) for frames in (1000, 2000, 43000)}
    assert len(seeds) == 6
    assert not seeds & {0, 1}
    assert 'Resumed at 43000 frames: seed ' in capsys.readouterr().out

  def test_same_stop_point_same_seed(self):
    # What --deterministic needs: the same stop points give the same run.
    first = runtime.seed_of_start(config_of(5), 12000).seed
    assert runtime.seed_of_start(config_of(5), 12000).seed == first

  def test_environment_seeds_stay_valid(self):
    # seed + 1000 + index seeds a test environment's NumPy RandomState.
    for frames in range(1000, 200000, 1000):
      seed = runtime.seed_of_start(config_of(7), frames).seed
      assert 0 <= seed and seed + 1000 + 16 < 2 ** 32

  def test_users_config_keeps_its_seed(self):
    # The caller's config is the one cli.py reports with; only this start's
    # copy has the drawn seed.
    config = tools.AttrDict(seed=2, task='dmc_cartpole_balance')
    resumed = runtime.seed_of_start(config, 5000)
    assert config.seed == 2 and resumed.seed != 2
    assert type(resumed) is tools.AttrDict and resumed.task == config.task
