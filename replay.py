"""Bounded-memory replay: episodes read from an uncompressed cache on disk.

The original keeps every episode it has loaded decompressed in memory: about
30 GB of images at the paper's 5M frames. Here each compressed episode file
`<name>.npz` gets, on first use, an uncompressed copy of its arrays in
`.cache/<name>/<key>.npy` beside it, and the replay keeps only their shapes.
A sampled chunk reads just its rows from that copy, so the process's own
memory holds the chunks in flight, and the operating system's page cache,
which it can evict, holds the rest.

The copy is written to a temporary folder and renamed into place, so a kill
leaves either no copy or a whole one. It records the size and time of the
`.npz` it came from and is rebuilt whenever it does not match it or cannot
be read: the `.npz` files stay the only record that counts.
"""

import json
import os
import pathlib
import shutil
import uuid

import numpy as np

CACHE = '.cache'
SOURCE = 'source.json'


class Array:
  """One entry of a cached episode: shape and dtype now, data on slicing."""

  def __init__(self, path, shape, dtype, offset):
    self.path = path
    self.shape = tuple(shape)
    self.dtype = np.dtype(dtype)
    self.offset = offset  # Of the data in the .npy file, after its header.

  def __len__(self):
    return self.shape[0]

  def __getitem__(self, index):
    # Read just the rows asked for and close the file again: no file stays
    # open, however many episodes there are.
    if isinstance(index, slice) and index.step in (None, 1):
      start, stop, _ = index.indices(self.shape[0])
      rows = max(stop - start, 0)
      size = int(np.prod(self.shape[1:], dtype=np.int64))
      data = np.empty((rows,) + self.shape[1:], self.dtype)
      offset = self.offset + start * size * self.dtype.itemsize
      read_into(self.path, memoryview(data).cast('B'), offset)
      return data
    return np.array(np.load(self.path, mmap_mode='r')[index])

  def __array__(self, dtype=None, copy=None):
    value = np.load(self.path)
    return value if dtype is None else value.astype(dtype)

  def astype(self, dtype):
    return np.asarray(self, dtype)


def read_into(path, buffer, offset):
  fd = os.open(path, os.O_RDONLY)
  try:
    done = 0
    while done < len(buffer):
      count = os.preadv(fd, [buffer[done:]], offset + done)
      if not count:
        raise OSError(f'{path} ends before the rows asked for.')
      done += count
  finally:
    os.close(fd)


def load(filename):
  """The episode of an .npz file as {key: Array}, building its cache once.

  Where the cache cannot be written (a full or read-only disk), the episode
  is kept in memory as the original did, and that is said once.
  """
  filename = pathlib.Path(filename)
  folder = filename.parent / CACHE / filename.stem
  episode = read_cache(folder, filename)
  if episode is not None:
    return episode
  shutil.rmtree(folder, ignore_errors=True)
  try:
    build_cache(folder, filename)
  except OSError as e:
    if isinstance(e, FileNotFoundError) and not filename.exists():
      raise
    _warn_once(folder.parent, f'Cannot write the replay cache in '
               f'{folder.parent}; keeping episodes in memory instead. The '
               f'first error: {e}')
    return read_npz(filename)
  episode = read_cache(folder, filename)
  if episode is None:
    raise OSError(f'The replay cache {folder} could not be read back.')
  return episode


_WARNED = set()


def _warn_once(key, message):
  if key not in _WARNED:
    _WARNED.add(key)
    print(message)


def read_npz(filename):
  with pathlib.Path(filename).open('rb') as f:
    data = np.load(f)
    return {k: data[k] for k in data.keys()}


def read_cache(folder, filename):
  """The cached episode, or None if it is missing, stale or damaged."""
  try:
    source = json.loads((folder / SOURCE).read_text())
    stat = filename.stat()
    if source['size'] != stat.st_size or source['mtime'] != stat.st_mtime_ns:
      return None
    episode = {}
    for key in source['keys']:
      array = np.load(folder / f'{key}.npy', mmap_mode='r')
      if not array.flags.c_contiguous:
        return None
      episode[key] = Array(
          folder / f'{key}.npy', array.shape, array.dtype, array.offset)
      del array
  except (OSError, ValueError, KeyError, TypeError):
    return None
  lengths = {len(value) for value in episode.values()}
  return episode if len(lengths) == 1 else None


def build_cache(folder, filename):
  stat = filename.stat()
  data = read_npz(filename)
  temp = folder.parent / f'.{folder.name}.{uuid.uuid4().hex}.tmp'
  temp.mkdir(parents=True)
  try:
    for key, value in data.items():
      np.save(temp / f'{key}.npy', value)
    source = dict(size=stat.st_size, mtime=stat.st_mtime_ns, keys=list(data))
    (temp / SOURCE).write_text(json.dumps(source))
    try:
      os.rename(temp, folder)
    except OSError:
      if not folder.exists():
        raise  # Not a concurrent loader that got there first.
  finally:
    shutil.rmtree(temp, ignore_errors=True)


def remove_partial_caches(directory):
  """Removes the temporary folders of cache writes that were killed."""
  removed = []
  for path in (pathlib.Path(directory) / CACHE).glob('.*.tmp'):
    shutil.rmtree(path, ignore_errors=True)
    removed.append(path)
  return removed


class DiskFull(Exception):
  pass


def check_disk(datadir, frames, action_repeat, in_flight):
  """Prints the replay's projected use at `frames`; DiskFull if it won't fit.

  Measured on the stored episodes; `in_flight` is the number of steps of
  chunks that the data pipeline holds at once.
  """
  datadir = pathlib.Path(datadir)
  files = sorted(datadir.glob('*.npz'))
  sample = {}  # Up to five readable episodes, the newest first.
  for filename in reversed(files):
    try:
      sample[filename] = read_npz(filename)
    except Exception:  # Reported and skipped where the replay reads it.
      continue
    if len(sample) == 5:
      break
  if not sample:
    return None
  steps = sum(len(episode['reward']) for episode in sample.values())
  packed = sum(f.stat().st_size for f in sample) / steps
  raw = sum(sum(v.nbytes for v in episode.values())
            for episode in sample.values()) / steps
  total = frames / action_repeat
  stored = sum(_length(f) for f in files)
  need = (packed + raw) * max(total - stored, 0)
  free = shutil.disk_usage(datadir).free
  gb = lambda x: f'{x / 1e9:.1f} GB' if x >= 1e8 else f'{x / 1e6:.1f} MB'
  print(f'Replay at {int(frames)} frames: {gb((packed + raw) * total)} on '
        f'disk ({gb(packed * total)} episodes + {gb(raw * total)} '
        f'uncompressed cache in {datadir / CACHE}), about '
        f'{gb(raw * in_flight)} in memory; {gb(need)} more needed, '
        f'{gb(free)} free.')
  if need > free:
    raise DiskFull(
        f'The replay would need {gb(need)} more disk at --steps '
        f'{int(frames)}, but {datadir} has {gb(free)} free. Free some space, '
        'use a --logdir on a larger disk, or lower --steps.')
  return dict(packed=packed, raw=raw, need=need, free=free)


def _length(filename):
  try:
    return int(filename.stem.rsplit('-', 1)[1])
  except (IndexError, ValueError):
    return 0


def widen(episode):
  # Stored float16 entries become float32 before TensorFlow sees them, which
  # preprocess does anyway: no op then takes float16 on a CPU, where oneDNN
  # logged an error for it ("oneDNN supports DT_HALF only ...").
  return {k: v.astype(np.float32) if v.dtype == np.float16 else v
          for k, v in episode.items()}
