"""progress.py: status lines, stops on signals, the divergence check."""

import io
import os
import signal

import numpy as np
import pytest

from support import progress


class TestProgress:

  def test_prints_status_with_rates_and_eta(self):
    now = [0.0]
    out = io.StringIO()
    updates = [0]

    def agent(obs, reset, state):
      updates[0] += 2
      return np.zeros((len(reset), 1)), state

    status = progress.Progress(
        agent, 'train', 100, 1100, 2, updates=lambda: updates[0], every=30,
        clock=lambda: now[0], out=out)
    for _ in range(18):
      now[0] += 4.0
      status({}, np.zeros(1, bool))
    first, second = out.getvalue().strip().splitlines()
    # The first interval includes whatever came before (a training phase,
    # the start-up): no rate yet.
    assert first == '[train] frames 116/1100 | measuring the rate'
    # 32 s later: 16 frames and 16 updates; 968 frames to go at 0.5/s.
    assert second.startswith(
        '[train] frames 132/1100 | 0.5 fps | 0.50 updates/s')
    assert second.endswith('ETA 0:32:16')

  def test_first_report_after_a_long_phase_shows_no_rate(self):
    now = [0.0]
    out = io.StringIO()

    def agent(obs, reset, state):
      now[0] += 1400.0  # A first training phase inside the first call.
      return np.zeros((len(reset), 1)), state

    status = progress.Progress(
        agent, 'train', 5000, 10**6, 2, every=30, clock=lambda: now[0],
        out=out)
    status({}, np.zeros(1, bool))
    assert 'fps' not in out.getvalue() and 'ETA' not in out.getvalue()


class TestPhaseProgress:

  def test_prints_updates_rate_and_eta_at_most_every_interval(self):
    now = [0.0]
    out = io.StringIO()
    status = progress.PhaseProgress(
        100, every=30, clock=lambda: now[0], out=out)
    for done in range(1, 101):
      now[0] = 8.0 * done  # 8 s per update.
      status(done)
    lines = out.getvalue().splitlines()
    # One line per 30 s (every 4 updates), none for the finished phase.
    assert len(lines) == 24
    assert lines[0] == '[training] updates 4/100 | 8.00 s/update | ETA 0:12:48'
    assert lines[-1].startswith('[training] updates 96/100 ')

  def test_silent_in_a_short_phase(self):
    out = io.StringIO()
    status = progress.PhaseProgress(5, every=30, clock=lambda: 0.0, out=out)
    for done in range(1, 6):
      status(done)
    assert out.getvalue() == ''


class TestGracefulStop:

  @pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
  def test_signal_sets_flag_and_check_raises(self, signum):
    previous = signal.getsignal(signum)
    try:
      stop = progress.GracefulStop(signums=(signum,))
      stop()  # Nothing received yet.
      os.kill(os.getpid(), signum)
      with pytest.raises(progress.Interrupted) as info:
        stop()
      assert info.value.signum == signum
      # A second signal stops at once instead of waiting for the step.
      with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signum)
    finally:
      signal.signal(signum, previous)


class TestPhase:

  @pytest.fixture(autouse=True)
  def no_handler(self, monkeypatch):
    monkeypatch.setattr(progress, '_STOP', None)

  def test_counts_updates_and_checks_losses_at_the_end(self):
    before = progress.Phase.updates
    phase = progress.Phase(3, step=1000)
    phase.update({'model': 1.0})
    phase.update({'model': float('nan')})  # Not read before the end.
    assert progress.Phase.updates == before + 2
    with pytest.raises(progress.NonFiniteLoss, match='model loss became nan '
                       'at step 1000'):
      phase.update({'model': 2.0})

  def test_checks_losses_before_a_stop(self, monkeypatch):
    stop = progress.GracefulStop(signums=())
    monkeypatch.setattr(progress, '_STOP', stop)
    phase = progress.Phase(100, step=7)
    phase.update({'actor': float('inf')})
    stop.signum = signal.SIGTERM
    # Diverged: the run ends with the divergence error, not a stop that
    # would save the agent.
    with pytest.raises(progress.NonFiniteLoss):
      phase.update({'actor': 1.0})

  def test_stops_between_updates(self, monkeypatch):
    stop = progress.GracefulStop(signums=())
    monkeypatch.setattr(progress, '_STOP', stop)
    phase = progress.Phase(100, step=7)
    phase.update({'actor': 1.0})
    stop.signum = signal.SIGINT
    with pytest.raises(progress.Interrupted):
      phase.update({'actor': 1.0})


class TestAtStop:

  def test_runs_registered_functions_once_in_order(self, monkeypatch):
    calls = []
    monkeypatch.setattr(progress, '_AT_STOP', [])
    progress.at_stop(lambda: calls.append('save'))
    progress.at_stop(lambda: calls.append('flush'))
    progress.stopped()
    progress.stopped()
    assert calls == ['save', 'flush']


def test_uninstall_restores_the_signal_handlers():
  before = signal.getsignal(signal.SIGTERM)
  progress.install(lambda: None)
  try:
    assert signal.getsignal(signal.SIGTERM) != before
    progress.at_stop(lambda: None)
    progress.install()  # A second run in this process starts afresh.
    assert progress._AT_STOP == []
  finally:
    progress.uninstall()
  assert signal.getsignal(signal.SIGTERM) == before
  assert not progress.stop_requested()


def test_a_phase_is_unfinished_until_its_last_update(monkeypatch):
  monkeypatch.setattr(progress, 'poll', lambda: None)
  phase = progress.Phase(2, step=100)
  assert progress.Phase.unfinished()
  phase.update({'model': 1.0})
  assert progress.Phase.unfinished()  # A stop now would cut it short.
  phase.update({'model': 1.0})
  assert not progress.Phase.unfinished()


def test_a_phase_after_a_stop_inside_it_does_only_the_rest(monkeypatch):
  monkeypatch.setattr(progress, 'poll', lambda: None)
  # As checkpoint.load() leaves it for a checkpoint saved with 2 left.
  monkeypatch.setattr(progress.Phase, 'resumed', 2)
  assert progress.Phase.saved_left() == 2  # A save before the phase keeps it.
  total = progress.Phase.rest(5)
  assert total == 2
  phase = progress.Phase(total, step=100)
  assert progress.Phase.resumed == 0
  phase.update({'model': 1.0})
  # A stop now would save 1 left.
  assert progress.Phase.saved_left() == 1 and progress.Phase.unfinished()
  phase.update({'model': 1.0})
  assert progress.Phase.saved_left() == 0 and not progress.Phase.unfinished()
  assert progress.Phase.rest(5) == 5  # Later phases do all their updates.
