"""docs/actor_probe.py on the shared tiny run: what it prints, a run untouched."""

import re
import shutil

import pytest

from runs import run
from test_evaluate import fingerprint

POLICIES = ['actor', 'constant -1.0', 'constant -0.5', 'constant +0.0',
            'constant +0.5', 'constant +1.0', 'actor + N(0, 0.3), clipped',
            'actor + N(0, 1.0), clipped', 'uniform random']
NUMBER = r'([-+]?[\d.]+)'
ROW = (rf'^  (.+?) +{NUMBER} ± {NUMBER} +{NUMBER} ± {NUMBER} +{NUMBER} '
       rf'+{NUMBER}$')


def test_prints_the_actor_and_each_policy_and_leaves_the_run(
    cartpole_run, tmp_path):
  logdir = tmp_path / 'run'
  shutil.copytree(cartpole_run[0], logdir)
  # The replay would build its cache anew in the run's folder if it read it.
  shutil.rmtree(logdir / 'episodes' / '.cache')
  before = fingerprint(logdir), sorted(logdir.rglob('*'))
  code, output = run('--logdir', logdir, '--batches', '3',
                     script='docs/actor_probe.py')
  assert code == 0, output[-3000:]
  assert re.search(r'Checkpoint \S+ckpt-3000; 3 batches of 4 x 16 ', output)
  actor = re.search(rf'pre-tanh mean {NUMBER} \({NUMBER} to {NUMBER}\), '
                    rf'std {NUMBER}', output)
  mean, low, high, std = map(float, actor.groups())
  assert low <= mean <= high and std > 0, output
  rows = {name: list(map(float, numbers))
          for name, *numbers in re.findall(ROW, output, re.M)}
  assert list(rows) == POLICIES, output
  assert rows['actor'][2:4] == [0, 0]  # Its difference to itself.
  for name, (ret, _, difference, _, _, _) in rows.items():
    assert abs(ret - rows['actor'][0] - difference) <= 0.0015, name
  # Constant actions differ, so the model's rewards for them do too.
  assert len({rows[name][4] for name in POLICIES[1:6]}) > 1, output
  assert (fingerprint(logdir), sorted(logdir.rglob('*'))) == before


@pytest.mark.parametrize('flags, message', [
    ([], 'has no checkpoint'),
    (['--batches', '1'], '--batches must be at least 2'),
])
def test_refuses_with_a_message(tmp_path, flags, message):
  (tmp_path / 'config.json').write_text('{"task": "dmc_cartpole_balance"}')
  code, output = run('--logdir', tmp_path, *flags,
                     script='docs/actor_probe.py')
  assert code == 2 and message in output, output
