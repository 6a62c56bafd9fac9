"""Prints every figure docs/learning.md quotes, from the runs' metrics.jsonl.

  python docs/figures.py
  python docs/figures.py --shared ../shared/learning  # Also the first runs.

Each section is headed by the docs' section it feeds; every number is
computed here from scores/cpu/*/metrics.jsonl (and the paper's
scores/dreamer.json), so a figure in the docs that this does not print is a
figure nobody checked. Each run's test return at an evaluation is one
episode (--eval_episodes 1, the original's); each training return is one
episode per 1000 frames.
"""

import argparse
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import plotting  # noqa: E402

CPU = ROOT / 'scores' / 'cpu'
CARTPOLE = CPU / 'dmc_cartpole_balance'
WALKER = CPU / 'dmc_walker_walk' / 'shared-0'
AB_RUNS = ['shared-0', 'independent-0', 'shared-1', 'independent-1',
           'independent-2']
# The test return of a policy at its tanh bound, pushing the cart one way,
# and its training return with exploration noise (the docs' "bound").
BOUND_TRAIN = (141, 149)
# Image loss of a perfect reconstruction: the unit Gaussian's constant over
# 64 x 64 x 3 pixels, 0.5 * log(2 pi) * 12288.
IMAGE_FLOOR = 0.5 * np.log(2 * np.pi) * 64 * 64 * 3


def load(rundir):
  path = pathlib.Path(rundir) / 'metrics.jsonl'
  with path.open() as f:
    return [json.loads(line) for line in f if line.strip()]


def series(entries, key):
  """(steps, values) of every line that has `key`, in file order."""
  pairs = [(e['step'], e[key]) for e in entries if key in e]
  steps, values = zip(*pairs) if pairs else ((), ())
  return np.array(steps, float), np.array(values, float)


def between(entries, key, low, high):
  steps, values = series(entries, key)
  keep = (steps >= low) & (steps <= high)
  return steps[keep], values[keep]


def span(entries, key, low, high, digits=1):
  """'min–max (n)' of `key` over frames [low, high]."""
  _, values = between(entries, key, low, high)
  if not len(values):
    return 'none'
  return (f'{values.min():.{digits}f}–{values.max():.{digits}f} '
          f'(mean {values.mean():.{digits}f}, median '
          f'{np.median(values):.{digits}f}, {len(values)} lines, '
          f'{int(low / 1000)}k–{int(high / 1000)}k)')


def nearest(entries, frames):
  steps, values = series(entries, 'test/return')
  index = int(np.argmin(np.abs(steps - frames)))
  return steps[index], values[index]


def k(frames):
  return plotting.format_frames(frames)


def paper_at(task, frames):
  reference = plotting.load_reference(ROOT / 'scores')
  xs, mean, low, high = plotting.paper_curve(reference, task)
  index = list(xs).index(frames)
  return mean[index], low[index], high[index]


def window(entries, frames, half=25000):
  """Mean of the test returns within ±half of frames, as --verify takes it."""
  steps, values = between(entries, 'test/return', frames - half,
                          frames + half)
  return values.mean(), len(values), [int(s / 1000) for s in steps]


def wall_time(entries, frames=105000):
  """Hours of the agent's processes up to `frames`, from the logged fps.

  A process's first log line has no fps; each later one's is the frames
  since the previous log over the seconds since the previous log, but for
  the second line since the agent was built (dreamer.py keeps _last_time
  from the constructor). So the sum of frames / fps runs from each
  process's agent construction, its first training phase included, to its
  last log up to `frames`: prefill, a process's time after its last log,
  the gap before a resume and a resumed process's start-up are left out.
  """
  seconds, last = 0.0, None
  for entry in entries:
    if 'fps' not in entry and 'model_loss' in entry:
      last = entry['step']
    if 'fps' in entry and last is not None and entry['step'] <= frames:
      seconds += (entry['step'] - last) / entry['fps']
      last = entry['step']
  return seconds / 3600


