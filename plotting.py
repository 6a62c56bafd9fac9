"""Plots learning curves of Dreamer runs against the paper's curves.

Each run directory holds a `metrics.jsonl` written by `dreamer.py`; its episode
lines carry `test/return` at environment frame `step`. Runs are grouped by task
(from the run's `config.json`, else from a `dmc_…`/`atari_…`/`gym_…` component
of its path) and each task gets one PNG with our runs, the paper's 5-seed mean
with its min-max band, and the baselines' final scores. A table comparing our
latest test return with the paper's at the same number of frames is printed.

`--verify` judges each point of the reference from the runs that reach it,
each by the mean of its evaluations in a window around the point, and exits
0 when every judged task is within or above the reference's band, 1 when
one is below, 3 when nothing could be judged, and 2 on bad input.

Usage:

  python plotting.py --indir logs/ --outdir plots/
  python plotting.py --indir logs/ --outdir plots/ --verify
  python plotting.py --indir logs/run1 logs/run2 --outdir plots/ \
      --scores scores/

This module never imports TensorFlow, so it runs on any machine with NumPy
and Matplotlib.
"""

import argparse
import collections
import dataclasses
import json
import math
import os
import pathlib
import sys

import numpy as np

# The Agg canvas is attached to each figure explicitly instead of calling
# `matplotlib.use('Agg')`, so importing this module leaves the backend of the
# importer (a notebook, a test session) untouched and never needs a display.
from matplotlib import colormaps
from matplotlib import figure as mpl_figure
from matplotlib import ticker
from matplotlib.backends import backend_agg


METRICS_FILE = 'metrics.jsonl'
CONFIG_FILE = 'config.json'
TEST_RETURN = 'test/return'
# With --eval_episodes N > 1, dreamer.py logs the mean as test/return and the
# N episodes' returns under this key on the same line.
TEST_RETURNS = 'test/returns'
TASK_PREFIXES = ('dmc_', 'atari_', 'gym_')
DEFAULT_SCORES = pathlib.Path(__file__).resolve().parent / 'scores'

# Legend names and colours of the baselines in `scores/baselines.json`.
BASELINES = {
    'd4pg_100m': ('D4PG 100M', 'tab:purple'),
    'a3c_100m_proprio': ('A3C 100M proprio', 'tab:brown'),
    'planet_1e6': ('PlaNet 1M', 'tab:green'),
    'slac_3e6': ('SLAC 3M', 'tab:orange'),
}

# Our runs take up at least this fraction of the x axis, so a short run is not
# squashed against the left edge by the paper's 5M-frame curve; once our run
# reaches 1 / ZOOM of the paper's length the whole paper curve is shown.
ZOOM = 2.5


class PlotError(Exception):
  """A problem with the inputs that ends the program with a message."""


@dataclasses.dataclass
class Run:
  """Test returns of one run, sorted by frame."""
  path: pathlib.Path  # The run directory, holding metrics.jsonl.
  task: str
  seed: object  # From config.json; None when unknown.
  steps: np.ndarray
  returns: np.ndarray  # Mean over the evaluation's episodes.
  episodes: np.ndarray = None  # Episodes per evaluation; None: one each.

  def __post_init__(self):
    if self.episodes is None:
      self.episodes = np.ones(len(self.steps), dtype=np.int64)


@dataclasses.dataclass
class Reference:
  """The paper's scores: per-seed curves and the baselines' final scores."""
  curves: dict  # task -> list of (xs, ys) arrays, one pair per seed.
  baselines: dict  # task -> {baseline key: final score}.


def warn(message):
  print(f'warning: {message}', file=sys.stderr)


# Loading runs.


def find_metrics(indirs):
  """Returns the metrics files under the given directories, without repeats."""
  found = {}
  for indir in indirs:
    indir = pathlib.Path(indir).expanduser()
    if indir.is_file() and indir.name == METRICS_FILE:
      found.setdefault(indir.resolve(), indir)
      continue
    for root, dirs, files in os.walk(indir):
      dirs.sort()  # Deterministic order of runs and of warnings.
      if METRICS_FILE in files:
        path = pathlib.Path(root) / METRICS_FILE
        # Overlapping indirs (logs/ and logs/run1) must not count a run twice.
        found.setdefault(path.resolve(), path)
  return list(found.values())


