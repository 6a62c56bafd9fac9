"""The agent's checkpoints: TensorFlow checkpoints in <logdir>/checkpoints.

Written crash-safely (a failed or killed save leaves the previous ones listed
and intact), restored newest-first past damaged files, and refused with a
clear message when they do not fit the agent. tools.Module.save and
Dreamer.load, the original's entry points, call save() and load().
"""

import glob
import os
import pathlib

import tensorflow as tf

from support import progress
from support import storage

MAX_TO_KEEP = 2


class CheckpointError(Exception):
  pass


def variables(agent):
  """Every variable the agent owns, by name.

  Networks, optimizer moments and loss scale, metric accumulators, the step
  and the training schedule; not the dataset iterator or the strategy.
  """
  parts = dict(
      step=agent._step, encode=agent._encode, dynamics=agent._dynamics,
      decode=agent._decode, reward=agent._reward, value=agent._value,
      actor=agent._actor, model_opt=agent._model_opt,
      value_opt=agent._value_opt, actor_opt=agent._actor_opt,
      metrics=dict(agent._metrics), schedule=schedule(agent),
      phase_left=phase_left())
  if agent._c.pcont:
    parts['pcont'] = agent._pcont
  return tf.train.Checkpoint(**parts)


def schedule(agent):
  """The step of the agent's last training phase (-1: none yet).

  Saved so that a resumed run redoes the training phases that fell between
  its last checkpoint and the kill: the step comes back from the episodes on
  disk, and tools.Every, restored to this step, then catches up one phase
  per agent call before collecting again, as an uninterrupted run would have
  trained. Made per call, holding the value of the moment.
  """
  last = getattr(agent._should_train, '_last', None)
  if last is not None and progress.Phase.unfinished():
    # Saved on a stop inside a phase: the resumed run enters that phase
    # again and does the updates it had left (phase_left()).
    last -= agent._should_train._every
  return tf.Variable(-1 if last is None else last, dtype=tf.int64)


def phase_left():
  """The updates left of the phase a stop cut short (0: none; Phase.rest)."""
  return tf.Variable(progress.Phase.saved_left(), dtype=tf.int64)


def manager(agent, directory):
  # A new manager reads the directory's list of checkpoints, so it can be
  # made per call: it keeps the newest MAX_TO_KEEP across restarts.
  return tf.train.CheckpointManager(
      variables(agent), str(directory), max_to_keep=MAX_TO_KEEP)


def exists(directory):
  """Whether the directory lists a checkpoint (readable or not)."""
  return bool(listed_in(directory))


def listed_in(directory):
  """The prefixes the directory's `checkpoint` file lists, the newest last."""
  state = tf.train.get_checkpoint_state(str(directory))
  if not state:
    return []
  newest = state.model_checkpoint_path
  older = [p for p in state.all_model_checkpoint_paths if p != newest]
  return older + ([newest] if newest else [])


def load(agent, filename):
  """Restores a checkpoint prefix, or a directory's newest readable one.

  The step is kept: it comes from the stored episodes (SPEC), which may hold
  more than the checkpoint saw if the run was killed between saves. The
  training schedule is restored, so the phases of those extra steps are done
  again (see schedule()). Returns the path restored.
  """
  step = agent._step.numpy()
  if pathlib.Path(filename).is_dir():
    checkpoints = manager(agent, filename)
    restored = checkpoints.checkpoint
    last, left = restored.schedule, restored.phase_left  # read() untracks.
    path = restore_latest(checkpoints)
  else:
    path, restored = str(filename), variables(agent)
    last, left = restored.schedule, restored.phase_left
    read(restored, path)
  agent._step.assign(step)
  for optimizer in (agent._model_opt, agent._value_opt, agent._actor_opt):
    optimizer.reset_learning_rate()
  if path:
    print(f'Restored checkpoint {path}.')
    restore_schedule(agent, last, step, left)
  return path


