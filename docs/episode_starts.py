"""Which training episodes of a run start alike, and which repeat one.

  python docs/episode_starts.py --logdir runs/paper/dmc_cartpole_balance/0

Reads the run's episode files in the order they were written (the replay's
order) and prints how many distinct first images they have, the episodes of
each repeated start, and, for each episode whose start repeats an earlier
one's, the largest action difference to the closest such earlier episode.
A run resumed by code before 7334094 restarted its environments' and
TensorFlow's random streams, so its episodes after each resume began where
its first ones had, with the same noise (scores/paper/README.md). Near-copies
(actions within --tolerance) are what that left in the replay. Writes
nothing.
"""

import argparse
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from support import storage  # noqa: E402


def load_starts(datadir):
  """(file name, first image, actions) of each episode, in write order."""
  episodes = []
  for path in storage.new_files(pathlib.Path(datadir)):
    with np.load(path) as episode:  # Not the replay's cache: writes nothing.
      episodes.append((path.name, episode['image'][0].tobytes(),
                       np.asarray(episode['action'], np.float32)))
  return episodes


def repeats(episodes):
  """For each episode whose start repeats: (index, earlier, difference).

  Indices count from 1 in write order; `earlier` is the earlier episode of
  the same start whose actions are closest, `difference` the largest
  absolute difference of their actions (inf if their lengths differ).
  """
  seen = {}
  found = []
  for index, (_, start, actions) in enumerate(episodes, 1):
    before = seen.setdefault(start, [])
    if before:
      differences = [
          (_largest_difference(actions, episodes[i - 1][2]), i)
          for i in before]
      difference, closest = min(differences)
      found.append((index, closest, difference))
    before.append(index)
  return found


def _largest_difference(a, b):
  if a.shape != b.shape:
    return float('inf')
  return float(np.abs(a - b).max())


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--logdir', type=pathlib.Path, required=True)
  parser.add_argument(
      '--tolerance', type=float, default=0.001,
      help='largest action difference of a near-copy (float16 actions are '
           'stored with steps of about 0.0005 near 1)')
  args = parser.parse_args(argv)
  episodes = load_starts(args.logdir / 'episodes')
  if not episodes:
    raise SystemExit(f'No episode files in {args.logdir / "episodes"}.')
  found = repeats(episodes)
  distinct = len({start for _, start, _ in episodes})
  near = [i for i, _, d in found if d <= args.tolerance]
  print(f'{len(episodes)} episodes, {distinct} distinct first images; '
        f'{len(found)} start where an earlier one did, {len(near)} of them '
        f'with actions within {args.tolerance} of an earlier episode '
        f'(near-copies).')
  for index, closest, difference in found:
    mark = ' near-copy' if difference <= args.tolerance else ''
    print(f'  episode {index}: start of episode {closest}, largest action '
          f'difference {difference:.5f}{mark}')
  if near:
    print('near-copies: ' + ', '.join(str(i) for i in near))


if __name__ == '__main__':
  main()