def read_test_returns(path):
  """Returns (steps, returns) of the test evaluations in one metrics file."""
  steps, returns, _ = read_test_episodes(path)
  return steps, returns


def read_test_episodes(path):
  """Returns (steps, returns, episodes) of the evaluations in a metrics file.

  An evaluation is every test episode logged at one step: one line per
  episode (the original's `--eval_episodes 1`; several with several eval
  envs or a resumed run), or a line whose `test/returns` lists the episodes
  of `--eval_episodes N`. Its return is the mean over those episodes and
  `episodes` counts them. Malformed lines are reported and skipped: a run
  that is still writing can leave a truncated last line.
  """
  by_step = collections.defaultdict(list)
  # Undecodable bytes become malformed lines instead of an exception.
  with open(path, encoding='utf-8', errors='replace') as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      entry = _parse_line(line, path, number)
      if entry is None or TEST_RETURN not in entry:
        continue
      step, values = entry.get('step'), _episode_returns(entry)
      if not (_is_number(step) and values):
        warn(f'{path}:{number}: skipping line with a non-numeric '
             f'step, {TEST_RETURN} or {TEST_RETURNS}')
        continue
      by_step[float(step)].extend(values)
  steps = np.array(sorted(by_step), dtype=np.float64)
  returns = np.array([np.mean(by_step[s]) for s in steps], dtype=np.float64)
  episodes = np.array([len(by_step[s]) for s in steps], dtype=np.int64)
  return steps, returns, episodes


def _episode_returns(entry):
  """The returns of the episodes behind one line, or None if malformed."""
  if TEST_RETURNS in entry:
    values = entry[TEST_RETURNS]
    if not (isinstance(values, list) and values
            and all(_is_number(v) for v in values)):
      return None
    return [float(v) for v in values]
  value = entry[TEST_RETURN]
  return [float(value)] if _is_number(value) else None


def _parse_line(line, path, number):
  try:
    entry = json.loads(line)
  except json.JSONDecodeError as e:
    warn(f'{path}:{number}: skipping malformed JSON line ({e.msg})')
    return None
  if not isinstance(entry, dict):
    warn(f'{path}:{number}: skipping line that is not a JSON object')
    return None
  return entry


def _is_number(value):
  # JSON booleans are ints in Python but never a step or a return.
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def read_config(rundir):
  """Returns the run's config.json as a dict, or {} if absent or unreadable."""
  path = rundir / CONFIG_FILE
  if not path.exists():
    return {}
  try:
    config = json.loads(path.read_text(encoding='utf-8'))
  except (OSError, json.JSONDecodeError) as e:
    warn(f'{path}: cannot read ({e}); inferring the task from the path')
    return {}
  return config if isinstance(config, dict) else {}


def infer_task(rundir, config):
  """Takes the task from the config, else from the run's path."""
  if isinstance(config.get('task'), str) and config['task']:
    return config['task']
  # The deepest matching component is the most specific one, e.g. for
  # sweeps/dmc_tasks/dmc_walker_walk/seed_0.
  for part in reversed(rundir.resolve().parts):
    if part.startswith(TASK_PREFIXES):
      return part
  raise PlotError(
      f'cannot tell the task of the run in {rundir}: it has no {CONFIG_FILE} '
      f'with a "task" entry and no path component starting with '
      f'{" or ".join(TASK_PREFIXES)}')


