"""The GPU path's set-up on a machine without a GPU, and benchmarks/gpu_check.

No GPU runs TensorFlow here, so these check what a GPU user's machine relies
on and what can be checked on a CPU: forcing the GPU's policy, the hint for a
GPU that TensorFlow cannot use, and the check script at tiny sizes.
"""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf
from tf_keras import mixed_precision as prec

import dreamer
import runs
from runs import run
from support import runtime

HAS_GPU = bool(tf.config.list_physical_devices('GPU'))


def load_gpu_check():
  return runs.load_benchmark('gpu_check')


class TestForceFloat16:

  def test_environment_variable_selects_mixed_float16(
      self, monkeypatch, tmp_path):
    config = dreamer.define_config()
    config.precision, config.logdir = 16, tmp_path
    monkeypatch.setenv(runtime.FORCE_FLOAT16, '1')
    try:
      assert runtime.set_precision(config) == 'mixed_float16'
      config.precision = 32  # --precision 32 stays float32.
      assert runtime.set_precision(config) == 'float32'
    finally:
      prec.set_global_policy('float32')

  @pytest.mark.skipif(HAS_GPU, reason='a GPU picks mixed_float16 anyway')
  def test_without_it_a_cpu_keeps_its_own_policy(self, monkeypatch, tmp_path):
    config = dreamer.define_config()
    config.precision, config.logdir = 16, tmp_path
    monkeypatch.delenv(runtime.FORCE_FLOAT16, raising=False)
    try:
      assert runtime.set_precision(config) == runtime.cpu_policy_for_16()
    finally:
      prec.set_global_policy('float32')


class TestMissingCudaHint:

  @pytest.mark.skipif(HAS_GPU, reason='TensorFlow sees a GPU here')
  def test_hint_when_nvidia_smi_exists_but_no_gpu(self, monkeypatch):
    monkeypatch.setattr(shutil, 'which', lambda name: '/usr/bin/' + name)
    hint = runtime.missing_cuda_hint()
    assert 'requirements-gpu.txt' in hint
    assert '\n' not in hint

  def test_silent_without_nvidia_smi(self, monkeypatch):
    monkeypatch.setattr(shutil, 'which', lambda name: None)
    assert runtime.missing_cuda_hint() is None


class TestLossScaleRules:
  """gpu_check's reading of the optimizers' states after each update."""

  def states(self, scales, iterations):
    return [dict(scale=s, iterations=i) for s, i in zip(scales, iterations)]

  def test_skips_that_settle_pass(self):
    check = load_gpu_check().check_loss_scale
    result = check(self.states(
        [2 ** 15, 2 ** 14, 2 ** 13, 2 ** 13, 2 ** 13], [0, 0, 0, 1, 2]))
    assert result['ok'] and result['skipped'] == 2

  def test_a_skip_that_counts_an_iteration_fails(self):
    # tf-keras's own behaviour, where TF 2.2 (the original) did not count.
    check = load_gpu_check().check_loss_scale
    result = check(self.states([2 ** 15, 2 ** 14, 2 ** 14], [0, 1, 2]))
    assert not result['consistent'] and not result['ok']

  def test_still_skipping_at_the_end_fails(self):
    check = load_gpu_check().check_loss_scale
    result = check(self.states([2 ** 15, 2 ** 14, 2 ** 13], [0, 0, 0]))
    assert result['consistent'] and not result['settled']
    assert not result['ok']

  def test_float32_must_apply_every_update(self):
    check = load_gpu_check().check_loss_scale
    assert check(self.states([None] * 3, [0, 1, 2]))['ok']
    # A float32 update that did not count, then one that did.
    result = check(self.states([None] * 4, [0, 1, 1, 2]))
    assert result['settled'] and not result['ok']


def test_tiny_check_runs_on_this_machine(tmp_path):
  out = tmp_path / 'gpu_check.json'
  code, output = run(
      '--tiny', '--updates', '12', '--env_steps', '3', '--out', str(out),
      script='benchmarks/gpu_check.py', timeout=600)
  assert code == 0, output[-3000:]
  if not HAS_GPU:
    assert 'No GPU found: running on the CPU.' in output, output[:500]
  result = json.loads(out.read_text())
  assert result['ok']
  assert set(result['policies']) == {'mixed_float16', 'float32'}
  for policy, res in result['policies'].items():
    assert res['policy'] == policy
    assert res['finite'] and len(res['times']) == 12
    assert all(t > 0 for t in res['times'])
    assert res['projection']['update_hours'] > 0
  float16 = result['policies']['mixed_float16']['optimizers']['model']
  assert float16['scale'] is not None and float16['consistent']
  float32 = result['policies']['float32']['optimizers']['model']
  assert float32['scale'] is None and float32['skipped'] == 0
  assert result['env_step_seconds'] > 0


def test_float16_run_resumes_and_evaluates(tmp_path, monkeypatch):
  """The GPU's code path end to end on a CPU, under mixed_float16.

  Collection, training, summaries, checkpoint, resume and evaluate.py, with
  the policy forced by DREAMER_FORCE_FLOAT16 (inherited by the subprocesses).
  """
  logdir = tmp_path / 'run'
  flags = ['--preset', 'tiny', '--task', 'dmc_cartpole_balance',
           '--logdir', str(logdir), '--prefill', '200', '--time_limit', '200',
           '--eval_every', '400', '--train_every', '200']
  monkeypatch.setenv(runtime.FORCE_FLOAT16, '1')
  code, first = run(*flags, '--steps', '600')
  assert code == 0, first[-3000:]
  assert 'Precision policy: mixed_float16.' in first
  checkpoint = tf.train.latest_checkpoint(str(logdir / 'checkpoints'))
  names = [name for name, _ in tf.train.list_variables(checkpoint)]
  for opt in ('model_opt', 'actor_opt', 'value_opt'):
    assert any(opt in n and 'current_loss_scale' in n for n in names), opt
  code, second = run(*flags, '--steps', '800')
  assert code == 0, second[-3000:]
  assert 'Restored checkpoint' in second
  # Each start records the policy it ran under, set before the record.
  with (logdir / 'seeds.jsonl').open() as f:
    assert [json.loads(line)['policy'] for line in f] == ['mixed_float16'] * 2
  code, evaluated = run(
      '--logdir', str(logdir), '--episodes', '1', script='evaluate.py')
  assert code == 0, evaluated[-3000:]
  lines = [json.loads(line) for line in (logdir / 'metrics.jsonl').open()]
  agent = [line for line in lines if 'model_loss' in line]
  assert agent
  # Our losses are float32 and stay finite; a gradient norm is +inf in a
  # phase with a skipped update, as in the original.
  for line in agent:
    for key in ('model_loss', 'value_loss', 'actor_loss'):
      assert np.isfinite(line[key]), (key, line)
