"""``tf_slim.losses``, with safetrain's ``get_total_loss`` (see loss_ops)."""

import tf_slim.losses as _losses

from safetrain.slim.losses import loss_ops
from safetrain.slim.losses.loss_ops import DuplicateLossWarning
from safetrain.slim.losses.loss_ops import get_total_loss

__all__ = ("DuplicateLossWarning", "get_total_loss", "loss_ops")


def __getattr__(name: str):
  return getattr(_losses, name)


def __dir__():
  return sorted(set(globals()) | set(dir(_losses)))
