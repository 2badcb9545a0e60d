"""``tf_slim.training``, with the checked ``create_train_op`` and ``train``.

As in tf_slim, ``slim.training.X`` reaches ``tf_slim.training.training.X``
(tf_slim binds its ``training`` attribute to that module), and the package's
other module, ``evaluation``, imports as ``safetrain.slim.training.evaluation``.
"""

import importlib

from safetrain.slim.training import training
from safetrain.slim.training.training import create_train_op
from safetrain.slim.training.training import train

__all__ = ("create_train_op", "train", "training")

_training = importlib.import_module("tf_slim.training.training")
_package = importlib.import_module("tf_slim.training")


def __getattr__(name: str):
  try:
    return getattr(_training, name)
  except AttributeError:
    pass
  try:
    return getattr(_package, name)
  except AttributeError:
    raise AttributeError(
        f"module 'safetrain.slim.training' has no attribute {name!r}"
    ) from None


def __dir__():
  return sorted(set(globals()) | set(dir(_training)) | set(dir(_package)))
