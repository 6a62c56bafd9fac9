"""The four files that mirror the original keep its names and order.

`tests/data/original_names.json` lists, per file, the top-level functions and
classes and the methods of danijar/dreamer (commit of its release), in the
order they appear: all of them, also the helpers the original never calls
(`DummyEnv`, `nest_summary`, `graph_summary`) and its sampler patches, except
`_cat_sample` (README, Differences: categorical sampling), listed in EXEMPT.
"""

import ast
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
ORIGINAL = json.loads(
    (ROOT / 'tests' / 'data' / 'original_names.json').read_text())
EXEMPT = {'tools.py': ['_cat_sample']}
ORIGINAL = {f: [n for n in names if n not in EXEMPT.get(f, ())]
            for f, names in ORIGINAL.items()}


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


# The original's files, our rewrite of its plotting.py, and our entry scripts.
TOP_LEVEL = {
    'dreamer.py', 'models.py', 'tools.py', 'wrappers.py', 'plotting.py',
    'evaluate.py', 'sweep.py'}
ABOVE_SUPPORT = {name[:-3] for name in TOP_LEVEL}


def test_top_level_holds_only_the_originals_files_and_entry_scripts():
  found = {p.name for p in ROOT.glob('*.py')}
  assert found <= TOP_LEVEL, f'move {sorted(found - TOP_LEVEL)} to support/'


def imported_modules(path):
  """Every module name an import statement in the file names."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found |= {alias.name.split('.')[0] for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      found.add(node.module.split('.')[0])
      if node.module == 'support':
        found |= {alias.name for alias in node.names}
  return found


@pytest.mark.parametrize(
    'path', sorted((ROOT / 'support').glob('*.py')), ids=lambda p: p.name)
def test_support_modules_never_import_upward(path):
  upward = imported_modules(path) & ABOVE_SUPPORT
  assert not upward, f'support/{path.name} imports {sorted(upward)}'


def test_support_modules_import_no_circle():
  graph = {p.stem: imported_modules(p) & {
      q.stem for q in (ROOT / 'support').glob('*.py')} - {p.stem}
      for p in (ROOT / 'support').glob('*.py')}

  def reaches(start, target, seen=()):
    return any(n == target or (n not in seen and reaches(
        n, target, seen + (n,))) for n in graph[start])

  circles = sorted(name for name in graph if reaches(name, name))
  assert not circles, f'support modules in an import circle: {circles}'
