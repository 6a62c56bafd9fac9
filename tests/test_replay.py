"""replay.py: episodes sampled from an uncompressed cache on disk."""

import gc
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import runs
import tools
from support import replay
from support import storage


def write(directory, count, length, seed=0, size=16):
  rng = np.random.RandomState(seed)
  paths = []
  for _ in range(count):
    paths += runs.save_episodes(directory, [{
        'image': rng.randint(0, 255, (length, size, size, 3), np.uint8),
        'action': rng.uniform(-1, 1, (length, 2)).astype(np.float16),
        'reward': rng.randn(length).astype(np.float16),
        'discount': np.ones(length, np.float16)}])
  return paths


def eager(filename):
  # The original's cache: the whole episode decompressed in memory.
  with np.load(filename) as data:
    return {k: data[k] for k in data.keys()}


def take(loader, count):
  return [next(loader) for _ in range(count)]


def rss_anon():
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('RssAnon:'):
        return int(line.split()[1]) * 1024


class TestSameChunksAsTheOldCache:

  @pytest.mark.parametrize('balance', [False, True])
  def test_identical_content(self, tmp_path, monkeypatch, balance):
    write(tmp_path, 6, 40)
    ours = take(tools.load_episodes(tmp_path, 7, 9, balance, seed=5), 60)
    monkeypatch.setattr(replay, 'load', eager)
    old = take(tools.load_episodes(tmp_path, 7, 9, balance, seed=5), 60)
    for a, b in zip(ours, old):
      assert a.keys() == b.keys()
      for key in a:
        assert type(a[key]) is np.ndarray
        np.testing.assert_array_equal(a[key], b[key])
        assert a[key].dtype == b[key].dtype

  def test_whole_episode_has_shape_dtype_and_content(self, tmp_path):
    (path,) = write(tmp_path, 1, 12)
    episode = next(tools.load_episodes(tmp_path, 1))
    for key, value in eager(path).items():
      assert episode[key].shape == value.shape
      assert episode[key].dtype == value.dtype
      assert len(episode[key]) == len(value)
      np.testing.assert_array_equal(np.asarray(episode[key]), value)
      np.testing.assert_array_equal(episode[key][3:5], value[3:5])


MEASURE = """
import gc, pathlib, sys
sys.path[:0] = [{root!r}, {tests!r}]
import numpy as np
import tools
from support import replay
from test_replay import eager, rss_anon, write
folder = pathlib.Path({folder!r})
write(folder, 24, 200, size=64)  # 59 MB of images.
if {old!r}:
  replay.load = eager
gc.collect()
before = rss_anon()
loader = tools.load_episodes(folder, 50, 50, seed=0)
for _ in range(300):  # Every episode is loaded by now.
  next(loader)
gc.collect()
print(rss_anon() - before)
"""


def grown(folder, old):
  """RssAnon growth of a fresh process that samples 24 episodes."""
  tests = pathlib.Path(__file__).resolve().parent
  code = MEASURE.format(root=str(tests.parent), tests=str(tests),
                        folder=str(folder), old=old)
  result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  return int(result.stdout.split()[-1])


class TestMemory:

  def test_stays_bounded_as_the_replay_grows(self, tmp_path):
    assert grown(tmp_path, old=False) < 15 * 2 ** 20

  def test_the_measure_sees_the_old_cache(self, tmp_path):
    # The same measurement catches an in-memory cache.
    assert grown(tmp_path, old=True) > 50 * 2 ** 20

  def test_no_file_stays_open(self, tmp_path):
    write(tmp_path, 10, 30)
    before = len(os.listdir('/proc/self/fd'))
    take(tools.load_episodes(tmp_path, 20, 5, seed=0), 100)
    gc.collect()
    assert len(os.listdir('/proc/self/fd')) <= before + 1


class TestMappings:

  @staticmethod
  def mapped_files(folder):
    # Of this folder only: other tests' episodes may still be mapped.
    with open('/proc/self/maps') as f:
      return sum(line.rstrip().endswith('/data.bin') and str(folder) in line
                 for line in f)

  def test_at_most_max_mapped_and_views_outlive_them(
      self, tmp_path, monkeypatch):
    paths = write(tmp_path, 8, 20)
    monkeypatch.setattr(replay, 'MAX_MAPPED', 3)
    monkeypatch.setattr(replay, '_MAPPED', replay.collections.OrderedDict())
    loader = tools.load_episodes(tmp_path, 100, 5, seed=0)
    chunks = take(loader, 40)
    assert len(replay._MAPPED) <= 3
    # Chunks whose mapping was dropped still read their episode's data.
    images = [eager(p)['image'] for p in paths]
    for chunk in chunks:
      assert any(
          np.array_equal(chunk['image'], image[i:i + 5])
          for image in images for i in range(16))
    del chunks, loader
    gc.collect()
    assert self.mapped_files(tmp_path) <= 3

  def test_slices_ask_for_their_pages_in_one_go(self, tmp_path, monkeypatch):
    (path,) = write(tmp_path, 1, 30, size=64)
    episode = replay.load(path)
    asked = []
    prefetch = replay.prefetch
    monkeypatch.setattr(replay, 'prefetch', lambda view: asked.append(
        (view.__array_interface__['data'][0], view.nbytes, prefetch(view))))
    chunk = episode['reward'][7:19]  # Starts inside a page.
    assert chunk.__array_interface__['data'][0] % 4096
    start, size, result = asked[0]
    assert (start, size) == (chunk.__array_interface__['data'][0],
                             chunk.nbytes)
    assert result == 0  # madvise accepted the page-aligned range.
    assert prefetch(episode['image'][3:3]) == 0

  def test_mapping_holds_no_file_descriptor(self, tmp_path):
    paths = write(tmp_path, 5, 10)
    before = len(os.listdir('/proc/self/fd'))
    episodes = [replay.load(p) for p in paths]
    views = [e['image'][2:4] for e in episodes]
    assert len(os.listdir('/proc/self/fd')) == before
    assert all(not v.flags.writeable for v in views)

  def test_cache_of_the_per_key_format_is_rebuilt(self, tmp_path):
    (path,) = write(tmp_path, 1, 12)
    folder = path.parent / replay.CACHE / path.stem
    folder.mkdir(parents=True)
    stat = path.stat()
    for key, value in eager(path).items():  # As the first version wrote it.
      np.save(folder / f'{key}.npy', value)
    (folder / replay.SOURCE).write_text(replay.json.dumps(dict(
        size=stat.st_size, mtime=stat.st_mtime_ns, keys=['image'])))
    episode = replay.load(path)
    np.testing.assert_array_equal(episode['image'][:], eager(path)['image'])
    assert sorted(p.name for p in folder.iterdir()) == [
        'data.bin', 'source.json']


