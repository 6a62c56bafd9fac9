"""evaluate.py on the shared tiny run: returns, video, and a run left as is."""

import concurrent.futures
import hashlib
import json
import shutil

import imageio.v3 as iio
import pytest

from runs import run
from runs import run_many


def fingerprint(logdir):
  """Content hashes of everything a run keeps, besides eval/."""
  files = {}
  for sub in ('episodes', 'checkpoints'):
    for path in sorted((logdir / sub).rglob('*')):
      if path.is_file():
        files[str(path.relative_to(logdir))] = hashlib.sha256(
            path.read_bytes()).hexdigest()
  for name in ('metrics.jsonl', 'config.json'):
    files[name] = hashlib.sha256((logdir / name).read_bytes()).hexdigest()
  return files


@pytest.fixture(scope='module')
def evaluated(cartpole_run, tmp_path_factory):
  root = tmp_path_factory.mktemp('eval')
  logdir, copy = root / 'run', root / 'copy'
  for path in (logdir, copy):
    shutil.copytree(cartpole_run[0], path)
  before = fingerprint(logdir)
  gif = root / 'watch.gif'
  # The two at once, each on its own copy of the run: an evaluation is
  # mostly one thread.
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    first = pool.submit(
        run, '--logdir', logdir, '--episodes', '2', '--seed', '4',
        script='evaluate.py')
    second = pool.submit(
        run, '--logdir', copy, '--episodes', '2', '--seed', '4',
        '--video', gif, script='evaluate.py')
    first, second = first.result(), second.result()
  return dict(logdir=logdir, before=before,
              after=[fingerprint(logdir), fingerprint(copy)],
              first=first, second=second, gif=gif)


def test_prints_returns_and_writes_json(evaluated):
  code, output = evaluated['first']
  assert code == 0, output[-3000:]
  report = json.loads((evaluated['logdir'] / 'eval' / '3000.json').read_text())
  assert report['step'] == 3000 and report['episodes'] == 2
  assert len(report['returns']) == len(report['lengths']) == 2
  assert report['lengths'] == [1000, 1000]
  assert report['checkpoint'].endswith('ckpt-3000')
  assert report['seed'] == 4 and report['wall_time'] > 0
  assert report['mean'] == pytest.approx(sum(report['returns']) / 2)
  for i, ret in enumerate(report['returns']):
    assert f'Episode {i + 1}: return {ret:.1f}, length 1000' in output
  assert f'Mean return {report["mean"]:.1f} ± {report["std"]:.1f}' in output


def test_mp4_decodes_to_upscaled_frames(evaluated):
  frames = iio.imread(evaluated['logdir'] / 'eval' / '3000.mp4')
  assert frames.ndim == 4 and len(frames) > 1
  assert frames.shape[1:] == (256, 256, 3)


def test_gif_by_file_name(evaluated):
  code, output = evaluated['second']
  assert code == 0, output[-3000:]
  frames = iio.imread(evaluated['gif'], index=None)
  assert len(frames) > 1 and frames.shape[1:3] == (256, 256)


def test_same_seed_same_returns(evaluated):
  first = [l for l in evaluated['first'][1].splitlines()
           if l.startswith('Episode ')]
  second = [l for l in evaluated['second'][1].splitlines()
            if l.startswith('Episode ')]
  assert len(first) == 2 and first == second


def test_run_is_left_as_it_was(evaluated):
  assert evaluated['after'] == [evaluated['before']] * 2
  assert 'Training for' not in evaluated['first'][1]


@pytest.fixture(scope='module')
def refusals(cartpole_run, tmp_path_factory):
  """(exit code, output) of each bad input, by name: all in one process
  (runs.run_many), except test_not_a_run, which runs `python evaluate.py`."""
  root = tmp_path_factory.mktemp('refusals')
  checkpoints = cartpole_run[0] / 'checkpoints'

  def copy(name):
    logdir = root / name
    shutil.copytree(cartpole_run[0], logdir)
    return logdir

  unreadable = root / 'unreadable'
  unreadable.mkdir()
  (unreadable / 'config.json').write_text('{not json')
  no_checkpoint = copy('no_checkpoint')
  shutil.rmtree(no_checkpoint / 'checkpoints')
  unparsable = copy('unparsable')
  (unparsable / 'checkpoints' / 'checkpoint').write_text('')
  empty = root / 'empty'
  empty.mkdir()
  other_size = copy('other_size')
  config = json.loads((other_size / 'config.json').read_text())
  config['num_units'] = 48
  (other_size / 'config.json').write_text(json.dumps(config))
  cases = {
      'unreadable_config': ['--logdir', unreadable],
      'no_checkpoint': ['--logdir', no_checkpoint],
      'index_file': ['--logdir', cartpole_run[0], '--checkpoint',
                     checkpoints / 'ckpt-3000.index'],
      'data_file': ['--logdir', cartpole_run[0], '--checkpoint',
                    checkpoints / 'ckpt-3000.data-00000-of-00001'],
      'unparsable': ['--logdir', unparsable],
      'missing_prefix': ['--logdir', cartpole_run[0], '--checkpoint',
                         root / 'missing' / 'ckpt-1'],
      'empty_directory': ['--logdir', cartpole_run[0], '--checkpoint', empty],
      # Last: the only one that builds the agent.
      'other_size': ['--logdir', other_size],
  }
  results = dict(zip(cases, run_many(cases.values(), script='evaluate.py')))
  return dict(results, root=root, checkpoints=checkpoints)


