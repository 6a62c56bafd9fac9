"""Hardening of wrappers.Async's environment workers.

Workers are spawned (not forked), report a crash or a failed constructor
instead of hanging the trainer, ignore the terminal's Ctrl-C (the trainer
handles it and closes them), and exit when the trainer dies.
"""

import atexit
import multiprocessing
import os
import pickle
import signal
import threading

import cloudpickle


class WorkerError(RuntimeError):
  """An exception raised inside an Async worker; carries its traceback."""


def start(worker, ctor, strategy, close):
  """Starts `worker(ctor, conn, parent_pid)`; returns our end and the worker."""
  if strategy == 'thread':
    conn, worker_conn = multiprocessing.Pipe()
    process = threading.Thread(
        target=worker, args=(ctor, worker_conn, None), daemon=True)
    process.start()
    return conn, process
  # Spawn rather than fork: the parent usually runs TensorFlow threads, whose
  # locks a forked child would inherit in an arbitrary state.
  context = multiprocessing.get_context('spawn')
  conn, worker_conn = context.Pipe()
  # The ctor is usually a lambda or closure, which only cloudpickle handles.
  payload = cloudpickle.dumps(ctor)
  process = context.Process(
      target=worker, args=(payload, worker_conn, os.getpid()), daemon=True)
  process.start()
  # Only the worker may hold its end, so that it sees EOF once we are gone.
  worker_conn.close()
  # Close cleanly before multiprocessing's exit handler, registered earlier
  # and so run later, terminates the daemon.
  atexit.register(close)
  return conn, process


def send(conn, process, message):
  if process is None:
    raise RuntimeError('The environment has been closed.')
  try:
    conn.send(message)
  except (BrokenPipeError, ConnectionResetError) as e:
    if conn.poll():
      return  # Its last word, e.g. the exception that ended it, is waiting.
    raise WorkerError(_dead_message(process)) from e


def receive(conn, process):
  """The worker's next message; raises WorkerError if it died instead."""
  # Poll so that a worker that died without answering (e.g. a segfault in the
  # simulator) raises instead of hanging this process forever.
  while not conn.poll(0.1):
    if not process.is_alive():
      raise WorkerError(_dead_message(process))
  try:
    return conn.recv()
  except (EOFError, ConnectionResetError) as e:  # Gone while we asked.
    raise WorkerError(_dead_message(process)) from e


def stop(conn, process, close, message):
  """Asks the worker to close, waits for it, and ends it if it hangs."""
  atexit.unregister(close)
  try:
    conn.send(message)
  except (OSError, ValueError):
    pass  # The worker is already gone.
  process.join(5)
  if isinstance(process, multiprocessing.process.BaseProcess):
    if process.is_alive():
      process.terminate()
      process.join(5)
    process.close()
  conn.close()


def construct(ctor, parent_pid):
  """In the worker: builds the env (an error ends the worker, as before)."""
  if parent_pid is not None:
    # Ctrl-C in a terminal signals the whole process group; the parent
    # handles it and closes the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
  if isinstance(ctor, bytes):
    ctor = pickle.loads(ctor)
  return ctor()


def next_message(conn, parent_pid):
  """In the worker: the next request; (None, None) once the parent is gone."""
  try:
    while not conn.poll(0.5):
      # The pipe reports EOF when the parent dies, unless a grandchild kept a
      # copy of its end; the parent id check covers that case.
      if parent_pid is not None and os.getppid() != parent_pid:
        return None, None
    return conn.recv()
  except (EOFError, OSError):
    return None, None


def report(conn, message):
  """In the worker: sends its last message, unless the trainer is gone."""
  try:
    conn.send(message)
  except (OSError, ValueError):
    pass


def finish(env, conn):
  """In the worker: closes the env and the pipe, whatever happened."""
  if env is not None and hasattr(env, 'close'):
    try:
      env.close()
    except Exception:  # pylint: disable=broad-except
      pass
  conn.close()


def _dead_message(process):
  code = getattr(process, 'exitcode', None)
  return f'The environment worker has exited (exit code {code}).'