def load_runs(indirs):
  """Returns {task: [Run, ...]} for every run with test returns.

  Raises PlotError if no metrics file is found at all or none has a test
  return yet; runs without test returns are reported and skipped.
  """
  missing = [str(d) for d in indirs
             if not pathlib.Path(d).expanduser().exists()]
  if missing:
    raise PlotError(f'no such directory: {", ".join(missing)}')
  paths = find_metrics(indirs)
  if not paths:
    raise PlotError(
        f'no {METRICS_FILE} found under: {", ".join(map(str, indirs))}')
  runs = collections.defaultdict(list)
  for path in paths:
    rundir = path.parent
    config = read_config(rundir)
    task = infer_task(rundir, config)
    steps, returns, episodes = read_test_episodes(path)
    if not len(steps):
      warn(f'{path}: no {TEST_RETURN} yet; skipping this run')
      continue
    runs[task].append(
        Run(rundir, task, config.get('seed'), steps, returns, episodes))
  if not runs:
    raise PlotError(
        f'none of the {len(paths)} runs found has a test return yet')
  return dict(sorted(runs.items()))


# The paper's scores.


def load_reference(scores_dir):
  """Loads dreamer.json (required) and baselines.json (optional)."""
  scores_dir = pathlib.Path(scores_dir).expanduser()
  curves_path = scores_dir / 'dreamer.json'
  if not curves_path.exists():
    raise PlotError(f'no dreamer.json in the scores directory {scores_dir}')
  curves = read_curves(curves_path)
  baselines_path = scores_dir / 'baselines.json'
  baselines = {}
  if baselines_path.exists():
    baselines = _read_json(baselines_path)
  else:
    warn(f'no baselines.json in {scores_dir}; plotting without baselines')
  return Reference(dict(curves), baselines)


def read_curves(path):
  """Reads a file in dreamer.json's format: {task: [(xs, ys), ...]}."""
  curves = collections.defaultdict(list)
  try:
    for record in _read_json(path):
      xs = np.asarray(record['xs'], dtype=np.float64)
      ys = np.asarray(record['ys'], dtype=np.float64)
      curves[record['task']].append((xs, ys))
  except (KeyError, TypeError, ValueError) as e:
    raise PlotError(f'unexpected record in {path}: {e!r}') from e
  return dict(curves)


def _read_json(path):
  try:
    return json.loads(path.read_text(encoding='utf-8'))
  except (OSError, json.JSONDecodeError) as e:
    raise PlotError(f'cannot read {path}: {e}') from e


def paper_curve(reference, task):
  """Returns (xs, mean, min, max) of the paper's seeds, or None.

  Some seeds of the paper stop early (e.g. one walker_walk seed at 3.3M
  frames), so each point aggregates the seeds that reached it. The seeds share
  one grid of frames (5k, 105k, ...), so no resampling is needed.
  """
  seeds = reference.curves.get(task)
  if not seeds:
    return None
  xs = max((x for x, _ in seeds), key=len)
  table = np.full((len(seeds), len(xs)), np.nan)
  for row, (x, y) in enumerate(seeds):
    if not np.array_equal(x, xs[:len(x)]):
      raise PlotError(f'the paper seeds of {task} do not share their frames')
    table[row, :len(y)] = y
  return (xs, np.nanmean(table, 0), np.nanmin(table, 0),
          np.nanmax(table, 0))


def interpolate(xs, ys, x):
  """Linear interpolation of ys at x; None outside [xs[0], xs[-1]].

  No extrapolation: below the paper's first point (5k frames) or past its last
  one, the paper has nothing to say.
  """
  if not len(xs) or x < xs[0] or x > xs[-1]:
    return None
  return float(np.interp(x, xs, ys))


# Our runs, aggregated over seeds.


def mean_curve(runs):
  """Returns (steps, mean return) over the frames that all runs cover.

  Runs are interpolated onto the union of their test steps; with the usual
  fixed evaluation interval the steps coincide and this is a plain mean.
  """
  start = max(run.steps[0] for run in runs)
  stop = min(run.steps[-1] for run in runs)
  steps = np.unique(np.concatenate([run.steps for run in runs]))
  steps = steps[(steps >= start) & (steps <= stop)]
  values = [np.interp(steps, run.steps, run.returns) for run in runs]
  return steps, np.mean(values, 0)