class TestBadInput:

  def _refused(self, refusals, name):
    code, output = refusals[name]
    assert code == 2, output[-2000:]
    assert 'Traceback' not in output
    return output

  def test_not_a_run(self, tmp_path):
    # The program itself, as a user starts it: exit status 2, no traceback.
    code, output = run('--logdir', str(tmp_path), script='evaluate.py',
                       timeout=200)
    assert code == 2 and 'Traceback' not in output, output[-2000:]
    assert 'is not a run of dreamer.py: it has no config.json' in output

  def test_unreadable_config(self, refusals):
    assert 'Cannot read' in self._refused(refusals, 'unreadable_config')

  def test_no_checkpoint(self, refusals):
    assert 'has no checkpoint' in self._refused(refusals, 'no_checkpoint')

  def test_checkpoint_of_another_size(self, refusals):
    assert 'does not fit' in self._refused(refusals, 'other_size')

  @pytest.mark.parametrize('name', ['index_file', 'data_file'])
  def test_file_of_a_checkpoint(self, refusals, name):
    prefix = refusals['checkpoints'] / 'ckpt-3000'
    assert (f'is one file of a checkpoint; give its prefix, --checkpoint '
            f'{prefix}.') in self._refused(refusals, name)

  def test_unparsable_list_of_checkpoints(self, refusals):
    assert 'Cannot read the list of checkpoints in' in self._refused(
        refusals, 'unparsable')

  @pytest.mark.parametrize('name, path', [
      ('missing_prefix', 'missing/ckpt-1'), ('empty_directory', 'empty')])
  def test_missing_checkpoint_path(self, refusals, name, path):
    # A prefix with no files, and a directory with no checkpoint in it.
    output = self._refused(refusals, name)
    assert f'Cannot read the checkpoint {refusals["root"] / path}' in output
    # Named before the agent is built (a minute at the paper's sizes).
    assert 'model parameters' not in output


def test_checkpoint_by_prefix_by_directory_and_truncated(
    cartpole_run, tmp_path):
  """--checkpoint as a prefix; as a directory whose newest checkpoint is
  gone, which falls back to the older one as a run's own directory does;
  and as a prefix whose data file is truncated: refused, no traceback."""
  logdirs = [tmp_path / name for name in ('prefix', 'gone', 'truncated')]
  for logdir in logdirs:
    shutil.copytree(cartpole_run[0], logdir)
  prefix, gone, truncated = [d / 'checkpoints' for d in logdirs]
  for path in gone.glob('ckpt-3000.*'):
    path.unlink()
  data = truncated / 'ckpt-3000.data-00000-of-00001'
  data.write_bytes(data.read_bytes()[:1000])
  paths = [prefix / 'ckpt-2000', gone, truncated / 'ckpt-3000']
  # At once: an evaluation is mostly one thread.
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    futures = [pool.submit(
        run, '--logdir', logdir, '--checkpoint', path, '--episodes', '1',
        script='evaluate.py') for logdir, path in zip(logdirs, paths)]
    (code1, out1), (code2, out2), (code3, out3) = [
        f.result() for f in futures]
  assert code1 == 0, out1[-3000:]
  assert f'Evaluating {prefix / "ckpt-2000"} (step 3000)' in out1
  assert code2 == 0, out2[-3000:]
  assert f'Evaluating {gone / "ckpt-2000"} (step 3000)' in out2
  assert code3 == 2 and 'Traceback' not in out3, out3[-3000:]
  assert f'Cannot read the checkpoint {paths[2]}: Read less bytes' in out3
