"""Replay memory and sampling speed at growing replay sizes, ours and the old.

Prints figures; it is not a test. For each replay size it fills a folder with
synthetic 501-step episodes whose images compress like DeepMind Control
frames (a walker episode's .npz is about 1.4 MB for 6.2 MB of pixels), then,
in a fresh worker process pinned to one core, builds `dreamer.load_dataset`
at batch 50 x 50 and measures:

- first batch: seconds to the first batch, which includes building the
  uncompressed cache of every episode (ours) or decompressing every episode
  into memory (old);
- batches/s over the next batches, as the train step would take them;
- RssAnon: the worker's anonymous resident memory after them (not the page
  cache, which the OS can evict);
- disk: the episodes' .npz files plus our cache.

"old" is the original's in-memory cache (`replay.load` replaced by reading
the whole .npz), measured only up to --old_max steps, where it still fits.

  python benchmarks/replay.py --sizes 50000 250000 1000000 2500000
  python benchmarks/replay.py --sizes 50000 --batches 10   # a quick run

Distinct episodes are few (--distinct); the rest are copies under new names,
which the replay treats as separate episodes with their own cache files. A
folder filled for a larger size by an earlier invocation serves a smaller one
through a folder of links to its first episodes.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
LENGTH = 501


def synthetic_episode(random):
  import numpy as np
  grid = np.linspace(0, 1, 64)
  action = random.uniform(-1, 1, (LENGTH, 6))
  lo, hi = random.uniform(0, 120, 3), random.uniform(120, 255, 3)
  back = lo + (hi - lo) * (grid[:, None, None] + grid[None, :, None]) / 2
  pos = np.clip(np.cumsum(3 * action[:, :2], 0) + 28, 0, 56).astype(int)
  image = np.repeat(back[None], LENGTH, 0)
  for t, (y, x) in enumerate(pos):
    image[t, y:y + 8, x:x + 8] = 255
  # Noise in 8x8 blocks: compresses about as well as rendered frames.
  noise = random.uniform(-3, 3, (LENGTH, 8, 8, 3))
  image += np.repeat(np.repeat(noise, 8, 1), 8, 2)
  return dict(
      image=np.clip(image, 0, 255).astype(np.uint8),
      action=action.astype(np.float16),
      reward=random.uniform(0, 1, LENGTH).astype(np.float16),
      discount=np.ones(LENGTH, np.float16),
      position=random.randn(LENGTH, 14).astype(np.float16),
      velocity=random.randn(LENGTH, 9).astype(np.float16))


def fill(folder, steps, distinct, seed=0):
  """Episodes of 500 agent steps up to `steps`; returns the .npz bytes."""
  sys.path.insert(0, str(ROOT))
  import numpy as np
  import tools
  folder.mkdir(parents=True, exist_ok=True)
  have = sorted(folder.glob('*.npz'))
  random = np.random.RandomState(seed)
  while len(have) < min(distinct, steps // (LENGTH - 1)):
    have += tools.save_episodes(folder, [synthetic_episode(random)])
  index = 0
  while len(have) * (LENGTH - 1) < steps:
    source = have[index % distinct]
    target = folder / f'{index:08d}-{os.urandom(16).hex()}-{LENGTH}.npz'
    shutil.copyfile(source, target)
    have.append(target)
    index += 1
  return sum(p.stat().st_size for p in have)


def subset(folder, steps):
  """A folder of links to the first episodes of `folder` and their caches.

  So that one filled folder serves every smaller size without copying or
  rebuilding the cache (the cache checks the size and time of the .npz a
  link points to).
  """
  sys.path.insert(0, str(ROOT))
  from support import replay
  view = folder.parent / f'subset-{steps}'
  shutil.rmtree(view, ignore_errors=True)
  (view / replay.CACHE).mkdir(parents=True)
  episodes = sorted(folder.glob('*.npz'))[:steps // (LENGTH - 1)]
  for path in episodes:
    (view / path.name).symlink_to(path)
    cache = folder / replay.CACHE / path.stem
    if cache.exists():
      (view / replay.CACHE / path.stem).symlink_to(cache)
  return view


def worker(spec):
  """Builds load_dataset on one core and reports speed and memory."""
  os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  sys.path.insert(0, str(ROOT))
  from support import console  # noqa: F401
  import dreamer
  from support import replay
  import tools
  if spec['mode'] == 'old':
    replay.load = replay.read_npz
  config = dreamer.define_config()
  config.update(batch_size=50, batch_length=50, train_steps=100)
  start = time.perf_counter()
  dataset = iter(dreamer.load_dataset(pathlib.Path(spec['folder']), config))
  next(dataset)
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(spec['batches']):
    next(dataset)
  rate = spec['batches'] / (time.perf_counter() - start)
  print(json.dumps(dict(first=first, rate=rate, rss=rss_anon())), flush=True)


def rss_anon():
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('RssAnon:'):
        return int(line.split()[1]) * 1024
  return None


def measure(folder, mode, batches, timeout):
  spec = json.dumps(dict(folder=str(folder), mode=mode, batches=batches))
  result = subprocess.run(
      [sys.executable, __file__, '--worker', spec], capture_output=True,
      text=True, timeout=timeout, cwd=str(ROOT))
  lines = [l for l in result.stdout.splitlines() if l.startswith('{')]
  if result.returncode or not lines:
    return dict(error=(result.stderr.strip().splitlines() or ['?'])[-1])
  return json.loads(lines[-1])


def disk(folder):
  # Follows the links of a subset() folder.
  return sum(os.stat(os.path.join(root, name)).st_size
             for root, _, names in os.walk(folder, followlinks=True)
             for name in names)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', type=int, nargs='+',
                      default=[50_000, 250_000, 1_000_000, 2_500_000],
                      help='replay sizes in agent steps')
  parser.add_argument('--old_max', type=int, default=250_000,
                      help='largest size at which to measure the old cache')
  parser.add_argument('--batches', type=int, default=40)
  parser.add_argument('--distinct', type=int, default=8)
  parser.add_argument('--dir', default=None,
                      help='where to write episodes (default: a temp dir)')
  parser.add_argument('--timeout', type=float, default=3600)
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    return worker(json.loads(args.worker))
  context = tempfile.TemporaryDirectory(prefix='dreamer-replay-')
  folder = pathlib.Path(args.dir or context.name) / 'episodes'
  cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo')
              if l.startswith('model name')), '?')
  print(f'Replay benchmark: batch 50 x 50 through load_dataset, one core of '
        f'{cpu}, {os.cpu_count()} cores, '
        f'{os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30:.0f}'
        f' GiB memory.')
  print('| steps | replay | first batch (s) | batches/s | RssAnon (GiB) | '
        'disk (GB) |')
  print('|---:|---|---:|---:|---:|---:|')
  base = folder
  for steps in sorted(args.sizes):
    if len(list(base.glob('*.npz'))) * (LENGTH - 1) > steps:
      # Filled for a larger size by an earlier invocation.
      folder = subset(base, steps)
      packed = sum(p.stat().st_size for p in folder.glob('*.npz'))
    else:
      folder = base
      packed = fill(folder, steps, args.distinct)
    modes = ['old', 'ours'] if steps <= args.old_max else ['ours']
    for mode in modes:
      result = measure(folder, mode, args.batches, args.timeout)
      used = packed if mode == 'old' else disk(folder)
      if 'error' in result:
        print(f'| {steps} | {mode} | failed: {result["error"]} | | | '
              f'{used / 1e9:.1f} |', flush=True)
        continue
      print(f'| {steps} | {mode} | {result["first"]:.1f} | '
            f'{result["rate"]:.1f} | {result["rss"] / 2**30:.2f} | '
            f'{used / 1e9:.1f} |', flush=True)
  context.cleanup()


if __name__ == '__main__':
  main()