def latest(runs):
  """Returns (frames, return): our latest test return, mean over seeds.

  With several seeds this is the last step that every seed reached, so a seed
  that is behind does not mix an early return into a late average.
  """
  steps, means = mean_curve(runs)
  if not len(steps):
    # Seeds without overlapping steps: fall back to the most advanced seed.
    run = max(runs, key=lambda r: r.steps[-1])
    return float(run.steps[-1]), float(run.returns[-1])
  lasts = {float(run.steps[-1]) for run in runs}
  if len(lasts) > 1:
    warn(f'the runs of {runs[0].task} end at different frames; '
         f'comparing at {int(steps[-1])}, the last frame all of them reached')
  return float(steps[-1]), float(means[-1])


# Plotting.


def run_labels(runs):
  """Names runs by seed, or by directory when seeds are unknown or repeat."""
  labels = [f'seed {r.seed}' if r.seed is not None else r.path.name
            for r in runs]
  if len(set(labels)) < len(labels):
    labels = [f'{r.path.name} ({label})' if label != r.path.name
              else str(r.path) for r, label in zip(runs, labels)]
  return labels


def x_limit(runs, paper):
  """Right end of the x axis: our runs, and as much of the paper as fits.

  At most ZOOM times our last frame of the paper is shown, so a 3000-frame
  smoke run stays visible instead of being squashed by the 5M-frame paper
  curve; a long run shows the whole paper curve.
  """
  ours = max(run.steps[-1] for run in runs)
  if paper is None:
    return ours
  return max(ours, min(paper[0][-1], ZOOM * ours))


def format_frames(value, _=None):
  if abs(value) >= 1e6:
    return f'{value / 1e6:g}M'
  if abs(value) >= 1e3:
    return f'{value / 1e3:g}k'
  return f'{value:g}'


def plot_task(task, runs, reference, outdir):
  """Writes <outdir>/<task>.png and returns its path."""
  fig = mpl_figure.Figure(figsize=(9, 4.8), dpi=100)
  backend_agg.FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  # Drawing order sets the legend order: ours first, then the references.
  _plot_runs(ax, runs)
  paper = paper_curve(reference, task)
  if paper is not None:
    _plot_paper(ax, paper)
  _plot_baselines(ax, reference.baselines.get(task, {}))
  ax.set_xlim(0, x_limit(runs, paper) * 1.02)
  ax.xaxis.set_major_formatter(ticker.FuncFormatter(format_frames))
  ax.set_xlabel('Frames (environment steps)')
  ax.set_ylabel('Test return')
  ax.set_title(task)
  ax.grid(alpha=0.3)
  # Outside the axes the legend never hides a curve or a baseline.
  ax.legend(loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize='small')
  # Gymnasium ids may hold a slash (gym_ALE/Pong-v5): one file, not a folder.
  path = pathlib.Path(outdir) / f'{task.replace("/", "_")}.png'
  fig.savefig(path, bbox_inches='tight')
  return path


def _plot_runs(ax, runs):
  # Markers keep a run with one or a few evaluations visible.
  marker = 'o' if max(len(r.steps) for r in runs) <= 30 else None
  # Ours stay on top of the paper's band and the baselines.
  style = dict(marker=marker, zorder=3)
  if len(runs) == 1:
    run, = runs
    ax.plot(run.steps, run.returns, color='tab:blue', linewidth=2,
            markersize=3, label=f'ours ({run_labels(runs)[0]})', **style)
    return
  # Seeds in shades of one blue, so that no seed shares a baseline's colour.
  shades = colormaps['Blues'](np.linspace(0.35, 0.7, len(runs)))
  for run, label, shade in zip(runs, run_labels(runs), shades):
    ax.plot(run.steps, run.returns, color=shade, linewidth=0.9,
            markersize=2, label=f'ours {label}', **style)
  steps, mean = mean_curve(runs)
  if len(steps):
    ax.plot(steps, mean, color='navy', linewidth=2.2, zorder=4,
            label=f'ours (mean of {len(runs)} runs)')


def _plot_paper(ax, paper):
  xs, mean, low, high = paper
  ax.plot(xs, mean, color='black', linewidth=1.5, zorder=2,
          label='Dreamer paper (5-seed mean)')
  ax.fill_between(xs, low, high, color='gray', alpha=0.25, linewidth=0,
                  zorder=1, label='paper min–max')