def restore_schedule(agent, variable, step, left):
  last, left = int(variable.numpy()), int(left.numpy())
  progress.Phase.resumed = 0
  # -1 is no phase yet, unless saved inside the first phase (last < 0 then).
  if (last < 0 and not left) or not hasattr(agent._should_train, '_last'):
    return  # A checkpoint from before the schedule was kept, or no training.
  agent._should_train._last = last
  every = agent._should_train._every
  behind = max(0, (step - last) // every) - (1 if left else 0)
  if left:
    progress.Phase.resumed = left
    print(f'It was saved inside the training phase at {last + every} '
          f'frames, with {left} of its updates left: when the run is at '
          'those frames again, that phase does only those.')
  if behind > 0:
    phases = 'phase' if behind == 1 else 'phases'
    print(f'Redoing the {behind} training {phases} since that checkpoint, '
          'one at each of the next steps, as an uninterrupted run would '
          'have done them.')


def read(checkpoint, path):
  # Written before the schedule (or the partial phase) was saved: restore
  # the rest, and leave it at its value for none (a resume then trains from
  # its own step, or does every update of its first phase, as before).
  for name, none in (('schedule', -1), ('phase_left', 0)):
    if hasattr(checkpoint, name) and not _holds(path, f'{name}/'):
      getattr(checkpoint, name).assign(none)
      delattr(checkpoint, name)
  status = checkpoint.read(path)
  # Only the manager's save counter is not part of the agent.
  status.assert_existing_objects_matched().expect_partial()


def _holds(path, prefix):
  return any(name.startswith(prefix)
             for name, _ in tf.train.list_variables(path))


def save(manager, step):
  path = os.path.join(manager.directory, f'ckpt-{step}')
  if path in listed(manager):
    # Saved at this step already (a signal right after a save or restore);
    # rewriting it in place would risk the one good copy for nothing.
    return path
  try:
    path = manager.save(checkpoint_number=step)
  except (OSError, tf.errors.OpError) as e:
    remove_partial_checkpoint(path)
    message = getattr(e, 'message', None) or str(e)
    raise storage.WriteError(
        getattr(e, 'errno', None),
        f'Could not write the checkpoint {path}: {message.strip()}. No partial '
        'file was left behind and the previous checkpoints are intact.') from e
  print(f'Saved checkpoint {path}.')
  return path


def remove_partial_checkpoint(prefix):
  # TensorFlow writes a checkpoint into `<prefix>_temp/`, then moves it to
  # `<prefix>.index` and `<prefix>.data-*`; only then does the `checkpoint`
  # file name it. A failed or killed save leaves the pieces, never listed.
  directory, name = os.path.split(prefix)
  for suffix in ('_temp*', '.*'):
    storage.remove_matching(directory, glob.escape(name) + suffix)


def listed(manager):
  """The manager's checkpoints, or those its `checkpoint` file lists.

  TensorFlow's manager treats entries without timestamps (a file written by
  hand or by older tools) as kept for good and lists none of them; a resume
  would then start from untrained weights, and evaluate.py evaluate them.
  """
  return manager.checkpoints or listed_in(manager.directory)


def restore_latest(manager):
  """Restores the newest readable checkpoint; returns its path or None."""
  paths = listed(manager)
  for path in reversed(paths):
    try:
      read(manager.checkpoint, path)
      return path
    except (tf.errors.OpError, IndexError) as e:
      # Only a lost or damaged file (not a kill, which leaves the previous
      # checkpoint listed) gets here; the older one is the next best. A
      # truncated file raises IndexError ("Read less bytes than requested").
      message = getattr(e, 'message', None) or str(e)
      print(f'Could not read the checkpoint {path}: {message}. Trying an '
            'older one.')
    except (AssertionError, ValueError) as e:
      raise CheckpointError(
          f'The checkpoint {path} does not fit this agent ({e}). Were model '
          'flags changed? Resume with the flags of the run, or use a new '
          '--logdir.') from e
  if paths:
    # Starting afresh would silently throw the training away.
    raise CheckpointError(
        f'None of the checkpoints in {manager.directory} could be read. To '
        'train a new agent on the stored episodes, move that directory away.')
  return None
