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
  last = max(test_returns)
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
  assert code == 1 and 'has a test return yet' in err


def test_no_metrics_is_an_error(tmp_path, capsys):
  first, second = tmp_path / 'empty1', tmp_path / 'empty2'
  first.mkdir()
  second.mkdir()
  code, out, err = run_main(capsys, '--indir', first, second, '--outdir',
                            tmp_path / 'plots')
  assert code == 1
  assert f'no metrics.jsonl found under: {first}, {second}' in err
  assert not (tmp_path / 'plots').exists()


def test_unknown_task_is_an_error(tmp_path, capsys):
  make_run(tmp_path / 'somewhere' / 'run', walker_returns(1.0))
  code, _, err = run_main(capsys, '--indir', tmp_path / 'somewhere',
                          '--outdir', tmp_path / 'plots')
  assert code == 1 and 'cannot tell the task' in err


def test_script_errors_without_traceback(tmp_path):
  result = subprocess.run(
      [sys.executable, str(ROOT / 'plotting.py'), '--indir',
       str(tmp_path / 'missing'), '--outdir', str(tmp_path / 'plots')],
      capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 1
  assert 'no such directory' in result.stderr
  assert 'Traceback' not in result.stderr


# --verify: our runs against a reference's seeds at its evaluation points.


def write_reference(path, seeds):
  """A file in dreamer.json's format: {task: [ys per seed]} on 5k/105k/205k."""
  records = [{'task': task, 'method': 'dreamer', 'seed': str(i),
              'xs': [5000.0, 105000.0, 205000.0][:len(ys)], 'ys': ys}
             for task, rows in seeds.items() for i, ys in enumerate(rows)]
  path.write_text(json.dumps(records))
  return path


# Bands: 5k [0, 20], 105k [100, 300], 205k [500, 700].
BANDS = {'dmc_walker_walk': [[0.0, 100.0, 500.0], [20.0, 300.0, 700.0]]}


def verify(capsys, tmp_path, logs_root, reference):
  outdir = tmp_path / 'verify'
  code, out, err = run_main(
      capsys, '--indir', logs_root, '--outdir', outdir, '--verify',
      '--reference', reference)
  report = json.loads((outdir / 'verify.json').read_text())
  return code, out, report, (outdir / 'verify.md').read_text()


def test_verify_within_at_every_point_reached(tmp_path, capsys):
  root = tmp_path / 'logs'
  make_run(root / 'a', walker_returns(2.0), 'dmc_walker_walk', 0)
  make_run(root / 'b', walker_returns(3.0), 'dmc_walker_walk', 1)
  reference = write_reference(tmp_path / 'ref.json', BANDS)
  code, out, report, markdown = verify(capsys, tmp_path, root, reference)
  assert code == 0
  (task,) = report['tasks']
  assert [p['frames'] for p in task['points']] == [5000, 105000, 205000]
  # Seeds at 2 and 3 x frames / 1000: 10 and 15 at 5k, 210 and 315 at 105k.
  first, second, third = task['points']
  assert first['ours'] == {'mean': 12.5, 'min': 10.0, 'max': 15.0, 'runs': 2,
                           'returns': [10.0, 15.0]}
  assert first['reference'] == {'mean': 10.0, 'min': 0.0, 'max': 20.0}
  assert second['ours']['mean'] == 262.5
  assert third['ours']['mean'] == 512.5
  assert [p['verdict'] for p in task['points']] == ['within'] * 3
  assert report['passed'] and task['verdict'] == 'within'
  assert '| dmc_walker_walk | 105k | 262.5 | 210.0–315.0 | 2 | 200.0 | ' \
         '100.0–300.0 | within |' in markdown
  assert '- dmc_walker_walk: **within**' in markdown


def test_verify_below_at_the_last_point_fails(tmp_path, capsys):
  root = tmp_path / 'logs'
  make_run(root / 'a', walker_returns(1.0), 'dmc_walker_walk', 0)
  reference = write_reference(tmp_path / 'ref.json', BANDS)
  code, out, report, _ = verify(capsys, tmp_path, root, reference)
  verdicts = [p['verdict'] for p in report['tasks'][0]['points']]
  # 5 at 5k (within), 105 at 105k (within), 205 at 205k (below 500).
  assert verdicts == ['within', 'within', 'below']
  assert code == 1 and report['below'] == ['dmc_walker_walk']
  assert 'Below the reference at the last point reached: dmc_walker_walk' in out


def test_verify_judges_the_last_point_reached_only(tmp_path, capsys):
  root = tmp_path / 'logs'
  # Below at 5k, within at 105k, and stops before 205k.
  returns = {s: 2.0 * s / 1000 for s in range(5000, 105001, 10000)}
  returns[5000] = -50.0
  make_run(root / 'a', returns, 'dmc_walker_walk', 0)
  reference = write_reference(tmp_path / 'ref.json', BANDS)
  code, _, report, _ = verify(capsys, tmp_path, root, reference)
  points = report['tasks'][0]['points']
  assert [p['verdict'] for p in points] == ['below', 'within']
  assert code == 0


def test_verify_uses_the_nearest_evaluation(tmp_path, capsys):
  root = tmp_path / 'logs'
  # Evaluations every 10k frames from 1k: 101k is nearest to 105k; nothing
  # within half an interval of 205k.
  make_run(root / 'a', {s: s / 1000 for s in range(1000, 191001, 10000)},
           'dmc_walker_walk', 0)
  reference = write_reference(tmp_path / 'ref.json', BANDS)
  _, _, report, _ = verify(capsys, tmp_path, root, reference)
  points = report['tasks'][0]['points']
  assert [(p['frames'], p['ours']['mean']) for p in points] == [
      (5000, 1.0), (105000, 101.0)]


def test_verify_task_without_reference(tmp_path, capsys):
  root = tmp_path / 'logs'
  make_run(root / 'pong', {10000: -20.0, 20000: -19.0}, 'atari_pong', 0)
  reference = write_reference(tmp_path / 'ref.json', BANDS)
  code, _, report, _ = verify(capsys, tmp_path, root, reference)
  assert report['tasks'][0]['verdict'] == 'no reference'
  assert code == 0


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
  assert all(p['verdict'] == 'within' for p in points) and code == 0
