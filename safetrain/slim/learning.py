"""``tf_slim.learning`` with a checked ``create_train_op`` and ``train``."""

from typing import Any, Dict, Iterable, Optional

import tensorflow as tf
import tf_slim.learning as _learning

from safetrain import _train

__all__ = ("create_train_op", "train")

_USE_GLOBAL_STEP = 0  # tf_slim.learning._USE_GLOBAL_STEP.



def create_train_op(
    total_loss: tf.Tensor,
    optimizer: Any,
    global_step: Any = _USE_GLOBAL_STEP,
    update_ops: Optional[Iterable[tf.Operation]] = None,
    variables_to_train: Optional[Iterable[tf.Variable]] = None,
    clip_gradient_norm: float = 0,
    summarize_gradients: bool = False,
    gate_gradients: int = tf.compat.v1.train.Optimizer.GATE_OP,
    aggregation_method: Any = None,
    colocate_gradients_with_ops: bool = False,
    gradient_multipliers: Optional[Dict[Any, float]] = None,
    check_numerics: bool = True,
    *,
    on_missing: str = "raise",
) -> tf.Tensor:
  """``tf_slim.learning.create_train_op``, checked: see create_train_op_safe."""
  return _train.learning_train_op(
      "slim.learning.create_train_op", total_loss, optimizer,
      global_step=global_step, update_ops=update_ops,
      variables_to_train=variables_to_train,
      clip_gradient_norm=clip_gradient_norm,
      summarize_gradients=summarize_gradients,
      gate_gradients=gate_gradients, aggregation_method=aggregation_method,
      colocate_gradients_with_ops=colocate_gradients_with_ops,
      gradient_multipliers=gradient_multipliers,
      check_numerics=check_numerics, on_missing=on_missing)


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