def summary():
  print('== Summary: the test return at 105k frames, per run ==')
  mean, low, high = paper_at('dmc_cartpole_balance', 105000)
  print(f'paper cartpole_balance at 105k: {mean:.1f} ({low:.1f}–{high:.1f})')
  mean, low, high = paper_at('dmc_walker_walk', 105000)
  print(f'paper walker_walk at 105k: {mean:.1f} ({low:.1f}–{high:.1f})')
  runs = [(f'cartpole {name}', load(CARTPOLE / name)) for name in AB_RUNS]
  runs.append(('walker shared-0', load(WALKER)))
  for name, entries in runs:
    step, value = nearest(entries, 105000)
    value_w, count, at = window(entries, 105000)
    print(f'{name}: nearest 105k {value:.1f} at {k(step)}; window 80k–130k '
          f'{value_w:.1f} over {count} evaluations {at} (1 episode each); '
          f'logged wall time to 105k {wall_time(entries):.2f} h')
  for sampler in ('independent', 'shared'):
    names = [n for n in AB_RUNS if n.startswith(sampler)]
    near = [nearest(load(CARTPOLE / n), 105000)[1] for n in names]
    wins = [window(load(CARTPOLE / n), 105000)[0] for n in names]
    print(f'{sampler}: {len(names)} runs; nearest 105k mean {np.mean(near):.1f}'
          f' ({min(near):.1f}–{max(near):.1f}); window mean '
          f'{np.mean(wins):.1f} ({min(wins):.1f}–{max(wins):.1f})')
  untrained = [nearest(load(CARTPOLE / n), 5000)[1] for n in AB_RUNS]
  print(f'cartpole test return at 5k (untrained), 5 runs: '
        f'{min(untrained):.1f}–{max(untrained):.1f}')


def test_table():
  print('\n== Test return per evaluation, cartpole_balance, 5k–105k ==')
  for name in AB_RUNS:
    steps, values = between(load(CARTPOLE / name), 'test/return', 0, 106000)
    cells = ', '.join(f'{k(s)} {v:.1f}' for s, v in zip(steps, values))
    print(f'{name}: {cells}')


def train_table():
  print('\n== Training returns, cartpole_balance ==')
  for name in AB_RUNS:
    entries = load(CARTPOLE / name)
    _, late = between(entries, 'train/return', 90000, 104000)
    _, mid = between(entries, 'train/return', 7000, 104000)
    at_bound = ((mid >= BOUND_TRAIN[0]) & (mid <= BOUND_TRAIN[1])).sum()
    _, prefill = between(entries, 'train/return', 0, 5000)
    print(f'{name}: mean 90k–104k {late.mean():.0f} ({len(late)} episodes); '
          f'at {BOUND_TRAIN[0]}–{BOUND_TRAIN[1]} from 7k to 104k: {at_bound} '
          f'of {len(mid)}; prefill episodes (random actions) '
          f'{", ".join(f"{v:.1f}" for v in prefill)}')


def seed_claims():
  print('\n== Seed by seed ==')
  ind0, sh0 = load(CARTPOLE / 'independent-0'), load(CARTPOLE / 'shared-0')
  print(f'independent-0 test 15k–25k: {span(ind0, "test/return", 15e3, 25e3)}')
  print(f'independent-0 test 35k–85k: {span(ind0, "test/return", 35e3, 85e3)}')
  print(f'shared-0 test 55k–105k: {span(sh0, "test/return", 55e3, 105e3)}')
  sh1, ind1 = load(CARTPOLE / 'shared-1'), load(CARTPOLE / 'independent-1')
  print(f'shared-1 test 45k–94k: {span(sh1, "test/return", 45e3, 94e3)}')
  print(f'shared-1 test 15k–35k: {span(sh1, "test/return", 15e3, 35e3)}')
  steps, values = series(sh1, 'train/return')
  off = steps[(steps < 95e3) & ((values < BOUND_TRAIN[0]) |
                                (values > BOUND_TRAIN[1]))]
  print(f'shared-1 last training episode off the bound before 95k: '
        f'{k(off[-1])}')
  print(f'shared-1 test 95k–110k: {span(sh1, "test/return", 95e3, 110e3)}')
  for low, high in ((5e3, 54e3), (65e3, 94e3), (95e3, 110e3)):
    print(f'shared-1 actor_grad_norm: '
          f'{span(sh1, "actor_grad_norm", low, high, 4)}')
  print(f'shared-1 action_ent 65k–94k: '
        f'{span(sh1, "action_ent", 65e3, 94e3, 1)}')
  print(f'shared-1 train 45k–101k: '
        f'{span(sh1, "train/return", 45e3, 101e3, 0)}')
  steps, values = between(sh1, 'train/return', 95e3, 110e3)
  print('shared-1 train 95k–110k: ' + ', '.join(
      f'{k(s)} {v:.0f}' for s, v in zip(steps, values)))
  print(f'independent-1 actor_grad_norm, whole run: '
        f'{span(ind1, "actor_grad_norm", 0, 205e3, 4)}')
  _, norms = series(ind1, 'actor_grad_norm')
  print(f'independent-1 actor_grad_norm 10th–90th percentile: '
        f'{np.percentile(norms, 10):.3f}–{np.percentile(norms, 90):.3f}')
  print(f'independent-1 test 15k–105k: '
        f'{span(ind1, "test/return", 15e3, 105e3)}')
  print(f'independent-1 test 5k–105k: '
        f'{span(ind1, "test/return", 5e3, 105e3)}')
  print(f'independent-1 test 115k–195k: '
        f'{span(ind1, "test/return", 115e3, 195e3)}')
  mean, low, high = paper_at('dmc_cartpole_balance', 205000)
  last = series(ind1, 'test/return')[0][-1]
  print(f'independent-1 at 205k: last test {k(last)}; paper at 205k '
        f'{mean:.1f} ({low:.1f}–{high:.1f})')
  ind2 = load(CARTPOLE / 'independent-2')
  _, early = between(ind2, 'train/return', 6e3, 42e3)
  at_bound = ((early >= BOUND_TRAIN[0]) & (early <= BOUND_TRAIN[1])).sum()
  print(f'independent-2 train 6k–42k at the bound: {at_bound} of {len(early)}')
  print(f'independent-2 test 5k–45k: {span(ind2, "test/return", 5e3, 45e3)}')
  print(f'independent-2 test 55k–75k: {span(ind2, "test/return", 55e3, 75e3)}')
  print(f'independent-2 test 85k–105k: '
        f'{span(ind2, "test/return", 85e3, 105e3)}')