def _plot_baselines(ax, scores):
  # Known baselines in a fixed order, then any others the file may add.
  keys = [k for k in BASELINES if k in scores]
  keys += sorted(k for k in scores if k not in BASELINES)
  for key in keys:
    name, color = BASELINES.get(key, (key, 'tab:gray'))
    ax.axhline(scores[key], color=color, linestyle='--', linewidth=1.2,
               zorder=1.5, label=f'{name} ({scores[key]:g})')


# The summary table.


def summarize(task, runs, reference):
  """Returns one table row comparing our latest return with the paper's."""
  frames, ours = latest(runs)
  paper = paper_curve(reference, task)
  at_frames = final = None
  if paper is not None:
    at_frames = interpolate(paper[0], paper[1], frames)
    final = float(paper[1][-1])
  return {'task': task, 'frames': frames, 'return': ours,
          'paper@frames': at_frames, 'paper final': final, 'runs': len(runs)}


def summary_table(rows):
  """Formats rows from summarize() as an aligned plain-text table."""
  columns = ['task', 'frames', 'return', 'paper@frames', 'paper final', 'runs']
  cells = [[_cell(row[c], c) for c in columns] for row in rows]
  widths = [max(len(c), *(len(r[i]) for r in cells))
            for i, c in enumerate(columns)]
  lines = [columns] + cells
  # Task names read best left-aligned, numbers right-aligned.
  return '\n'.join(
      '  '.join(text.ljust(w) if i == 0 else text.rjust(w)
                for i, (text, w) in enumerate(zip(line, widths)))
      for line in lines)


def _cell(value, column):
  if value is None:
    return '-'
  if column in ('frames', 'runs'):
    return str(int(value))
  if isinstance(value, float):
    return f'{value:.1f}'
  return str(value)


# Verifying runs against the paper (or another reference).

JUDGED = ('within', 'below', 'above')


def half_interval(run):
  """Half the run's median evaluation interval: how near counts as at."""
  gaps = np.diff(run.steps)
  return 0.5 * float(np.median(gaps)) if len(gaps) else 0.0


def reaches(run, frames):
  """Whether the run was evaluated at `frames` or later.

  An evaluation half an interval short counts: a run evaluated every 10k
  frames from 4k, stopped at 104k, has its 104k evaluation for 105k.
  """
  return run.steps[-1] >= frames - half_interval(run)


def window_value(run, frames, half_width):
  """The run's mean test return over its evaluations near `frames`.

  The window is ±half_width frames, and never narrower than half the run's
  evaluation interval, so that it holds the nearest evaluation and, when two
  are equally near, both with equal weight. Returns None when the window
  holds no evaluation.
  """
  half = max(half_width, half_interval(run))
  inside = np.abs(run.steps - frames) <= half
  if not inside.any():
    return None
  return {
      'run': str(run.path), 'seed': run.seed,
      'value': float(np.mean(run.returns[inside])),
      'evaluations': int(inside.sum()),
      'episodes': int(run.episodes[inside].sum()),
      'frames': [float(x) for x in run.steps[inside]]}


def verify_point(runs, frames, half_width, reference):
  """Our runs that reach `frames` against the reference there, or None."""
  values = [window_value(run, frames, half_width)
            for run in runs if reaches(run, frames)]
  values = [v for v in values if v is not None]
  if not values:
    return None
  returns = [v['value'] for v in values]
  ours = float(np.mean(returns))
  mean, low, high = reference
  verdict = 'below' if ours < low else 'above' if ours > high else 'within'
  return {
      'frames': float(frames), 'verdict': verdict,
      'window': [float(frames - half_width), float(frames + half_width)],
      'ours': {'mean': ours, 'min': min(returns), 'max': max(returns),
               'runs': len(values), 'of': len(runs), 'returns': returns},
      'per_run': values,
      'reference': {'mean': float(mean), 'min': float(low),
                    'max': float(high)}}


