"""support/storage.py: what interrupted writes leave is removed on start."""

from support import storage


def test_remove_leftovers_of_every_kind(tmp_path, capsys):
  (tmp_path / 'episodes' / '.cache').mkdir(parents=True)
  (tmp_path / 'checkpoints').mkdir()
  leftovers = [
      tmp_path / '.seeds.jsonl.tmp', tmp_path / '.config.json.tmp',
      tmp_path / 'episodes' / '.20261130T120000-ab-501.npz.tmp',
      tmp_path / 'checkpoints' / 'ckpt-5_temp']
  kept = [tmp_path / 'seeds.jsonl', tmp_path / 'metrics.jsonl',
          tmp_path / 'episodes' / '20261130T120000-ab-501.npz',
          tmp_path / 'checkpoints' / 'ckpt-5.index']
  for path in leftovers + kept:
    path.write_text('x')
  (tmp_path / 'episodes' / '.cache' / '.ep.tmp').mkdir()
  storage.remove_leftovers(tmp_path)
  assert [p for p in leftovers if p.exists()] == []
  assert not (tmp_path / 'episodes' / '.cache' / '.ep.tmp').exists()
  assert all(p.exists() for p in kept)
  assert 'Removed the partial file .seeds.jsonl.tmp' in capsys.readouterr().out