def prefill_claims():
  print('\n== Prefill: do the runs of a seed share it? ==')
  print('(the first five training episodes are the random prefill)')
  for name in AB_RUNS + ['independent-ts200-0']:
    rundir = CARTPOLE / name
    _, prefill = between(load(rundir), 'train/return', 0, 5000)
    config = json.loads((rundir / 'config.json').read_text())
    print(f'{name}: {", ".join(f"{v:.2f}" for v in prefill)}; config.json '
          f'{"has" if "deterministic" in config else "lacks"} --deterministic')


def world_model_claims():
  print('\n== World model losses, cartpole_balance ==')
  print(f'image loss floor: {IMAGE_FLOOR:.1f}')
  for name in AB_RUNS:
    entries = load(CARTPOLE / name)
    _, image = between(entries, 'image_loss', 15e3, 105e3)
    _, reward = series(entries, 'reward_loss')
    _, late_reward = between(entries, 'reward_loss', 15e3, 105e3)
    print(f'{name}: image loss above the floor 15k–105k '
          f'{image.min() - IMAGE_FLOOR:.1f}–{image.max() - IMAGE_FLOOR:.1f}; '
          f'reward loss first {reward[0]:.3f}, 15k–105k '
          f'{late_reward.min():.3f}–{late_reward.max():.3f}')


def walker_claims():
  print('\n== walker_walk shared-0 ==')
  entries = load(WALKER)
  steps, values = series(entries, 'test/return')
  print('test: ' + ', '.join(f'{k(s)} {v:.1f}' for s, v in zip(steps, values)))
  _, prefill = between(entries, 'train/return', 0, 5000)
  print(f'prefill (random actions) train returns: '
        f'{", ".join(f"{v:.1f}" for v in prefill)}')
  print(f'train 6k–30k: {span(entries, "train/return", 6e3, 30e3, 0)}')
  print(f'train 113k–127k: {span(entries, "train/return", 113e3, 127e3, 0)}')
  value, count, at = window(entries, 105000)
  print(f'window 80k–130k: {value:.1f} over {count} evaluations {at}')


def ts200_claims():
  print('\n== cartpole_balance independent-ts200-0 ==')
  entries = load(CARTPOLE / 'independent-ts200-0')
  steps, values = series(entries, 'test/return')
  print('test: ' + ', '.join(f'{k(s)} {v:.1f}' for s, v in zip(steps, values)))
  _, late = between(entries, 'train/return', 28e3, 42e3)
  at_bound = ((late >= BOUND_TRAIN[0]) & (late <= BOUND_TRAIN[1])).sum()
  print(f'train 28k–42k: {span(entries, "train/return", 28e3, 42e3, 0)}; '
        f'at the bound {at_bound} of {len(late)}')


