"""The agent's checkpoints: TensorFlow checkpoints in <logdir>/checkpoints.

Written crash-safely (a failed or killed save leaves the previous ones listed
and intact), restored newest-first past damaged files, and refused with a
clear message when they do not fit the agent. tools.Module.save and
Dreamer.load, the original's entry points, call save() and load().
"""

import glob
import os
import pathlib
import shutil

import tensorflow as tf

import storage

MAX_TO_KEEP = 2


class CheckpointError(Exception):
  pass


def variables(agent):
  """Every variable the agent owns, by name.

  Networks, optimizer moments and loss scale, metric accumulators and the
  step; not the dataset iterator or the strategy.
  """
  parts = dict(
      step=agent._step, encode=agent._encode, dynamics=agent._dynamics,
      decode=agent._decode, reward=agent._reward, value=agent._value,
      actor=agent._actor, model_opt=agent._model_opt,
      value_opt=agent._value_opt, actor_opt=agent._actor_opt,
      metrics=dict(agent._metrics))
  if agent._c.pcont:
    parts['pcont'] = agent._pcont
  return tf.train.Checkpoint(**parts)


def manager(agent, directory):
  # A new manager reads the directory's list of checkpoints, so it can be
  # made per call: it keeps the newest MAX_TO_KEEP across restarts.
  return tf.train.CheckpointManager(
      variables(agent), str(directory), max_to_keep=MAX_TO_KEEP)


def exists(directory):
  """Whether the directory lists a checkpoint (readable or not)."""
  state = tf.train.get_checkpoint_state(str(directory))
  return bool(state and state.all_model_checkpoint_paths)


def load(agent, filename):
  """Restores a checkpoint prefix, or a directory's newest readable one.

  The step is kept: it comes from the stored episodes (SPEC), which may hold
  more than the checkpoint saw if the run was killed between saves. Returns
  the path restored.
  """
  step = agent._step.numpy()
  if pathlib.Path(filename).is_dir():
    path = restore_latest(manager(agent, filename))
  else:
    path = str(filename)
    read(variables(agent), path)
  agent._step.assign(step)
  for optimizer in (agent._model_opt, agent._value_opt, agent._actor_opt):
    optimizer.reset_learning_rate()
  if path:
    print(f'Restored checkpoint {path}.')
  return path


def read(checkpoint, path):
  status = checkpoint.read(path)
  # Only the manager's save counter is not part of the agent.
  status.assert_existing_objects_matched().expect_partial()


def save(manager, step):
  path = os.path.join(manager.directory, f'ckpt-{step}')
  if path in manager.checkpoints:
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
  for path in glob.glob(glob.escape(prefix) + '_temp*'):
    shutil.rmtree(path, ignore_errors=True)
  for path in glob.glob(glob.escape(prefix) + '.*'):
    os.remove(path)


def remove_partial_checkpoints(directory):
  """Removes what saves that were killed left in the checkpoints directory."""
  removed = []
  for path in pathlib.Path(directory).glob('*_temp*'):
    shutil.rmtree(path, ignore_errors=True)
    removed.append(path)
  return removed


def restore_latest(manager):
  """Restores the newest readable checkpoint; returns its path or None."""
  for path in reversed(manager.checkpoints):
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
  if manager.checkpoints:
    # Starting afresh would silently throw the training away.
    raise CheckpointError(
        f'None of the checkpoints in {manager.directory} could be read. To '
        'train a new agent on the stored episodes, move that directory away.')
  return None
