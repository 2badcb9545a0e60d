"""``tf_slim.learning`` with a checked ``create_train_op`` and ``train``."""

from typing import Any

import tf_slim.learning as _learning

from safetrain import _train

__all__ = ("create_train_op", "train")

create_train_op = _train.create_train_op_safe


def train(train_op, logdir, *args, on_missing: str = "raise",
          **kwargs) -> Any:
  """``tf_slim.learning.train``, after checking ``train_op``'s loss.

  Takes the same arguments as slim's ``train``. Before the first step it
  finds the loss ``train_op`` minimizes and raises
  ``MissingRegularizationError`` if that loss leaves out regularization of
  the variables it updates (``on_missing="warn"`` warns instead).
  """
  _train.check_train_op(train_op, on_missing, "slim.learning.train")
  return _learning.train(train_op, logdir, *args, **kwargs)


def __getattr__(name: str):
  return getattr(_learning, name)


def __dir__():
  return sorted(set(globals()) | set(dir(_learning)))
