"""Tests of plotting.py on fake logdirs and the paper's real scores."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import plotting

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCORES = ROOT / 'scores'
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


# Fake logdirs in the layout dreamer.py writes.


def config(task, seed):
  """A config.json like dreamer.py's: every flag, of which we read two."""
  return {
      'logdir': f'logs/{task}/{seed}', 'seed': seed, 'steps': 5e6,
      'eval_every': 1e4, 'log_every': 1e3, 'task': task, 'envs': 1,
      'action_repeat': 2, 'time_limit': 1000, 'prefill': 5000,
      'batch_size': 50, 'batch_length': 50, 'horizon': 15, 'precision': 16,
  }


def metrics_lines(test_returns, train_every=1000):
  """Agent, train-episode and test-episode lines, as dreamer.py logs them."""
  lines = []
  last = max(test_returns, default=0)
  for step in range(train_every, last + 1, train_every):
    lines.append({'step': step, 'train/return': 0.1 * step / 1000,
                  'train/length': 500, 'episodes': step // 1000})
    lines.append({'step': step, 'model_loss': 30.0, 'actor_loss': -1.0,
                  'value_loss': 2.0, 'fps': 12.5})
    if step in test_returns:
      lines.append({'step': step, 'test/return': test_returns[step],
                    'test/length': 500, 'episodes': step // 10000 + 1})
  return [json.dumps(line) for line in lines]


def make_run(rundir, test_returns, task=None, seed=0, extra_lines=()):
  rundir.mkdir(parents=True)
  lines = metrics_lines(test_returns) + list(extra_lines)
  (rundir / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')
  if task:
    (rundir / 'config.json').write_text(json.dumps(config(task, seed)))
  return rundir


def walker_returns(scale):
  # Test episodes every 10k frames after the 5k-frame prefill.
  return {s: scale * s / 1000 for s in range(5000, 205001, 10000)}


@pytest.fixture
def logs(tmp_path):
  root = tmp_path / 'logs'
  # Directory names tell nothing: the task must come from config.json.
  make_run(root / 'a' / 'run1', walker_returns(2.0), 'dmc_walker_walk', 0)
  make_run(root / 'a' / 'run2', walker_returns(3.0), 'dmc_walker_walk', 1)
  make_run(root / 'b', {s: -21.0 + s / 10000 for s in range(10000, 100001,
                                                            10000)},
           'atari_pong', 0)
  # A smoke run without config.json: the task comes from its path.
  make_run(root / 'dmc_cartpole_balance' / 'smoke', {1000: 80.0, 3000: 120.0})
  return root


def run_main(capsys, *argv):
  code = plotting.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err


def parse_table(out):
  """Returns {task: {column: cell}} from the printed table."""
  lines = out.splitlines()
  header = lines.index(next(l for l in lines if l.startswith('task')))
  columns = ['task', 'frames', 'return', 'paper@frames', 'paper final', 'runs']
  rows = {}
  for line in lines[header + 1:]:
    if not line.strip():
      break
    rows[line.split()[0]] = dict(zip(columns, line.split()))
  return rows


def is_png(path):
  data = pathlib.Path(path).read_bytes()
  return len(data) > 1000 and data.startswith(PNG_MAGIC)


# The paper's curves, against the numbers in the spec.


@pytest.fixture(scope='module')
def reference():
  return plotting.load_reference(SCORES)


@pytest.mark.parametrize('task, frames, expected', [
    ('dmc_walker_walk', 105000, 137), ('dmc_walker_stand', 105000, 315),
    ('dmc_cartpole_balance', 105000, 472),
    ('dmc_pendulum_swingup', 105000, 365),
    ('dmc_walker_walk', 205000, 508), ('dmc_cartpole_balance', 205000, 827),
])
def test_paper_mean_matches_spec(reference, task, frames, expected):
  xs, mean, low, high = plotting.paper_curve(reference, task)
  value = plotting.interpolate(xs, mean, frames)
  assert value == pytest.approx(expected, abs=1)
  assert low[list(xs).index(frames)] <= value <= high[list(xs).index(frames)]


def test_interpolation_halfway_by_hand(reference):
  # walker_walk seed means: 137.19 at 105k and 508.37 at 205k frames, so at
  # 155k the line passes (137.19 + 508.37) / 2 = 322.78.
  xs, mean, _, _ = plotting.paper_curve(reference, 'dmc_walker_walk')
  assert plotting.interpolate(xs, mean, 155000) == pytest.approx(322.78,
                                                                 abs=0.05)
  # A quarter of the way from 105k to 205k: 137.19 + 0.25 * 371.18 = 229.98.
  assert plotting.interpolate(xs, mean, 130000) == pytest.approx(229.98,
                                                                 abs=0.05)


def test_interpolation_outside_range_is_none():
  xs, ys = np.array([5000.0, 105000.0]), np.array([10.0, 20.0])
  assert plotting.interpolate(xs, ys, 3000) is None
  assert plotting.interpolate(xs, ys, 105001) is None
  assert plotting.interpolate(xs, ys, 5000) == 10.0


def test_paper_curve_uses_seeds_that_reached_each_point(reference):
  # One walker_walk seed stops at 3.3M frames; the last points average the
  # four seeds that go on, and the band spans only them.
  xs, mean, low, high = plotting.paper_curve(reference, 'dmc_walker_walk')
  records = json.loads((SCORES / 'dreamer.json').read_text())
  seeds = [r for r in records if r['task'] == 'dmc_walker_walk']
  finals = [r['ys'][-1] for r in seeds if len(r['xs']) == len(xs)]
  assert len(finals) == 4 and xs[-1] == 4905000
  assert mean[-1] == pytest.approx(np.mean(finals))
  assert (low[-1], high[-1]) == (min(finals), max(finals))
  assert plotting.paper_curve(reference, 'atari_pong') is None


def test_x_limit_keeps_short_runs_visible(reference):
  paper = plotting.paper_curve(reference, 'dmc_walker_walk')
  def run(last):
    return plotting.Run(pathlib.Path('r'), 'dmc_walker_walk', 0,
                        np.array([1000.0, last]), np.array([1.0, 2.0]))
  assert plotting.x_limit([run(3000)], paper) == 7500
  assert plotting.x_limit([run(3e6)], paper) == 4905000
  assert plotting.x_limit([run(6e6)], paper) == 6e6
  assert plotting.x_limit([run(3000)], None) == 3000


def test_latest_uses_last_frame_all_seeds_reached(capsys):
  def run(last, scale):
    steps = np.arange(5000.0, last + 1, 10000.0)
    return plotting.Run(pathlib.Path('r'), 'dmc_walker_walk', 0, steps,
                        scale * steps / 1000)
  # The second seed is behind: compare at 105k, (105 * 2 + 105 * 4) / 2.
  assert plotting.latest([run(205000, 2.0), run(105000, 4.0)]) == (
      105000.0, 315.0)
  assert 'end at different frames' in capsys.readouterr().err


# The command line.


def test_main_writes_plots_and_table(logs, tmp_path, capsys, reference):
  outdir = tmp_path / 'plots'
  code, out, err = run_main(capsys, '--indir', logs, '--outdir', outdir)
  assert code == 0, err
  tasks = ['atari_pong', 'dmc_cartpole_balance', 'dmc_walker_walk']
  for task in tasks:
    assert is_png(outdir / f'{task}.png')
    assert f'Wrote {outdir / task}.png' in out
  rows = parse_table(out)
  assert sorted(rows) == tasks
  walker = rows['dmc_walker_walk']
  # Mean of the two seeds' last test returns: (2 + 3) * 205 / 2 = 512.5.
  assert walker['frames'] == '205000' and walker['return'] == '512.5'
  assert walker['runs'] == '2'
  assert float(walker['paper@frames']) == pytest.approx(508.4, abs=0.1)
  final = plotting.paper_curve(reference, 'dmc_walker_walk')[1][-1]
  assert walker['paper final'] == f'{final:.1f}'
  # Atari has no paper curve.
  assert rows['atari_pong'] == {
      'task': 'atari_pong', 'frames': '100000', 'return': '-11.0',
      'paper@frames': '-', 'paper final': '-', 'runs': '1'}
  # The smoke run ends before the paper's first point at 5k frames.
  cartpole = rows['dmc_cartpole_balance']
  assert (cartpole['frames'], cartpole['return']) == ('3000', '120.0')
  assert cartpole['paper@frames'] == '-' and cartpole['paper final'] != '-'


def test_malformed_line_is_skipped_with_warning(tmp_path, capsys):
  rundir = make_run(tmp_path / 'run', walker_returns(1.0), 'dmc_walker_stand',
                    extra_lines=['{"step": 206000, "test/ret', '[1, 2]'])
  lines = len(metrics_lines(walker_returns(1.0)))
  code, out, err = run_main(capsys, '--indir', rundir, '--outdir',
                            tmp_path / 'plots')
  assert code == 0, err
  assert f'{rundir / "metrics.jsonl"}:{lines + 1}: skipping malformed' in err
  assert f'metrics.jsonl:{lines + 2}: skipping line that is not' in err
  assert parse_table(out)['dmc_walker_stand']['frames'] == '205000'
  assert is_png(tmp_path / 'plots' / 'dmc_walker_stand.png')


def test_run_without_test_returns_is_skipped(logs, tmp_path, capsys):
  early = logs / 'dmc_walker_walk' / 'early'
  early.mkdir(parents=True)
  (early / 'metrics.jsonl').write_text(
      json.dumps({'step': 1000, 'train/return': 3.0, 'train/length': 500,
                  'episodes': 1}) + '\n')
  code, out, err = run_main(capsys, '--indir', logs, '--outdir',
                            tmp_path / 'plots')
  assert code == 0, err
  assert f'{early / "metrics.jsonl"}: no test/return yet' in err
  assert parse_table(out)['dmc_walker_walk']['runs'] == '2'
  # With only that run there is nothing to plot: an error, not a crash.
  code, out, err = run_main(capsys, '--indir', early, '--outdir',
                            tmp_path / 'plots2')
  assert code == 2 and 'has a test return yet' in err


def test_no_metrics_is_an_error(tmp_path, capsys):
  first, second = tmp_path / 'empty1', tmp_path / 'empty2'
  first.mkdir()
  second.mkdir()
  code, out, err = run_main(capsys, '--indir', first, second, '--outdir',
                            tmp_path / 'plots')
  assert code == 2
  assert f'no metrics.jsonl found under: {first}, {second}' in err
  assert not (tmp_path / 'plots').exists()


def test_unknown_task_is_an_error(tmp_path, capsys):
  make_run(tmp_path / 'somewhere' / 'run', walker_returns(1.0))
  code, _, err = run_main(capsys, '--indir', tmp_path / 'somewhere',
                          '--outdir', tmp_path / 'plots')
  assert code == 2 and 'cannot tell the task' in err


def test_script_errors_without_traceback(tmp_path):
  result = subprocess.run(
      [sys.executable, str(ROOT / 'plotting.py'), '--indir',
       str(tmp_path / 'missing'), '--outdir', str(tmp_path / 'plots')],
      capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 2
  assert 'no such directory' in result.stderr
  assert 'Traceback' not in result.stderr


# --verify: our runs against a reference's seeds at its evaluation points.


def write_reference(path, seeds, xs=(5000.0, 105000.0, 205000.0)):
  """A file in dreamer.json's format: {task: [ys per seed]} on xs."""
  records = [{'task': task, 'method': 'dreamer', 'seed': str(i),
              'xs': list(xs)[:len(ys)], 'ys': ys}
             for task, rows in seeds.items() for i, ys in enumerate(rows)]
  path.write_text(json.dumps(records))
  return path


# Bands: 5k [0, 100], 105k [100, 300], 205k [300, 700]. The paper's spacing
# of 100k frames makes each window ±25k frames.
BANDS = {'dmc_walker_walk': [[0.0, 100.0, 300.0], [100.0, 300.0, 700.0]]}


def verify(capsys, tmp_path, logs_root, reference):
  outdir = tmp_path / 'verify'
  code, out, err = run_main(
      capsys, '--indir', logs_root, '--outdir', outdir, '--verify',
      '--reference', reference)
  report = json.loads((outdir / 'verify.json').read_text())
  return code, out, report, (outdir / 'verify.md').read_text()


def test_verify_within_at_every_point_reached_exits_0(tmp_path, capsys):
  root = tmp_path / 'logs'
  make_run(root / 'a', walker_returns(2.0), 'dmc_walker_walk', 0)
  make_run(root / 'b', walker_returns(3.0), 'dmc_walker_walk', 1)
  reference = write_reference(tmp_path / 'ref.json', BANDS)
  code, out, report, markdown = verify(capsys, tmp_path, root, reference)
  assert code == 0 and report['status'] == 0 and report['passed']
  (task,) = report['tasks']
  assert [p['frames'] for p in task['points']] == [5000, 105000, 205000]
  # The 5k window, [-20k, 30k], holds the evaluations at 5k, 15k and 25k:
  # (10 + 30 + 50) / 3 = 30 and (15 + 45 + 75) / 3 = 45.
  first, second, third = task['points']
  assert first['ours'] == {'mean': 37.5, 'min': 30.0, 'max': 45.0, 'runs': 2,
                           'of': 2, 'returns': [30.0, 45.0]}
  assert first['per_run'][0]['frames'] == [5000, 15000, 25000]
  assert first['per_run'][0]['evaluations'] == 3
  assert first['per_run'][0]['episodes'] == 3
  assert first['reference'] == {'mean': 50.0, 'min': 0.0, 'max': 100.0}
  # 85k to 125k: 2 x 105 = 210 and 3 x 105 = 315, by symmetry.
  assert second['ours']['mean'] == 262.5
  assert second['window'] == [80000, 130000]
  # The runs end at 205k: 185k, 195k and 205k, so 2 x 195 and 3 x 195.
  assert third['ours']['mean'] == 487.5
  assert third['per_run'][1]['evaluations'] == 3
  assert [p['verdict'] for p in task['points']] == ['within'] * 3
  assert task['verdict'] == 'within' and task['at'] == 205000
  assert '| dmc_walker_walk | 105k | 80k–130k | 2 of 2 | 5/5, 5/5 | 262.5 | ' \
         '210.0–315.0 | 200.0 | 100.0–300.0 | within |' in markdown
  assert '- dmc_walker_walk: **within** at 205k frames (2 of 2 runs)' in \
      markdown


def test_verify_below_at_the_last_point_exits_1(tmp_path, capsys):
  root = tmp_path / 'logs'
  make_run(root / 'a', walker_returns(1.0), 'dmc_walker_walk', 0)
  reference = write_reference(tmp_path / 'ref.json', BANDS)
  code, out, report, _ = verify(capsys, tmp_path, root, reference)
  verdicts = [p['verdict'] for p in report['tasks'][0]['points']]
  # 15 at 5k (within), 105 at 105k (within), 195 at 205k (below 300).
  assert verdicts == ['within', 'within', 'below']
  assert code == 1 and report['below'] == ['dmc_walker_walk']
  assert 'Below the reference at the last point all runs reach: ' \
         'dmc_walker_walk' in out


def test_verify_window_mean_not_the_nearest_evaluation(tmp_path, capsys):
  root = tmp_path / 'logs'
  # Evaluations every 10k frames from 0: 100k and 110k are equally near
  # 105k. The one at 100k alone (150) would be within [100, 300]; the
  # window's five, 80k to 120k, average (50 + 60 + 150 + 20 + 70) / 5 = 70.
  returns = {s: 50.0 for s in range(0, 120001, 10000)}
  returns.update({80000: 50.0, 90000: 60.0, 100000: 150.0, 110000: 20.0,
                  120000: 70.0})
  make_run(root / 'a', returns, 'dmc_walker_walk', 0)
  reference = write_reference(tmp_path / 'ref.json', BANDS)
  code, _, report, _ = verify(capsys, tmp_path, root, reference)
  point = report['tasks'][0]['points'][1]
  assert point['frames'] == 105000
  assert point['per_run'][0]['frames'] == [80000, 90000, 100000, 110000,
                                           120000]
  assert point['ours']['mean'] == pytest.approx(70.0)
  assert point['verdict'] == 'below' and code == 1


def test_verify_window_holds_both_of_a_tie(tmp_path, capsys):
  # A reference every 10k frames from 5k gives a window of ±2.5k, narrower
  # than half of the run's 10k interval: both evaluations 5k away count.
  root = tmp_path / 'logs'
  make_run(root / 'a', {s: s / 1000 for s in range(10000, 50001, 10000)},
           'dmc_walker_walk', 0)
  reference = write_reference(
      tmp_path / 'ref.json', {'dmc_walker_walk': [[0.0, 0.0], [40.0, 40.0]]},
      xs=(15000.0, 25000.0))
  code, _, report, _ = verify(capsys, tmp_path, root, reference)
  first, second = report['tasks'][0]['points']
  assert first['per_run'][0]['frames'] == [10000, 20000]
  assert first['ours']['mean'] == 15.0 and second['ours']['mean'] == 25.0
  assert code == 0


def test_verify_judges_the_last_point_all_runs_reach(tmp_path, capsys):
  root = tmp_path / 'logs'
  # Run a stops at 105k; run b goes on to 205k, below the band there.
  make_run(root / 'a', {s: 2.0 * s / 1000 for s in range(5000, 105001, 10000)},
           'dmc_walker_walk', 0)
  make_run(root / 'b', walker_returns(1.0), 'dmc_walker_walk', 1)
  reference = write_reference(tmp_path / 'ref.json', BANDS)
  code, out, report, markdown = verify(capsys, tmp_path, root, reference)
  task = report['tasks'][0]
  last = task['points'][-1]
  assert (last['frames'], last['ours']['runs'], last['ours']['of']) == (
      205000, 1, 2)
  assert last['verdict'] == 'below'
  # At 105k, both: 2 x 95 (85k-105k) = 190 and 105; mean 147.5, within.
  assert task['points'][1]['ours']['mean'] == 147.5
  assert task['verdict'] == 'within' and task['at'] == 105000
  assert code == 0
  assert '| 205k | 180k–230k | 1 of 2 | 3/3 |' in markdown
  assert '**within** at 105k frames (2 of 2 runs)' in markdown


def test_verify_an_evaluation_half_an_interval_short_reaches(tmp_path,
                                                             capsys):
  root = tmp_path / 'logs'
  # Evaluations every 10k from 4k, the last at 104k: it reaches 105k.
  make_run(root / 'a', {s: 2.0 * s / 1000 for s in range(4000, 104001, 10000)},
           'dmc_walker_walk', 0)
  reference = write_reference(tmp_path / 'ref.json', BANDS)
  code, _, report, _ = verify(capsys, tmp_path, root, reference)
  task = report['tasks'][0]
  assert task['at'] == 105000 and code == 0


def test_verify_only_tasks_without_reference_exits_3(tmp_path, capsys):
  root = tmp_path / 'logs'
  make_run(root / 'pong', {10000: -20.0, 20000: -19.0}, 'atari_pong', 0)
  reference = write_reference(tmp_path / 'ref.json', BANDS)
  code, out, report, markdown = verify(capsys, tmp_path, root, reference)
  assert report['tasks'][0]['verdict'] == 'no reference'
  assert code == 3 and report['status'] == 3 and not report['passed']
  assert report['not judged'] == ['atari_pong']
  assert 'Not judged: atari_pong: the reference has no curve for ' \
         'atari_pong' in out
  assert 'Nothing could be judged' in out
  assert '- atari_pong: **no reference**' in markdown


def test_verify_no_point_reached_exits_3(tmp_path, capsys):
  root = tmp_path / 'logs'
  smoke = make_run(root / 'smoke', {1000: 80.0, 3000: 120.0},
                   'dmc_walker_walk', 0)
  reference = write_reference(tmp_path / 'ref.json', BANDS)
  code, out, report, _ = verify(capsys, tmp_path, root, reference)
  assert report['tasks'][0]['verdict'] == 'not reached'
  assert code == 3
  assert f"1 of 1 runs end before the reference's first point, 5k frames: " \
         f'{smoke} (3k)' in out


def test_verify_one_run_short_of_every_point_exits_3(tmp_path, capsys):
  # A long run does not stand in for a short one: no point has both.
  root = tmp_path / 'logs'
  make_run(root / 'long', walker_returns(2.0), 'dmc_walker_walk', 0)
  make_run(root / 'smoke', {1000: 80.0, 3000: 120.0}, 'dmc_walker_walk', 1)
  reference = write_reference(tmp_path / 'ref.json', BANDS)
  code, _, report, _ = verify(capsys, tmp_path, root, reference)
  task = report['tasks'][0]
  assert [p['ours']['runs'] for p in task['points']] == [1, 1, 1]
  assert task['verdict'] == 'not reached' and code == 3


def test_verify_judged_task_beside_an_unjudged_one_exits_0(tmp_path, capsys):
  root = tmp_path / 'logs'
  make_run(root / 'walker', walker_returns(2.0), 'dmc_walker_walk', 0)
  make_run(root / 'pong', {10000: -20.0, 20000: -19.0}, 'atari_pong', 0)
  reference = write_reference(tmp_path / 'ref.json', BANDS)
  code, out, report, _ = verify(capsys, tmp_path, root, reference)
  assert code == 0 and report['not judged'] == ['atari_pong']
  assert 'Not judged: atari_pong' in out


def test_verify_bad_reference_exits_2(tmp_path, capsys):
  root = tmp_path / 'logs'
  make_run(root / 'a', walker_returns(2.0), 'dmc_walker_walk', 0)
  bad = tmp_path / 'ref.json'
  bad.write_text('[{"task": "dmc_walker_walk"}]')
  code, _, err = run_main(capsys, '--indir', root, '--outdir',
                          tmp_path / 'v', '--verify', '--reference', bad)
  assert code == 2 and 'unexpected record' in err
  code, _, err = run_main(capsys, '--indir', root, '--outdir',
                          tmp_path / 'v', '--verify', '--reference',
                          tmp_path / 'missing.json')
  assert code == 2 and 'cannot read' in err


def test_verify_exit_codes_from_the_script(tmp_path):
  # The statuses a shell script sees: 0, 1, 3 and 2.
  root = tmp_path / 'logs'
  make_run(root / 'ok' / 'a', walker_returns(2.0), 'dmc_walker_walk', 0)
  make_run(root / 'low' / 'a', walker_returns(1.0), 'dmc_walker_walk', 0)
  make_run(root / 'none' / 'a', {1000: 1.0, 3000: 2.0}, 'dmc_walker_walk', 0)
  reference = write_reference(tmp_path / 'ref.json', BANDS)
  def status(indir):
    return subprocess.run(
        [sys.executable, str(ROOT / 'plotting.py'), '--indir', str(indir),
         '--outdir', str(tmp_path / 'out'), '--verify', '--reference',
         str(reference)], capture_output=True, text=True, timeout=120,
        check=False).returncode
  assert [status(root / n) for n in ('ok', 'low', 'none', 'missing')] == [
      0, 1, 3, 2]


def test_several_episodes_per_evaluation(tmp_path, capsys):
  # --eval_episodes 3 logs the mean and the episodes on one line; the
  # original's format logs one line per episode (several eval envs).
  root = tmp_path / 'logs'
  lines = [json.dumps({'step': s, 'test/return': 2.0 * s / 1000,
                       'test/returns': [2.0 * s / 1000 - 1, 2.0 * s / 1000,
                                        2.0 * s / 1000 + 1],
                       'test/length': 500, 'episodes': 1})
           for s in range(5000, 125001, 10000)]
  rundir = make_run(root / 'a', {}, 'dmc_walker_walk', 0, extra_lines=lines)
  steps, returns, episodes = plotting.read_test_episodes(
      rundir / 'metrics.jsonl')
  assert list(episodes) == [3] * len(steps)
  assert returns[0] == 10.0
  reference = write_reference(tmp_path / 'ref.json', BANDS)
  code, _, report, markdown = verify(capsys, tmp_path, root, reference)
  second = report['tasks'][0]['points'][1]
  assert second['per_run'][0]['evaluations'] == 5
  assert second['per_run'][0]['episodes'] == 15
  assert '| 5/15 |' in markdown and code == 0


def test_episode_lines_at_one_step_are_one_evaluation(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('\n'.join(json.dumps(line) for line in [
      {'step': 5000, 'test/return': 10.0},
      {'step': 5000, 'test/return': 20.0},
      {'step': 15000, 'test/return': 7.0, 'test/returns': [6.0, 8.0]},
      {'step': 25000, 'test/return': 7.0, 'test/returns': 'no'},
  ]) + '\n')
  steps, returns, episodes = plotting.read_test_episodes(path)
  assert list(steps) == [5000, 15000]
  assert list(returns) == [15.0, 7.0] and list(episodes) == [2, 2]


def test_verify_against_the_paper_by_default(logs, tmp_path, capsys):
  outdir = tmp_path / 'verify'
  code, out, _ = run_main(
      capsys, '--indir', logs, '--outdir', outdir, '--verify')
  report = json.loads((outdir / 'verify.json').read_text())
  assert report['reference'] == str(SCORES / 'dreamer.json')
  walker = next(t for t in report['tasks'] if t['task'] == 'dmc_walker_walk')
  assert [p['frames'] for p in walker['points']] == [5000, 105000, 205000]
  # The paper at 105k: mean 137, and our 262.5 is above its band.
  assert walker['points'][1]['reference']['mean'] == pytest.approx(137.2, 0.01)
  assert walker['points'][1]['verdict'] == 'above'
  # Judged at 205k, where 487.5 (185k-205k) is within the paper's band;
  # the smoke run ends at 3k, before the paper's 5k; pong has no curve.
  assert walker['points'][2]['ours']['mean'] == 487.5
  verdicts = {t['task']: t['verdict'] for t in report['tasks']}
  assert verdicts == {'atari_pong': 'no reference',
                      'dmc_cartpole_balance': 'not reached',
                      'dmc_walker_walk': 'within'}
  assert code == 0


def test_export_round_trip_is_within(tmp_path, capsys):
  root = tmp_path / 'logs'
  make_run(root / 'a', walker_returns(2.0), 'dmc_walker_walk', 0)
  make_run(root / 'b', walker_returns(3.0), 'dmc_walker_walk', 1)
  exported = tmp_path / 'ours.json'
  code, _, _ = run_main(capsys, '--indir', root, '--outdir', tmp_path / 'p',
                        '--export', exported)
  assert code == 0
  code, _, report, _ = verify(capsys, tmp_path, root, exported)
  points = report['tasks'][0]['points']
  assert len(points) == 21  # Every evaluation of ours is a reference point.
  # The window of a 10k spacing holds only the evaluation at the point.
  assert all(p['per_run'][0]['evaluations'] == 1 for p in points)
  assert all(p['verdict'] == 'within' for p in points) and code == 0
