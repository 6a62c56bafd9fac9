"""evaluate.py on the shared tiny run: returns, video, and a run left as is."""

import concurrent.futures
import hashlib
import json
import shutil

import imageio.v3 as iio
import pytest

from runs import run


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


class TestBadInput:

  def _refused(self, *flags):
    code, output = run(*map(str, flags), script='evaluate.py', timeout=200)
    assert code == 2, output[-2000:]
    assert 'Traceback' not in output
    return output

  def test_not_a_run(self, tmp_path):
    output = self._refused('--logdir', tmp_path)
    assert 'is not a run of dreamer.py: it has no config.json' in output

  def test_unreadable_config(self, tmp_path):
    (tmp_path / 'config.json').write_text('{not json')
    assert 'Cannot read' in self._refused('--logdir', tmp_path)

  def test_no_checkpoint(self, cartpole_run, tmp_path):
    logdir = tmp_path / 'run'
    shutil.copytree(cartpole_run[0], logdir)
    shutil.rmtree(logdir / 'checkpoints')
    assert 'has no checkpoint' in self._refused('--logdir', logdir)

  def test_checkpoint_of_another_size(self, cartpole_run, tmp_path):
    logdir = tmp_path / 'run'
    shutil.copytree(cartpole_run[0], logdir)
    config = json.loads((logdir / 'config.json').read_text())
    config['num_units'] = 48
    (logdir / 'config.json').write_text(json.dumps(config))
    output = self._refused('--logdir', logdir)
    assert 'does not fit' in output

  @pytest.mark.parametrize('name', [
      'ckpt-3000.index', 'ckpt-3000.data-00000-of-00001'])
  def test_file_of_a_checkpoint(self, cartpole_run, name):
    checkpoints = cartpole_run[0] / 'checkpoints'
    output = self._refused('--logdir', cartpole_run[0], '--checkpoint',
                           checkpoints / name)
    assert (f'is one file of a checkpoint; give its prefix, --checkpoint '
            f'{checkpoints / "ckpt-3000"}.') in output

  def test_unparsable_list_of_checkpoints(self, cartpole_run, tmp_path):
    logdir = tmp_path / 'run'
    shutil.copytree(cartpole_run[0], logdir)
    (logdir / 'checkpoints' / 'checkpoint').write_text('')
    output = self._refused('--logdir', logdir)
    assert 'Cannot read the list of checkpoints in' in output

  @pytest.mark.parametrize('name', ['ckpt-1', ''])
  def test_missing_checkpoint_path(self, cartpole_run, tmp_path, name):
    # A prefix with no files, and a directory with no checkpoint in it.
    output = self._refused('--logdir', cartpole_run[0], '--checkpoint',
                           tmp_path / name)
    assert f'Cannot read the checkpoint {tmp_path / name}' in output
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
