"""A drop-in for ``import tf_slim as slim`` that never drops regularization.

    import safetrain.slim as slim   # was: import tf_slim as slim

Every public name of tf_slim resolves here, unchanged, except these, which
are the safe versions with the same parameters:

* ``slim.learning.create_train_op`` and ``slim.training.create_train_op``
  check the loss (``safetrain.create_train_op_safe``);
* ``slim.losses.get_total_loss`` is ``safetrain.total_loss_from``;
* ``slim.learning.train`` and ``slim.training.train`` check the train op they
  are handed before the first step.

Every tf_slim module imports under ``safetrain.slim`` too (``from
safetrain.slim.nets import resnet_v1``): see ``_alias``. The replaced
functions are safetrain's however they are reached, also as
``safetrain.slim.losses.loss_ops.get_total_loss`` and
``safetrain.slim.training.training.train``.
"""

import importlib

# safetrain first: it makes tf_slim importable on current TensorFlow.
# isort: off
import safetrain
import tf_slim as _tf_slim
from safetrain.slim import _alias
# isort: on

_alias.install()
# pylint: disable=g-import-not-at-top,wrong-import-position
from safetrain.slim import learning
from safetrain.slim import losses
from safetrain.slim import training

__all__ = ("learning", "losses", "training")  # The rest is tf_slim's.

del safetrain


def __getattr__(name: str):
  try:
    return getattr(_tf_slim, name)
  except AttributeError:
    pass
  try:  # Subpackages tf_slim does not import itself, such as nets.
    return importlib.import_module("safetrain.slim." + name)
  except ImportError:
    raise AttributeError(
        f"module 'safetrain.slim' (tf_slim) has no attribute {name!r}"
    ) from None


def __dir__():
  return sorted(set(globals()) | set(dir(_tf_slim)))