def verify_task(task, runs, curves):
  """Compares our runs with the reference's seeds at each point reached.

  Each point is judged from the runs that reach it, each run by the mean of
  its evaluations within a window around the point (±a quarter of the
  reference's spacing: ±25k frames for the paper's 100k). The task's verdict
  is the one at the last point that all its runs reach, so it never rests on
  a subset of them.
  """
  result = {'task': task, 'runs': len(runs), 'points': [], 'at': None}
  paper = paper_curve(Reference(curves, {}), task)
  if paper is None:
    return dict(result, verdict='no reference',
                why=f'the reference has no curve for {task}')
  xs = paper[0]
  half_width = 0.25 * float(np.median(np.diff(xs))) if len(xs) > 1 else 0.0
  for frames, mean, low, high in zip(*paper):
    point = verify_point(runs, frames, half_width, (mean, low, high))
    if point is not None:
      result['points'].append(point)
  complete = [p for p in result['points'] if p['ours']['runs'] == len(runs)]
  if complete:
    return dict(result, verdict=complete[-1]['verdict'],
                at=complete[-1]['frames'], why=None)
  return dict(result, verdict='not reached', why=_not_reached(runs, xs))


def _not_reached(runs, xs):
  short = [run for run in runs if not reaches(run, xs[0])]
  names = ', '.join(f'{run.path} ({format_frames(run.steps[-1])})'
                    for run in short)
  return (f'{len(short)} of {len(runs)} runs end before the reference\'s '
          f'first point, {format_frames(xs[0])} frames: {names}')


def verify_markdown(results, reference_path):
  lines = [
      f'# Test returns against {reference_path}', '',
      'Per run: the mean test return of its evaluations within the window '
      'around each point of the reference (±a quarter of its spacing, at '
      'least half the run\'s evaluation interval); evaluations/episodes '
      'counts what it rests on. Ours: mean and min–max over the runs that '
      'reach the point (k of n). Verdict: where our mean lies against the '
      "reference's min–max band.", '',
      '| task | frames | window | runs | evaluations/episodes per run | '
      'ours mean | ours min–max | reference mean | reference min–max | '
      'verdict |',
      '|---|---:|---|---:|---|---:|---:|---:|---:|---|']
  for result in results:
    if not result['points']:
      lines.append(f'| {result["task"]} | – | | 0 of {result["runs"]} | | '
                   f'| | | | {result["verdict"]} |')
    for point in result['points']:
      lines.append(_point_row(result['task'], point))
  lines += ['', 'Per task, at the last point all its runs reach:', '']
  lines += [_task_line(r) for r in results]
  return '\n'.join(lines) + '\n'


def _point_row(task, point):
  ours, ref = point['ours'], point['reference']
  low, high = point['window']
  counts = ', '.join(f'{v["evaluations"]}/{v["episodes"]}'
                     for v in point['per_run'])
  return (f'| {task} | {format_frames(point["frames"])} | '
          f'{format_frames(max(low, 0))}–{format_frames(high)} | '
          f'{ours["runs"]} of {ours["of"]} | {counts} | '
          f'{ours["mean"]:.1f} | {ours["min"]:.1f}–{ours["max"]:.1f} | '
          f'{ref["mean"]:.1f} | {ref["min"]:.1f}–{ref["max"]:.1f} | '
          f'{point["verdict"]} |')


def _task_line(result):
  if result['verdict'] not in JUDGED:
    return f'- {result["task"]}: **{result["verdict"]}**: {result["why"]}'
  return (f'- {result["task"]}: **{result["verdict"]}** at '
          f'{format_frames(result["at"])} frames ({result["runs"]} of '
          f'{result["runs"]} runs)')


def exit_status(results):
  """0: every judged task within or above; 1: one below; 3: none judged."""
  if any(r['verdict'] == 'below' for r in results):
    return 1
  if not any(r['verdict'] in JUDGED for r in results):
    return 3
  return 0


