"""The grouping of tests for pytest-xdist in conftest.py."""

import collections

import pytest

import conftest


def group_of(item):
  marks = list(item.iter_markers('xdist_group'))
  assert len(marks) == 1, (item.nodeid, marks)
  return marks[0].args[0]


def test_each_run_is_made_once(request):
  # A module-scoped run is made once per worker that runs the module's tests;
  # the session's cartpole_run once per worker that runs any of its users.
  if not conftest.in_loadgroup_worker(request.config):
    pytest.skip('not in a worker of pytest -n 2 --dist loadgroup')
  items = request.session.items
  groups = collections.defaultdict(set)
  for item in items:
    groups[item.module.__name__].add(group_of(item))
  assert all(len(names) == 1 for names in groups.values()), groups
  users = {item.module.__name__ for item in items
           if 'cartpole_run' in item.fixturenames}
  shared = {next(iter(groups[name])) for name in users}
  assert len(shared) <= 1, shared
  # Every other module has a group of its own.
  others = [next(iter(names)) for name, names in groups.items()
            if name not in users]
  assert len(set(others) | shared) == len(others) + len(shared), groups


def test_groups_reach_the_scheduler(request):
  # xdist's worker appends the group to each test's id, which its scheduler
  # reads; marks added after that step would group nothing.
  if not conftest.in_loadgroup_worker(request.config):
    pytest.skip('not in a worker of pytest -n 2 --dist loadgroup')
  for item in request.session.items:
    assert item.nodeid.endswith('@' + group_of(item)), item.nodeid
