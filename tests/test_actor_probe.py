"""docs/actor_probe.py on the shared tiny run: what it prints, a run untouched."""

import re
import shutil

from runs import run
from test_evaluate import fingerprint

POLICIES = ['actor', 'constant -1.0', 'constant -0.5', 'constant +0.0',
            'constant +0.5', 'constant +1.0', 'actor + N(0, 0.3), clipped',
            'actor + N(0, 1.0), clipped', 'uniform random']


def test_prints_the_actor_and_each_policy_and_leaves_the_run(
    cartpole_run, tmp_path):
  logdir = tmp_path / 'run'
  shutil.copytree(cartpole_run[0], logdir)
  # The replay would build its cache anew in the run's folder if it read it.
  shutil.rmtree(logdir / 'episodes' / '.cache')
  before = fingerprint(logdir)
  code, output = run('--logdir', logdir, script='docs/actor_probe.py')
  assert code == 0, output[-3000:]
  assert re.search(r'Checkpoint \S+ckpt-3000; one batch of 4 x 16 ', output)
  bound = re.search(r'tanh\(mean\) > 0.99: ([\d.]+), < -0.99: ([\d.]+)',
                    output)
  assert bound and 0 <= float(bound[1]) + float(bound[2]) <= 1, output
  rows = re.findall(r'^  (.+?) +(-?[\d.]+) +(-?[\d.]+) +(-?[\d.]+)$',
                    output, re.M)
  assert [name for name, *_ in rows] == POLICIES, output
  # Constant actions differ, so the model's rewards for them do too.
  rewards = {name: float(reward) for name, _, reward, _ in rows}
  assert len({rewards[name] for name in POLICIES[1:6]}) > 1, output
  assert fingerprint(logdir) == before


def test_refuses_a_run_without_checkpoints(tmp_path):
  (tmp_path / 'config.json').write_text('{"task": "dmc_cartpole_balance"}')
  code, output = run('--logdir', tmp_path, script='docs/actor_probe.py')
  assert code == 2 and 'has no checkpoint' in output, output
