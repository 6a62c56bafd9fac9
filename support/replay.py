"""Bounded-memory replay: episodes mapped from an uncompressed cache on disk.

The original keeps every episode it has loaded decompressed in memory: about
30 GB of images at the paper's 5M frames. Here each compressed episode file
`<name>.npz` gets, on first use, an uncompressed copy of its arrays in one
file, `.cache/<name>/data.bin`, beside it, and the replay keeps only their
shapes. The copy is memory-mapped when first sampled, and a sampled chunk is
a view of the mapping: the process's anonymous memory holds only the chunks
in flight, and the operating system's page cache, which it can evict, holds
the rest. A mapping holds no file descriptor, and at most MAX_MAPPED files
are mapped at once (the least recently used is dropped first).

The copy is written to a temporary folder and renamed into place, so a kill
leaves either no copy or a whole one. It records the size and time of the
`.npz` it came from and is rebuilt whenever it does not match it or cannot
be read: the `.npz` files stay the only record that counts.
"""

import collections
import ctypes
import json
import mmap
import os
import pathlib
import shutil
import uuid
import weakref

import numpy as np

CACHE = '.cache'
SOURCE = 'source.json'
DATA = 'data.bin'
FORMAT = 2  # One data file per episode; format 1 had one .npy per key.
ALIGN = 64  # Each entry starts at a multiple of this many bytes.


def _max_mapped():
  # A quarter of the kernel's limit on mappings per process, which the rest
  # of the process (TensorFlow, its libraries) shares.
  try:
    with open('/proc/sys/vm/max_map_count') as f:
      return max(int(f.read()) // 4, 64)
  except (OSError, ValueError):
    return 4096


MAX_MAPPED = _max_mapped()


class Array:
  """One entry of a cached episode: shape and dtype now, data on slicing."""

  def __init__(self, path, shape, dtype, offset):
    self.path = path
    self.shape = tuple(shape)
    self.dtype = np.dtype(dtype)
    self.offset = offset  # Of the entry's first byte in the data file.
    self.nbytes = self.dtype.itemsize * int(np.prod(self.shape, dtype=np.int64))

  def __len__(self):
    return self.shape[0]

  def __getitem__(self, index):
    # A view of the mapped file: no copy until TensorFlow batches it.
    view = self._view()[index]
    if isinstance(index, slice):
      prefetch(view)
    return view

  def __array__(self, dtype=None, copy=None):
    value = np.array(self._view())
    return value if dtype is None else value.astype(dtype)

  def astype(self, dtype):
    return np.asarray(self, dtype)

  def _view(self):
    data = mapped(self.path)[self.offset:self.offset + self.nbytes]
    return data.view(self.dtype).reshape(self.shape)


_MAPPED = collections.OrderedDict()  # Path to its mapping, oldest use first.


def mapped(path):
  """The file's bytes as a read-only uint8 array backed by a shared mapping."""
  key = str(path)
  if key in _MAPPED:
    _MAPPED.move_to_end(key)
    return _MAPPED[key]
  while len(_MAPPED) >= MAX_MAPPED:
    _MAPPED.popitem(last=False)  # Unmapped once no chunk views it any more.
  _MAPPED[key] = array = _map(key)
  return array


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
    ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def prefetch(view):
  """Asks the kernel to read a view's pages from disk in one go; 0 if done.

  Without it, a chunk whose pages are not in the page cache is read a page
  (4 kB) per fault: the kernel turns off readahead for random access.
  """
  if not view.nbytes:
    return 0
  start = view.__array_interface__['data'][0]
  first = start - start % mmap.PAGESIZE
  return _libc.madvise(first, start + view.nbytes - first, mmap.MADV_WILLNEED)


def _map(path):
  # mmap(2) directly rather than Python's mmap module, which keeps a
  # duplicate of the file descriptor per mapping: thousands of episodes
  # would exhaust the process's descriptors.
  fd = os.open(path, os.O_RDONLY)
  try:
    size = os.fstat(fd).st_size
    if not size:
      return np.zeros(0, np.uint8)
    address = _libc.mmap(
        None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if address in (None, ctypes.c_void_p(-1).value):
      error = ctypes.get_errno()
      raise OSError(error, f'Cannot map {path}: {os.strerror(error)}')
  finally:
    os.close(fd)
  buffer = (ctypes.c_ubyte * size).from_address(address)
  # Views of the array keep the buffer alive, so the mapping goes with the
  # last view, never under one.
  weakref.finalize(buffer, _libc.munmap, address, size)
  array = np.frombuffer(buffer, np.uint8)
  array.flags.writeable = False
  return array


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
    if source.get('format') != FORMAT or source['size'] != stat.st_size or (
        source['mtime'] != stat.st_mtime_ns):
      return None
    path = folder / DATA
    if path.stat().st_size != source['bytes']:
      return None  # Truncated: reading past its end would crash the process.
    episode = {
        key: Array(path, entry['shape'], entry['dtype'], entry['offset'])
        for key, entry in source['keys'].items()}
    for array in episode.values():
      end = array.offset + array.nbytes
      if array.offset % ALIGN or end > source['bytes']:
        return None
  except (OSError, ValueError, KeyError, TypeError, AttributeError):
    return None
  lengths = {len(value) for value in episode.values()}
  return episode if len(lengths) == 1 else None


def build_cache(folder, filename):
  stat = filename.stat()
  data = read_npz(filename)
  temp = folder.parent / f'.{folder.name}.{uuid.uuid4().hex}.tmp'
  temp.mkdir(parents=True)
  try:
    keys, offset = {}, 0
    with (temp / DATA).open('wb') as f:
      for key, value in data.items():
        value = np.ascontiguousarray(value)
        f.write(bytes(-offset % ALIGN))
        offset += -offset % ALIGN
        keys[key] = dict(
            shape=list(value.shape), dtype=value.dtype.str, offset=offset)
        f.write(value.tobytes())
        offset += value.nbytes
    source = dict(
        format=FORMAT, size=stat.st_size, mtime=stat.st_mtime_ns,
        bytes=offset, keys=keys)
    (temp / SOURCE).write_text(json.dumps(source))
    try:
      os.rename(temp, folder)
    except OSError:
      if not folder.exists():
        raise  # Not a concurrent loader that got there first.
  finally:
    shutil.rmtree(temp, ignore_errors=True)


class DiskFull(Exception):
  pass


def check_run_disk(datadir, config):
  # In flight: the 10 prefetched batches and one more.
  return check_disk(
      datadir, config.steps, config.action_repeat,
      11 * config.batch_size * config.batch_length)


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
