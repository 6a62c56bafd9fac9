"""The agent's scalar metrics, as dreamer.py logs them to metrics.jsonl."""

import tf_keras

NAMES = (
    'expl_amount', 'model_grad_norm', 'value_grad_norm', 'actor_grad_norm',
    'prior_ent', 'post_ent', 'image_loss', 'reward_loss', 'pcont_loss', 'div',
    'model_loss', 'value_loss', 'actor_loss', 'action_ent')


def create(config):
  # Created up front (not on first use, as the original's defaultdict did) so
  # that the checkpoint always holds them, and outside the strategy so that
  # the policy can update them too.
  names = [k for k in NAMES if config.pcont or k != 'pcont_loss']
  return {k: tf_keras.metrics.Mean(k) for k in names}


def logged(metrics):
  # The original's metrics were a defaultdict that created a metric on its
  # first update, so only those updated (and `expl_amount`, created up front)
  # were written; with --log_scalars False that is `expl_amount` alone.
  return [(k, m) for k, m in metrics.items()
          if k == 'expl_amount' or m.count.numpy() > 0]
