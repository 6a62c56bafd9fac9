"""The four files that mirror the original keep its names and order.

`tests/data/original_names.json` lists, per file, the top-level functions and
classes and the methods of danijar/dreamer (commit of its release), in the
order they appear. Left out: the helpers the original never calls
(`DummyEnv`, `nest_summary`, `graph_summary`) and its monkey-patches of TFP's
samplers (`_mnd_sample`, `_cat_sample`), which `models.RSSM` replaces
(README: RSSM noise).
"""

import ast
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
ORIGINAL = json.loads(
    (ROOT / 'tests' / 'data' / 'original_names.json').read_text())


def names(path):
  """Top-level functions and classes, and classes' methods, in file order."""
  found = []
  for node in ast.parse(path.read_text()).body:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
      found.append(node.name)
    if isinstance(node, ast.ClassDef):
      found += [f'{node.name}.{sub.name}' for sub in node.body
                if isinstance(sub, ast.FunctionDef)]
  return found


@pytest.mark.parametrize('filename', sorted(ORIGINAL))
def test_original_names_present_in_order(filename):
  ours = names(ROOT / filename)
  missing = [name for name in ORIGINAL[filename] if name not in ours]
  assert not missing, f'{filename} lacks the original\'s {missing}'
  order = [name for name in ours if name in ORIGINAL[filename]]
  assert order == ORIGINAL[filename], f'{filename}: out of the original order'


def test_names_are_the_originals():
  # The list itself: a few entries a reader looks for first.
  assert ORIGINAL['dreamer.py'][:3] == [
      'define_config', 'Dreamer', 'Dreamer.__init__']
  assert 'Dreamer.load' in ORIGINAL['dreamer.py']
  assert 'Async._worker' in ORIGINAL['wrappers.py']
  assert 'Atari._get_obs' in ORIGINAL['wrappers.py']
