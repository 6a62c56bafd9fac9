"""Evaluations of several test episodes: `--eval_episodes N`.

The original evaluates one test episode per cycle and logs its return as
`test/return`, so a single lucky or unlucky episode stands for the policy.
With N > 1 each test episode's line logs `test/episode_return` and
`test/episode_length` instead, and once the evaluation is over one more line
logs their mean as `test/return` (and `test/length`), the episodes' returns
as `test/returns` and their number as `test/episodes`; plotting.py reads
both. With N = 1, the default, nothing here changes a metric.

Episode lines may be written by worker processes (`--parallel process`), so
the mean is taken from what metrics.jsonl holds after the evaluation, not
from memory.

Also when dreamer.py's loop evaluates: as the original, except that a run
resumed between two evaluations first collects up to the one due next
(due, steps_to_collect).
"""

import json
import pathlib

import numpy as np

METRICS_FILE = 'metrics.jsonl'
EPISODE_KEYS = {
    'test/return': 'test/episode_return',
    'test/length': 'test/episode_length',
}


def episode_metrics(metrics, prefix, episodes):
  """The (key, value) pairs of one episode's line, renamed when averaged.

  Args:
    metrics: (key, value) pairs as summarize_episode logs them.
    prefix: 'train' or 'test'.
    episodes: episodes per evaluation, `--eval_episodes`.
  """
  if prefix != 'test' or episodes <= 1:
    return metrics
  return [(EPISODE_KEYS.get(key, key), value) for key, value in metrics]


class Evaluation:
  """Marks metrics.jsonl before an evaluation; logs the mean after it."""

  def __init__(self, logdir, episodes):
    self._path = pathlib.Path(logdir) / METRICS_FILE
    self._episodes = episodes
    # Lines before the mark belong to earlier evaluations, including one a
    # kill interrupted at the same step.
    self._start = self._path.stat().st_size if self._path.exists() else 0

  def write_mean(self):
    """Appends the mean line; returns it, or None with one episode."""
    if self._episodes <= 1:
      return None
    episodes = self._read_episodes()
    if not episodes:
      return None  # Stopped by a signal before the first episode ended.
    returns = [float(e['test/episode_return']) for e in episodes]
    lengths = [e.get('test/episode_length', 0) for e in episodes]
    line = {
        'step': max(e['step'] for e in episodes),
        'test/return': float(np.mean(returns)),
        'test/length': float(np.mean(lengths)),
        'test/returns': returns,
        'test/episodes': len(returns)}
    with self._path.open('a') as f:
      f.write(json.dumps(line) + '\n')
    _summarize(line)
    print(f'Test return over {len(returns)} episodes: '
          f'{line["test/return"]:.1f} (min {min(returns):.1f}, max '
          f'{max(returns):.1f}).')
    return line

  def _read_episodes(self):
    with self._path.open('rb') as f:
      f.seek(self._start)
      text = f.read().decode('utf-8', errors='replace')
    return [e for e in _entries(text) if 'test/episode_return' in e]


def frames_until_due(logdir, step, every):
  """Frames from `step` to the evaluation due next; 0 when one is due now.

  Counted from the last evaluation in metrics.jsonl: an uninterrupted run
  evaluates, collects `every` frames, and evaluates again.
  """
  last = last_evaluation(pathlib.Path(logdir) / METRICS_FILE)
  return 0 if last is None else int(max(0, last + every - step))


def due(config, step, state):
  """Whether dreamer.py's loop evaluates before this collection.

  The original evaluated at once on every start, so a run resumed between
  two evaluations logged an extra one and evaluated on a grid shifted to it
  (a run of ours resumed four times evaluated at 5k, 12k, 18k, 20k, 30k,
  32k and 42k frames instead of 5k, 15k, 25k, 35k). Only the first pass of a
  start (no simulation state yet) asks metrics.jsonl; after it the loop is
  the original's, whose carried state keeps the grid.
  """
  if state is not None:
    return True
  frames = frames_until_due(config.logdir, step, config.eval_every)
  if frames:
    print(f'The next evaluation is due at {step + frames} frames, as in a run '
          f'never stopped: collecting {frames} frames first.')
  return not frames


def steps_to_collect(config, step, state):
  """Agent steps of this collection: up to the evaluation due next."""
  if state is not None:
    return config.eval_every // config.action_repeat  # The original's.
  frames = frames_until_due(config.logdir, step, config.eval_every)
  # At least one step, or a grid off the action repeat would stall the loop.
  return max(1, frames // config.action_repeat)


def last_evaluation(path):
  """The step of the newest complete evaluation logged, or None."""
  try:
    text = path.read_text(errors='replace')
  except FileNotFoundError:
    return None
  # With --eval_episodes N > 1 only the mean line has test/return, so an
  # evaluation a kill cut short does not count.
  steps = [e['step'] for e in _entries(text) if 'test/return' in e]
  return max(steps) if steps else None


def _entries(text):
  """The JSON objects of metrics.jsonl's lines."""
  for line in text.splitlines():
    try:
      entry = json.loads(line)
    except json.JSONDecodeError:
      continue  # A truncated line of a killed writer.
    if isinstance(entry, dict):
      yield entry


def _summarize(line):
  # Imported here so that the module's logic needs no TensorFlow to test.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for key in ('test/return', 'test/length'):
    tf.summary.scalar('sim/' + key, line[key], line['step'])