def batch32_claims():
  print('\n== cartpole_balance independent-b32-0: the preset at batch 32 in '
        'mixed_bfloat16 ==')
  entries = load(CARTPOLE / 'independent-b32-0')
  base = load(CARTPOLE / 'independent-0')  # Seed 0, batch 16, float32.
  config = json.loads((CARTPOLE / 'independent-b32-0' / 'config.json')
                      .read_text())
  print(f'batch_size {config["batch_size"]}, precision {config["precision"]}'
        f', last line at {k(max(e["step"] for e in entries))} frames')
  _, ours = between(entries, 'train/return', 0, 5000)
  _, theirs = between(base, 'train/return', 0, 5000)
  print('prefill train returns, this run / independent-0: ' + ', '.join(
      f'{a:.2f}/{b:.2f}' for a, b in zip(ours, theirs)))
  steps, values = series(entries, 'test/return')
  print('test returns (independent-0 at the same frames): ' + ', '.join(
      f'{k(s)} {v:.1f} ({nearest(base, s)[1]:.1f})'
      for s, v in zip(steps, values)))
  last = steps[-1] if len(steps) else 0
  if last >= 55000:
    value, count, at = window(entries, last - 25000)
    print(f'mean test return over {at}: {value:.1f} ({count} evaluations); '
          f'independent-0 over the same: '
          f'{np.mean([nearest(base, s * 1000)[1] for s in at]):.1f}')
  end = max(e['step'] for e in entries)
  steps, norms = series(entries, 'actor_grad_norm')
  print('actor gradient norm: ' + ', '.join(
      f'{k(s)} {v:.2g}' for s, v in zip(steps, norms)))
  fps_steps, fps = series(entries, 'fps')
  quiet = fps[fps_steps >= 12000]
  hours = wall_time(entries, end)
  print(f'logged hours (frames / fps): {hours:.2f}; median fps from 12k on '
        f'{np.median(quiet):.2f} ({len(quiet)} phases, {quiet.min():.2f}–'
        f'{quiet.max():.2f}), so 100k frames after the prefill take '
        f'{100000 / np.median(quiet) / 3600:.2f} h')


def shared_claims(directory):
  print(f'\n== First runs, {directory} ==')
  for path in sorted(pathlib.Path(directory).glob('*.metrics.jsonl')):
    with path.open() as f:
      entries = [json.loads(line) for line in f if line.strip()]
    steps, norms = series(entries, 'actor_grad_norm')
    early = ', '.join(f'{k(s)} {v:.3f}' for s, v in zip(steps, norms)
                      if s <= 8000)
    steps, train = series(entries, 'train/return')
    after = ', '.join(f'{k(s)} {v:.0f}' for s, v in zip(steps, train)
                      if 5000 < s <= 9000)
    print(f'{path.name}: actor_grad_norm {early}; train returns after the '
          f'prefill: {after}')
    print(f'  actor_grad_norm 7k–16k: '
          f'{span(entries, "actor_grad_norm", 7e3, 16e3, 4)}')
    print(f'  train 7k–25k: {span(entries, "train/return", 7e3, 25e3, 0)}')
    print(f'  train 26k–40k: {span(entries, "train/return", 26e3, 40e3, 0)}')
    steps, values = series(entries, 'test/return')
    print('  test: ' + ', '.join(f'{k(s)} {v:.1f}'
                                 for s, v in zip(steps, values)))


PAPER = ROOT / 'scores' / 'paper'
# Attempts of the same command and seed, lost with runs/ (24k, 11k, 6k
# frames in float32; 16k in mixed_bfloat16) or with /root/dreamer-runs/
# (38k in mixed_bfloat16).
LOST_D5D4941 = PAPER / 'attempt-d5d4941' / 'dmc_cartpole_balance' / '0'
LOST_514F07B = PAPER / 'attempt-514f07b' / 'dmc_cartpole_balance' / '0'
LOST_09FA511 = PAPER / 'attempt-09fa511' / 'dmc_cartpole_balance' / '0'
LOST_ADDEAE0 = PAPER / 'attempt-addeae0' / 'dmc_cartpole_balance' / '0'
LOST_6FAE87F = PAPER / 'attempt-6fae87f' / 'dmc_cartpole_balance' / '0'


