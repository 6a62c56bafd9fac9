"""Crash safety of the files a run writes, episodes first.

Files are written under a hidden temporary name and renamed, so a kill never
leaves a partial file under a final name; what kills leave behind is removed
at the next start. An episode file that cannot be read is reported once and
skipped, never counted.
"""

import errno
import os
import pathlib
import shutil
import zipfile

# The module at the bottom of support/: it imports none of the others.

# What a write cut short by a kill leaves, by folder below the logdir: the
# temporary names of our files (config.json, seeds.jsonl, episodes), the
# replay cache's temporary folders, and TensorFlow's temporary checkpoint
# folders.
LEFTOVERS = (
    ('.', '.*.tmp', 'file'), ('episodes', '.*.tmp', 'file'),
    ('episodes/.cache', '.*.tmp', 'cache'),
    ('checkpoints', '*_temp*', 'checkpoint'))


def remove_leftovers(logdir):
  """Removes and names what writes cut short by a kill left in the logdir."""
  for folder, pattern, kind in LEFTOVERS:
    for path in remove_matching(pathlib.Path(logdir) / folder, pattern):
      print(f'Removed the partial {kind} {path.name} of an interrupted write.')


def remove_matching(directory, pattern):
  """Removes the files and folders in directory that match; returns them."""
  removed = []
  for path in pathlib.Path(directory).expanduser().glob(pattern):
    if path.is_dir() and not path.is_symlink():
      shutil.rmtree(path, ignore_errors=True)
    else:
      path.unlink(missing_ok=True)
    removed.append(path)
  return removed


# Episode files never change once written (atomic rename), so what is known
# about a file holds for the rest of the process: None means unusable.
_LENGTHS = {}


def episode_length(filename):
  """The stored transitions of an episode file by its name, None if unusable.

  The step counter comes from file names, so a corrupt or misnamed file must
  not count: it would inflate the step and shorten the prefill. The check
  reads only the zip directory at the end of the file, which a truncated
  file lacks.
  """
  key = str(filename)
  if key not in _LENGTHS:
    length = filename.stem.rsplit('-', 1)[-1]
    if not length.isdigit():
      report_broken(filename, 'the name does not end in -<length>.npz')
      _LENGTHS[key] = None
    elif not zipfile.is_zipfile(filename):
      report_broken(filename, 'it is not a complete npz archive')
      _LENGTHS[key] = None
    else:
      _LENGTHS[key] = int(length)
  return _LENGTHS[key]


def report_broken(filename, reason):
  """Marks an episode file unusable and says so once per process."""
  key = str(filename)
  if _LENGTHS.get(key, 0) is None:
    return
  _LENGTHS[key] = None
  print(f'Skipped unreadable episode file {filename.name}: {reason}', flush=True)


class WriteError(OSError):
  """A file of the run could not be written; nothing partial was left."""

  def __str__(self):
    # The message, without OSError's "[Errno 28]"; OSError's own without one.
    return self.strerror or super().__str__()


def write_atomic(filename, content):
  # Readers glob for the final name only, so they never see a partial file;
  # the hidden temporary name is removed on failure (e.g. a full disk).
  filename = pathlib.Path(filename)
  temp = filename.parent / f'.{filename.name}.tmp'
  try:
    with temp.open('wb') as f:
      f.write(content)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temp, filename)
  except OSError as e:
    temp.unlink(missing_ok=True)
    reason = 'the disk is full' if e.errno == errno.ENOSPC else str(e)
    raise WriteError(
        e.errno, f'Could not write {filename} because {reason}. No partial '
        'file was left behind and earlier files are intact.') from e


def new_files(directory, *known):
  # In the order they were written, not the directory's, so that the same
  # seed samples the same chunks in every run.
  paths = [p for p in directory.glob('*.npz') if not any(p in k for k in known)]
  return sorted(paths, key=lambda p: (_mtime(p), p.name))


def _mtime(path):
  try:
    return path.stat().st_mtime_ns
  except OSError:  # Gone since the listing; loading it will report that.
    return 0


def ensure_one_episode(datadir, collect_one):
  # The replay needs an episode to build the agent (its first train step and
  # the dataset's signature), also with --prefill 0 on an empty logdir.
  if not any(episode_length(p) for p in pathlib.Path(datadir).glob('*.npz')):
    print('The replay is empty: collecting one random episode to build the '
          'agent on.')
    collect_one()
