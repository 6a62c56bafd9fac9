"""support/runtime.py: the seed and precision policy of each start of a run."""

import json

import pytest
import tensorflow as tf
from tf_keras import mixed_precision as prec

import tools
from support import runtime


def config_of(logdir, seed=0, precision=16):
  return tools.AttrDict(seed=seed, logdir=logdir, envs=1, precision=precision)


def start(frames, seed, policy='float32', precision=16):
  return dict(frames=frames, seed=seed, precision=precision, policy=policy)


def starts_of(logdir):
  with (logdir / 'seeds.jsonl').open() as f:
    return [json.loads(line) for line in f]


class TestSeedOfStart:

  def test_fresh_run_keeps_the_seed(self, tmp_path, capsys):
    config = config_of(tmp_path, seed=3)
    assert runtime.seed_of_start(config, 0) is config
    assert starts_of(tmp_path) == [start(0, 3)]
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
        start(0, 0), start(5000, second), start(5000, third)]

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
    config = tools.AttrDict(
        seed=2, logdir=tmp_path, task='dmc_walker_walk', precision=16)
    resumed = runtime.seed_of_start(config, 5000)
    assert config.seed == 2 and resumed.seed != 2
    assert type(resumed) is tools.AttrDict and resumed.task == config.task

  def test_damaged_list_is_refused_and_kept(self, tmp_path):
    (tmp_path / 'seeds.jsonl').write_text('{"frames": 0, "seed": 0}\n{"fr')
    with pytest.raises(runtime.SeedsError, match='is not one JSON object'):
      runtime.seed_of_start(config_of(tmp_path), 1000)
    assert (tmp_path / 'seeds.jsonl').read_text().endswith('{"fr')


class TestPolicyOfRun:
  """A resume keeps the run's precision policy on another kind of machine."""

  def write_starts(self, logdir, *starts):
    (logdir / 'seeds.jsonl').write_text(
        ''.join(json.dumps(s) + '\n' for s in starts))

  def test_fresh_run_takes_the_machines(self, tmp_path):
    for chosen in ('float32', 'mixed_bfloat16', 'mixed_float16'):
      assert runtime.policy_of_run(config_of(tmp_path), chosen) == chosen

  def test_start_records_its_policy(self, tmp_path):
    try:
      prec.set_global_policy('mixed_bfloat16')
      runtime.seed_of_start(config_of(tmp_path), 0)
    finally:
      prec.set_global_policy('float32')
    runtime.seed_of_start(config_of(tmp_path, precision=32), 1000)
    policies = [(s['precision'], s['policy']) for s in starts_of(tmp_path)]
    assert policies == [(16, 'mixed_bfloat16'), (32, 'float32')]

  @pytest.mark.parametrize('machine', ['mixed_bfloat16', 'mixed_float16'])
  def test_a_float32_run_stays_float32(self, tmp_path, capsys, machine):
    # Started on a CPU without native bfloat16, resumed on one with it or
    # on a GPU.
    self.write_starts(tmp_path, start(0, 0, 'mixed_float16'),
                      start(5000, 1), start(9000, 2))
    assert runtime.policy_of_run(config_of(tmp_path), machine) == 'float32'
    out = capsys.readouterr().out
    assert 'last start (9000 frames) used float32; keeping it' in out
    assert f'this machine picks {machine}' in out

  @pytest.mark.parametrize('run, machine', [
      ('mixed_float16', 'float32'),  # To a CPU: float16 emulated.
      ('mixed_bfloat16', 'float32'),  # To a CPU without native bfloat16.
      ('mixed_bfloat16', 'mixed_float16')])  # To a GPU.
  def test_other_policies_take_the_machines(
      self, tmp_path, capsys, run, machine):
    self.write_starts(tmp_path, start(0, 0, run))
    assert runtime.policy_of_run(config_of(tmp_path), machine) == machine
    assert (f'used {run}; this start uses {machine}, this machine\'s policy'
            in capsys.readouterr().out)

  def test_forced_float16_leaves_float32(self, tmp_path, monkeypatch, capsys):
    # The way for a float32 run moved to a GPU to take mixed_float16.
    self.write_starts(tmp_path, start(0, 0))
    monkeypatch.setenv(runtime.FORCE_FLOAT16, '1')
    config = config_of(tmp_path)
    assert runtime.policy_of_run(config, 'mixed_float16') == 'mixed_float16'
    assert 'the run mixes precisions from here' in capsys.readouterr().out

  def test_damaged_list_leaves_it_to_seed_of_start(self, tmp_path):
    # evaluate.py and the probe go on; dreamer.py refuses it in seed_of_start.
    (tmp_path / 'seeds.jsonl').write_text('[1, 2]\n')
    assert runtime.policy_of_run(config_of(tmp_path), 'mixed_bfloat16') == \
        'mixed_bfloat16'
    with pytest.raises(runtime.SeedsError, match=r'\(\[1, 2\]\)'):
      runtime.seed_of_start(config_of(tmp_path), 1000)

  @pytest.mark.parametrize('line', [
      '{"frames": 0}', '{"frames": 0, "seed": 0, "policy": "float64"}', '7'])
  def test_entries_that_are_no_start_are_refused(self, tmp_path, line):
    (tmp_path / 'seeds.jsonl').write_text(line + '\n')
    with pytest.raises(runtime.SeedsError, match='is not one JSON object'):
      runtime.read_starts(tmp_path / 'seeds.jsonl')

  def test_another_precision_flag_is_followed(self, tmp_path, capsys):
    self.write_starts(tmp_path, start(0, 0, 'mixed_bfloat16'))
    config = config_of(tmp_path, precision=32)
    assert runtime.policy_of_run(config, 'float32') == 'float32'
    assert 'under --precision 16; this start uses float32 for --precision 32' \
        in capsys.readouterr().out

  def test_same_policy_says_nothing(self, tmp_path, capsys):
    self.write_starts(tmp_path, start(0, 0, 'mixed_bfloat16'))
    assert runtime.policy_of_run(
        config_of(tmp_path), 'mixed_bfloat16') == 'mixed_bfloat16'
    assert capsys.readouterr().out == ''

  def test_older_logdirs_take_the_machines(self, tmp_path):
    # seeds.jsonl of code before the policy was recorded; no list at all.
    self.write_starts(tmp_path, dict(frames=0, seed=0))
    assert runtime.policy_of_run(config_of(tmp_path), 'float32') == 'float32'
    config = tools.AttrDict(precision=16, logdir=None)  # Tests, benchmarks.
    assert runtime.policy_of_run(config, 'mixed_bfloat16') == 'mixed_bfloat16'

  def test_set_precision_applies_it(self, tmp_path, monkeypatch):
    # The policy TensorFlow builds the agent under is the run's: here a
    # float32 run resumed on a CPU with native bfloat16.
    if tf.config.list_physical_devices('GPU'):
      pytest.skip('the machine\'s policy on a GPU is mixed_float16')
    monkeypatch.setattr(runtime, 'cpu_policy_for_16', lambda: 'mixed_bfloat16')
    try:
      assert runtime.set_precision(config_of(tmp_path)) == 'mixed_bfloat16'
      self.write_starts(tmp_path, start(0, 0, 'float32'))
      assert runtime.set_precision(config_of(tmp_path)) == 'float32'
      assert prec.global_policy().name == 'float32'
    finally:
      prec.set_global_policy('float32')
