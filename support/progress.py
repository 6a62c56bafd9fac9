"""Where a run stands, and how it stops.

Status lines for long phases (collection and training), SIGINT and SIGTERM
turned into a stop between whole steps, and the check that stops a run whose
losses diverged before anything is checkpointed.
"""

import math
import os
import signal
import sys
import time


class Progress:
  """Wraps an agent for simulate() and prints where a long phase stands."""

  def __init__(
      self, agent, label, start, total, action_repeat, updates=lambda: 0,
      every=None, clock=time.time, out=None):
    self._agent = agent
    self._label = label
    self._frames = start
    self._total = total
    self._repeat = action_repeat
    self._updates = updates
    self._every = status_every() if every is None else every
    self._clock = clock
    self._out = out
    self._begin = None  # Rates are measured from the first report on.
    self._last = (clock(), start, updates())

  def __call__(self, obs, reset, state=None):
    result = self._agent(obs, reset, state)
    self._frames += len(reset) * self._repeat
    now = self._clock()
    if now - self._last[0] >= self._every:
      self._report(now)
    return result

  def _report(self, now):
    last_time, last_frames, last_updates = self._last
    updates = self._updates()
    duration = max(now - last_time, 1e-9)
    line = f'[{self._label}] frames {self._frames}/{self._total}'
    if self._begin is None:
      # The first interval began before a training phase or the start-up, so
      # its rate says nothing of the run's (it once read "0.0 fps | ETA
      # 1403:16:07"): no rate and no ETA until one has been measured.
      self._begin = (now, self._frames)
      line += ' | measuring the rate'
    else:
      fps = (self._frames - last_frames) / duration
      ups = (updates - last_updates) / duration
      frames = self._frames - self._begin[1]
      overall = frames / max(now - self._begin[0], 1e-9)
      remaining = max(self._total - self._frames, 0)
      eta = format_duration(remaining / overall) if overall > 0 else '?'
      line += f' | {fps:.1f} fps | {ups:.2f} updates/s | ETA {eta}'
    print(line, file=self._out or sys.stdout, flush=True)
    self._last = (now, self._frames, updates)


class PhaseProgress:
  """Status lines within a long training phase: updates, s/update, ETA."""

  def __init__(self, total, every=None, clock=time.time, out=None):
    self._total = total
    self._every = status_every() if every is None else every
    self._clock = clock
    self._out = out
    self._begin = self._last = clock()

  def __call__(self, done):
    now = self._clock()
    if now - self._last < self._every or done >= self._total:
      return
    per = (now - self._begin) / max(done, 1)
    print(
        f'[training] updates {done}/{self._total} | {per:.2f} s/update | '
        f'ETA {format_duration(per * (self._total - done))}',
        file=self._out or sys.stdout, flush=True)
    self._last = now


def status_every():
  # Seconds between status lines; DREAMER_STATUS_EVERY changes it (the
  # end-to-end tests use 1 s, since their phases may be shorter than 30 s).
  return float(os.environ.get('DREAMER_STATUS_EVERY', 30))


def format_duration(seconds):
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}:{minutes:02d}:{seconds:02d}'