def paper_status(rundir=PAPER / 'dmc_cartpole_balance' / '0', attempt=None):
  """Where the default command's run stands (issue 20; scores/paper)."""
  if not (pathlib.Path(rundir) / 'metrics.jsonl').exists():
    return
  entries = load(rundir)
  print(f'\n## Default command, {rundir.relative_to(ROOT)}')
  last = max(e['step'] for e in entries)
  phases = [e['step'] for e in entries if 'model_loss' in e]
  print(f'last line at {k(last)} frames; {len(phases)} logged training '
        f'phases, the last at {k(phases[-1]) if phases else "none"}')
  steps, values = series(entries, 'test/return')
  print('test returns: ' + ', '.join(
      f'{k(s)} {v:.1f}' for s, v in zip(steps, values)))
  steps, values = series(entries, 'train/return')
  print('train returns: ' + ', '.join(
      f'{k(s)} {v:.1f}' for s, v in zip(steps, values)))
  print(f'hours of logged phases (frames / fps): {wall_time(entries, last):.2f}')
  steps, values = series(entries, 'actor_grad_norm')
  print('actor gradient norm: ' + ', '.join(
      f'{k(s)} {v:.2g}' for s, v in zip(steps, values)))
  if attempt is not None:
    same_seed(rundir, attempt)
  seeds = plotting.load_reference(ROOT / 'scores').curves[
      'dmc_cartpole_balance']
  for frames in (5000, 105000):
    returns = sorted(y[list(x).index(frames)] for x, y in seeds)
    print(f'the paper\'s {len(returns)} seeds at {k(frames)}: ' +
          ', '.join(f'{r:.1f}' for r in returns))
  print('stretches at the bound, this run and the preset\'s cartpole runs '
        f'(train returns {BOUND_TRAIN[0]}–{BOUND_TRAIN[1]}, at least 3 in a '
        'row; the actor\'s gradient norm in their phases):')
  runs = [('default command', rundir)] + [
      (f'preset {run.name}', run) for run in sorted(CARTPOLE.iterdir())]
  for name, run in runs:
    for first, end, count, norms in bound_stretches(load(run)):
      print(f'  {name:<27} {k(first)}–{k(end)} ({count} returns), gradient '
            f'norm {min(norms):.2g}–{max(norms):.2g}')


def first_difference(entries, other):
  """(step, key, ours, theirs): the first logged value two runs disagree on.

  Lines are matched by step; fps, a wall-clock figure, is left out, and so
  is a step or key only one of the two logged. Two NaNs count as the same.
  None if every value the two share is the same.
  """
  theirs = {}
  for entry in other:
    theirs.setdefault(entry['step'], {}).update(entry)
  for entry in sorted(entries, key=lambda e: e['step']):
    for key, value in entry.items():
      if key in ('step', 'fps') or key not in theirs.get(entry['step'], {}):
        continue
      other_value = theirs[entry['step']][key]
      if other_value != value and not (np.isnan(other_value)
                                       and np.isnan(value)):
        return entry['step'], key, value, other_value
  return None


def same_seed(rundir, attempt):
  """Where the run leaves an earlier attempt of the same command and seed."""
  found = first_difference(load(rundir), load(attempt))
  name = attempt.relative_to(PAPER)
  if found is None:
    print(f'every value it shares with {name} is the same')
    return
  step, key, ours, theirs = found
  print(f'the first value it logs differently from {name} (the same seed): '
        f'{key} at {k(step)}, {ours:.6g} against {theirs:.6g}')


def bound_stretches(entries, least=3):
  """(first, last frame, count, gradient norms): train returns at the bound."""
  steps, values = series(entries, 'train/return')
  inside = (values >= BOUND_TRAIN[0]) & (values <= BOUND_TRAIN[1])
  norm_steps, norms = series(entries, 'actor_grad_norm')
  stretches, start = [], None
  for index, flag in enumerate(list(inside) + [False]):
    if flag and start is None:
      start = index
    elif not flag and start is not None:
      if index - start >= least:
        low, high = steps[start], steps[index - 1]
        within = norms[(norm_steps >= low) & (norm_steps <= high)]
        stretches.append((low, high, index - start,
                          within if len(within) else [np.nan]))
      start = None
  return stretches


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--shared', type=pathlib.Path, default=None,
                      help='the first runs\' directory (../shared/learning)')
  args = parser.parse_args(argv)
  summary()
  test_table()
  train_table()
  seed_claims()
  prefill_claims()
  world_model_claims()
  walker_claims()
  ts200_claims()
  batch32_claims()
  paper_status(attempt=LOST_6FAE87F)
  paper_status(LOST_6FAE87F, attempt=LOST_ADDEAE0)
  paper_status(LOST_09FA511, attempt=LOST_514F07B)
  paper_status(LOST_514F07B, attempt=LOST_D5D4941)
  paper_status(LOST_D5D4941)
  paper_status(LOST_ADDEAE0)
  paper_status(PAPER / 'attempt-74bbde1' / 'dmc_cartpole_balance' / '0')
  if args.shared:
    shared_claims(args.shared)


if __name__ == '__main__':
  main()
