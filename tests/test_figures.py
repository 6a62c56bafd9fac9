"""docs/figures.py: the logged wall time the docs quote, and run comparisons."""

import pytest

import runs


@pytest.fixture(scope='module')
def figures():
  return runs.load_script('docs', 'figures')


def phase(step, fps=None):
  # A training phase's log line as dreamer.py writes it: fps from the
  # second log of a process on.
  entry = {'step': step, 'model_loss': 1.0}
  if fps is not None:
    entry['fps'] = fps
  return entry


def test_wall_time_sums_each_process_and_not_the_gap_before_a_resume(figures):
  entries = [
      {'step': 5000, 'test/return': 136.0},
      phase(5000),             # First start: no fps at its first log.
      {'step': 6000, 'train/return': 250.0},
      phase(6000, fps=0.5),    # 2000 s since the agent was built.
      phase(7000, fps=1.0),    # 1000 s.
      phase(8000),             # A resume: its first phase has no fps.
      phase(9000, fps=2.0),    # 500 s since the resumed agent was built.
  ]
  assert figures.wall_time(entries) == pytest.approx(3500 / 3600)


def test_wall_time_stops_at_the_frames_asked(figures):
  entries = [phase(5000), phase(6000, fps=1.0), phase(7000, fps=1.0)]
  assert figures.wall_time(entries, frames=6000) == pytest.approx(1000 / 3600)
  assert figures.wall_time([phase(5000)]) == 0


def test_first_difference_matches_steps_and_skips_fps(figures):
  ours = [{'step': 1000, 'train/return': 242.25, 'fps': 1.0},
          {'step': 5000, 'model_loss': 2.0, 'actor_loss': -3.0},
          {'step': 5000, 'test/return': 188.375},
          {'step': 6000, 'model_loss': 1.5}]
  theirs = [{'step': 1000, 'train/return': 242.25, 'fps': 2.0},
            {'step': 5000, 'test/return': 207.25},
            {'step': 5000, 'model_loss': 2.0, 'actor_loss': -3.5}]
  assert figures.first_difference(ours, theirs) == (
      5000, 'actor_loss', -3.0, -3.5)
  assert figures.first_difference(ours[:1], theirs) is None
  # A step or key only one run logged, and NaN in both, are no difference.
  alone = [{'step': 1000, 'train/return': 242.25, 'only_ours': 1.0},
           {'step': 9000, 'model_loss': 1.0},
           {'step': 5000, 'model_loss': float('nan')}]
  assert figures.first_difference(alone, theirs[:1] + [
      {'step': 5000, 'model_loss': float('nan')}]) is None
