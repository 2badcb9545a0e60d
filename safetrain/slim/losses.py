"""``tf_slim.losses`` whose ``get_total_loss`` never drops or doubles terms."""

import tensorflow as tf
import tf_slim.losses as _losses

from safetrain import _train

__all__ = ("get_total_loss",)


def get_total_loss(add_regularization_losses: bool = True,
                   name: str = "total_loss") -> tf.Tensor:
  """``tf_slim.losses.get_total_loss``, built by ``total_loss_from``.

  With ``add_regularization_losses=True`` (the default) it is
  ``safetrain.total_loss_from(None, name=name)``: each collected loss once,
  lazy regularization of partitioned variables included. With False it sums
  the ``LOSSES`` collection only, as slim does; a checked
  ``create_train_op`` will then say what that leaves out.
  """
  if add_regularization_losses:
    return _train.total_loss_from(None, name=name)
  return tf.add_n(_losses.get_losses(), name=name)


def __getattr__(name: str):
  return getattr(_losses, name)


def __dir__():
  return sorted(set(globals()) | set(dir(_losses)))