class Phase:
  """One training phase: status lines, stops, and the check for divergence.

  The losses are checked at the end of the phase and before a stop between
  updates, so that a diverged agent is never checkpointed.
  """

  updates = 0  # All updates of this process, for the collection's status.
  # The updates left of the phase under way (0: none begun, or all done): a
  # checkpoint saved on a stop in the middle of one keeps the count, and the
  # resumed run enters that phase again for only those (rest()).
  left = 0
  # The updates left of the phase a restored checkpoint stopped inside, until
  # that phase begins again (0: none).
  resumed = 0

  @classmethod
  def rest(cls, total):
    """How many updates a phase of `total` does.

    All of them, but in the first phase after a resume from a checkpoint
    saved inside that phase: then the ones it had left, so that the resumed
    run does the updates of an uninterrupted one (also for the pretraining
    phase, which a resumed run would otherwise size as a later one). The
    count saved wins over a changed --train_steps for that one phase.
    """
    return cls.resumed or total

  @classmethod
  def unfinished(cls):
    """Whether a phase has begun and not done all its updates."""
    return cls.left > 0

  @classmethod
  def saved_left(cls):
    """What a checkpoint keeps of an unfinished phase: its updates left."""
    return cls.left if cls.unfinished() else cls.resumed

  def __init__(self, total, step):
    self._progress = PhaseProgress(total)
    self._total = total
    self._step = step
    self._losses = []
    Phase.left, Phase.resumed = total, 0

  def update(self, losses):
    # Losses are read once per phase, not per update: reading forces a sync.
    self._losses.append(losses)
    Phase.updates += 1
    Phase.left -= 1
    self._progress(len(self._losses))
    if len(self._losses) == self._total or stop_requested():
      check_finite(self._losses, self._step)
    poll()


def of_prefill(random_agent, step, config):
  """The status lines of dreamer.py's random prefill."""
  return Progress(
      random_agent, 'prefill', step, config.prefill, config.action_repeat)


def of_training(agent, step, config):
  """The status lines of dreamer.py's collection, with the update count."""
  return Progress(
      agent, 'train', step, config.steps, config.action_repeat,
      updates=lambda: Phase.updates)


def check_finite(losses, step):
  for name, value in (item for l in losses for item in l.items()):
    if not math.isfinite(float(value)):
      raise NonFiniteLoss(
          f'The {name} loss became {float(value)} at step {step}. The run '
          'stopped without saving, so the last checkpoint is the last good '
          'one. Lower the learning rates or check the data.')


class NonFiniteLoss(Exception):
  pass


class Interrupted(Exception):
  """Raised between whole steps after SIGINT or SIGTERM."""

  def __init__(self, signum):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
  """Turns SIGINT and SIGTERM into a flag that loops check between steps.

  A step that is under way (an environment step, a train step, a save) is
  never cut in half; a second signal stops at once.
  """

  def __init__(self, signums=(signal.SIGINT, signal.SIGTERM)):
    self.signum = None
    for signum in signums:
      signal.signal(signum, self._handle)

  def _handle(self, signum, frame):
    if self.signum is not None:
      raise KeyboardInterrupt(f'Second {signal.Signals(signum).name}.')
    self.signum = signum
    name = signal.Signals(signum).name
    print(f'Received {name}: stopping after the current step.', flush=True)

  def __call__(self):
    if self.signum is not None:
      raise Interrupted(self.signum)


# The stop handler of the run under way in this process (one at a time:
# signals are per process), set by install() and removed by uninstall().
_STOP = None
_AT_STOP = []
_PREVIOUS = {}


def install(*at_stop_fns):
  """Handles SIGINT and SIGTERM from now on; poll() then stops the loops.

  The functions are run on such a stop, as are those given to at_stop(). A
  second install() (a new run in the same process) starts afresh.
  """
  global _STOP
  uninstall()
  _PREVIOUS.update({s: signal.getsignal(s) for s in _SIGNALS})
  _STOP = GracefulStop(_SIGNALS)
  _AT_STOP[:] = at_stop_fns
  Phase.left, Phase.resumed = 0, 0


def uninstall():
  """Restores the signal handlers from before install(); forgets the run."""
  global _STOP
  for signum, handler in _PREVIOUS.items():
    signal.signal(signum, handler)
  _PREVIOUS.clear()
  _STOP = None
  _AT_STOP.clear()


def poll():
  """Raises Interrupted once a signal arrived; called between whole steps."""
  if _STOP:
    _STOP()


def stop_requested():
  return bool(_STOP and _STOP.signum is not None)


def at_stop(fn):
  """Runs fn (e.g. a checkpoint save) when the run stops on a signal."""
  _AT_STOP.append(fn)


def stopped():
  """Runs what at_stop() registered; the caller then reports the stop."""
  while _AT_STOP:
    _AT_STOP.pop(0)()