def verify(runs, reference_path, outdir):
  """Writes verify.md and verify.json; returns the exit status."""
  curves = read_curves(reference_path)
  results = [verify_task(task, task_runs, curves)
             for task, task_runs in runs.items()]
  markdown = verify_markdown(results, reference_path)
  status = exit_status(results)
  failed = [r['task'] for r in results if r['verdict'] == 'below']
  unjudged = [r['task'] for r in results if r['verdict'] not in JUDGED]
  report = {'reference': str(reference_path), 'tasks': results,
            'below': failed, 'not judged': unjudged, 'status': status,
            'passed': status == 0}
  (outdir / 'verify.md').write_text(markdown, encoding='utf-8')
  (outdir / 'verify.json').write_text(
      json.dumps(report, indent=2) + '\n', encoding='utf-8')
  print(markdown)
  print(f'Wrote {outdir / "verify.md"} and {outdir / "verify.json"}')
  for result in results:
    if result['verdict'] not in JUDGED:
      print(f'Not judged: {result["task"]}: {result["why"]}')
  if failed:
    print(f'Below the reference at the last point all runs reach: '
          f'{", ".join(failed)}')
  if status == 3:
    print('Nothing could be judged: no task has a reference point that all '
          'of its runs reach.')
  return status


def export(runs, path):
  """Writes our runs' test returns in dreamer.json's format."""
  records = [
      {'task': task, 'method': 'ours', 'seed': str(run.seed),
       'xs': [float(x) for x in run.steps],
       'ys': [float(y) for y in run.returns]}
      for task, task_runs in runs.items() for run in task_runs]
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(records) + '\n', encoding='utf-8')
  print(f'Wrote {path}')


# Command line.


def parse_args(argv):
  parser = argparse.ArgumentParser(
      description='Plot test returns of Dreamer runs against the paper.')
  parser.add_argument(
      '--indir', nargs='+', required=True, type=pathlib.Path,
      help='directories searched recursively for metrics.jsonl (one per run)')
  parser.add_argument(
      '--outdir', required=True, type=pathlib.Path,
      help='directory for the <task>.png plots')
  # Frames are the only axis the paper's curves can be compared on; the flag
  # is kept for the command line of the original plotting script.
  parser.add_argument('--xaxis', default='step', choices=['step'],
                      help='x axis: environment frames')
  parser.add_argument(
      '--scores', type=pathlib.Path, default=DEFAULT_SCORES,
      help='directory with dreamer.json and baselines.json')
  parser.add_argument(
      '--verify', action='store_true',
      help="compare the test returns with the reference's seeds at each of "
      'its points that the runs reach, each run by the mean of its '
      'evaluations within ±a quarter of the reference\'s spacing; write '
      'verify.md and verify.json to --outdir. Exit 0 if every judged task '
      'is within or above the band at the last point all its runs reach, 1 '
      'if one is below, 3 if no task could be judged, 2 on bad input')
  parser.add_argument(
      '--reference', type=pathlib.Path, default=None,
      help="a file in dreamer.json's format to verify against (default: the "
      "paper's, <scores>/dreamer.json)")
  parser.add_argument(
      '--export', type=pathlib.Path, default=None,
      help="also write the runs' test returns to this file in dreamer.json's "
      'format, for use as a --reference')
  return parser.parse_args(argv)


def main(argv=None):
  """Runs the command line; returns the exit status."""
  args = parse_args(argv)
  try:
    reference = load_reference(args.scores)
    runs = load_runs(args.indir)
    outdir = args.outdir.expanduser()
    outdir.mkdir(parents=True, exist_ok=True)
    rows = [summarize(task, task_runs, reference)
            for task, task_runs in runs.items()]
    print(summary_table(rows))
    print()
    for task, task_runs in runs.items():
      print(f'Wrote {plot_task(task, task_runs, reference, outdir)}')
    if args.export:
      export(runs, args.export.expanduser())
    if args.verify:
      print()
      reference_path = args.reference or args.scores / 'dreamer.json'
      return verify(runs, reference_path.expanduser(), outdir)
  except (PlotError, OSError) as e:
    # 2, as argparse's own errors: a script gating on --verify can tell bad
    # input from a run below the paper (1) or nothing to judge (3).
    print(f'plotting.py: error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
