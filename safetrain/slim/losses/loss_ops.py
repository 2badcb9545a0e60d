"""``tf_slim.losses.loss_ops`` whose ``get_total_loss`` never drops a term.

A deliberate difference from tf_slim: a loss listed twice in the ``LOSSES``
or ``REGULARIZATION_LOSSES`` collection (added twice by mistake, say by
calling ``tf.compat.v1.losses.add_loss`` on a loss that ``tf.losses``
already collected) counts once here, where tf_slim sums it twice. Neither
number is changed silently: ``get_total_loss`` warns with
``DuplicateLossWarning``, naming each tensor listed more than once.
"""

import collections
from typing import List
import warnings

import tensorflow as tf
from tf_slim.losses import loss_ops as _loss_ops

from safetrain.tf1 import _train

__all__ = ("DuplicateLossWarning", "get_total_loss")

_DUPLICATE = (
    "[safetrain] slim.losses.get_total_loss: {names} {are} listed more than "
    "once in the {collection} collection; safetrain counts each loss once "
    "(tf_slim would add it {times}). If you meant to weight it, scale the "
    "loss instead: tf.compat.v1.losses.add_loss(2.0 * loss).")


class DuplicateLossWarning(UserWarning):
  """A loss is listed more than once in a collection; it counts once."""


def _warn_duplicates(collection: str) -> List[tf.Tensor]:
  """The collection's tensors, each once; warns naming the repeated ones."""
  tensors = tf.compat.v1.get_collection(collection)
  counts = collections.Counter(t.name for t in tensors)
  repeated = sorted(name for name, count in counts.items() if count > 1)
  if repeated:
    times = " and ".join(sorted({f"{counts[n]} times" for n in repeated}))
    warnings.warn(_DUPLICATE.format(
        names=", ".join(repr(n) for n in repeated),
        are="is" if len(repeated) == 1 else "are",
        collection=collection, times=times), DuplicateLossWarning,
                  stacklevel=3)
  seen = set()
  unique = []
  for tensor in tensors:
    if tensor.name not in seen:
      seen.add(tensor.name)
      unique.append(tensor)
  return unique


def get_total_loss(add_regularization_losses: bool = True,
                   name: str = "total_loss") -> tf.Tensor:
  """``tf_slim.losses.get_total_loss``, built by ``total_loss_from``.

  With ``add_regularization_losses=True`` (the default) it is
  ``safetrain.total_loss_from(None, name=name)``: each collected loss once,
  lazy regularization of partitioned variables included. With False it sums
  the ``LOSSES`` collection only, each loss once; a checked
  ``create_train_op`` will then say what that leaves out. Either way a loss
  listed twice in a collection warns (``DuplicateLossWarning``).
  """
  losses = _warn_duplicates(tf.compat.v1.GraphKeys.LOSSES)
  if add_regularization_losses:
    _warn_duplicates(tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES)
    return _train.total_loss_from(None, name=name)
  return tf.add_n(losses, name=name)


def __getattr__(name: str):
  return getattr(_loss_ops, name)


def __dir__():
  return sorted(set(globals()) | set(dir(_loss_ops)))