class TestCrashSafety:

  def _cache(self, path):
    return path.parent / replay.CACHE / path.stem

  def test_cache_is_built_once_beside_the_episode(self, tmp_path):
    (path,) = write(tmp_path, 1, 12)
    replay.load(path)
    folder = self._cache(path)
    files = sorted(p.name for p in folder.iterdir())
    assert files == ['data.bin', 'source.json']
    stamp = (folder / 'data.bin').stat().st_mtime_ns
    replay.load(path)
    assert (folder / 'data.bin').stat().st_mtime_ns == stamp
    # The replay's own files are not episodes.
    assert tools.count_episodes(tmp_path) == (1, 11)

  def test_truncated_cache_is_rebuilt(self, tmp_path):
    (path,) = write(tmp_path, 1, 12)
    replay.load(path)
    data = self._cache(path) / 'data.bin'
    data.write_bytes(data.read_bytes()[:-100])
    episode = replay.load(path)
    np.testing.assert_array_equal(episode['image'][:], eager(path)['image'])

  def test_cache_of_another_file_is_not_trusted(self, tmp_path):
    (path,) = write(tmp_path, 1, 12)
    replay.load(path)
    # The .npz replaced under the same name (a restored backup, say).
    (other,) = write(tmp_path / 'other', 1, 12, seed=1)
    os.replace(other, path)
    episode = replay.load(path)
    np.testing.assert_array_equal(episode['image'][:], eager(path)['image'])

  def test_killed_write_leaves_no_cache_and_is_cleaned(self, tmp_path):
    (path,) = write(tmp_path, 1, 12)
    partial = path.parent / replay.CACHE / f'.{path.stem}.0123.tmp'
    partial.mkdir(parents=True)
    (partial / 'data.bin').write_bytes(b'\x00' * 10)  # A write cut short.
    episode = replay.load(path)  # Built anew; the partial one is ignored.
    np.testing.assert_array_equal(episode['reward'][:], eager(path)['reward'])
    assert storage.remove_matching(
        tmp_path / replay.CACHE, '.*.tmp') == [partial]
    assert not partial.exists()

  def test_missing_source_record_is_rebuilt(self, tmp_path):
    (path,) = write(tmp_path, 1, 12)
    replay.load(path)
    (self._cache(path) / replay.SOURCE).unlink()
    episode = replay.load(path)
    assert (self._cache(path) / replay.SOURCE).exists()
    np.testing.assert_array_equal(episode['action'][:], eager(path)['action'])


class TestDiskProjection:

  def test_projects_episodes_and_cache_at_steps(self, tmp_path, capsys):
    paths = write(tmp_path, 2, 101, size=64)
    packed = sum(p.stat().st_size for p in paths) / 202
    raw = (64 * 64 * 3 + 2 * 2 + 2 + 2)  # Bytes of one step, uncompressed.
    result = replay.check_disk(tmp_path, 2e5, 2, 100)
    assert result['packed'] == pytest.approx(packed)
    assert result['raw'] == pytest.approx(raw)
    # 1e5 agent steps in all; the two files hold 202.
    assert result['need'] == pytest.approx((packed + raw) * (1e5 - 202))
    out = capsys.readouterr().out
    assert out.startswith('Replay at 200000 frames: ')
    assert 'uncompressed cache' in out and 'free' in out

  def test_refuses_when_the_disk_cannot_hold_it(self, tmp_path, monkeypatch):
    write(tmp_path, 1, 51)
    usage = replay.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(replay.shutil, 'disk_usage',
                        lambda path: usage._replace(free=10 ** 6))
    with pytest.raises(replay.DiskFull, match='more disk at --steps 5000000'):
      replay.check_disk(tmp_path, 5e6, 2, 100)

  def test_nothing_stored_nothing_projected(self, tmp_path):
    assert replay.check_disk(tmp_path, 5e6, 2, 100) is None


class TestUnwritableCache:

  def test_falls_back_to_memory(self, tmp_path, capsys):
    (path,) = write(tmp_path, 1, 12)
    (tmp_path / replay.CACHE).write_text('not a folder')  # mkdir fails.
    episode = replay.load(path)
    np.testing.assert_array_equal(episode['image'], eager(path)['image'])
    assert 'keeping episodes in memory instead' in capsys.readouterr().out
