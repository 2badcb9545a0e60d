"""``tf_slim.training.training``, with checked create_train_op and train."""

from typing import Any, Callable, Iterable, Optional

import tensorflow as tf
from tf_slim.training import training as _training

from safetrain.rule import _args
from safetrain.tf1 import _train

__all__ = ("create_train_op", "train")

_USE_GLOBAL_STEP = 0  # tf_slim.training.training._USE_GLOBAL_STEP.


def create_train_op(
    total_loss: tf.Tensor,
    optimizer: Any,
    global_step: Any = _USE_GLOBAL_STEP,
    update_ops: Optional[Iterable[tf.Operation]] = None,
    variables_to_train: Optional[Iterable[tf.Variable]] = None,
    transform_grads_fn: Optional[Callable] = None,
    summarize_gradients: bool = False,
    gate_gradients: int = tf.compat.v1.train.Optimizer.GATE_OP,
    aggregation_method: Any = None,
    colocate_gradients_with_ops: bool = False,
    check_numerics: bool = True,
    *,
    on_missing: str = "raise",
) -> tf.Tensor:
  """``tf_slim.training.create_train_op``, checked like create_train_op_safe."""
  caller = "slim.training.create_train_op"
  _args.optimizer(optimizer, caller)
  total_loss = _train.enforce(total_loss, variables_to_train, on_missing,
                              caller)
  return _training.create_train_op(
      total_loss, optimizer, global_step=global_step, update_ops=update_ops,
      variables_to_train=variables_to_train,
      transform_grads_fn=transform_grads_fn,
      summarize_gradients=summarize_gradients,
      gate_gradients=gate_gradients, aggregation_method=aggregation_method,
      colocate_gradients_with_ops=colocate_gradients_with_ops,
      check_numerics=check_numerics)


def train(
    train_op: tf.Tensor,
    logdir: Optional[str],
    master: str = "",
    is_chief: bool = True,
    scaffold: Any = None,
    hooks: Any = None,
    chief_only_hooks: Any = None,
    save_checkpoint_secs: Optional[float] = 600,
    save_summaries_steps: Optional[int] = 100,
    config: Any = None,
    max_wait_secs: float = 7200,
    run_metadata: Any = None,
    *,
    on_missing: str = "raise",
) -> Any:
  """``tf_slim.training.train``, after checking ``train_op``'s loss."""
  _train.check_train_op(train_op, on_missing, "slim.training.train")
  return _training.train(
      train_op, logdir, master=master, is_chief=is_chief, scaffold=scaffold,
      hooks=hooks, chief_only_hooks=chief_only_hooks,
      save_checkpoint_secs=save_checkpoint_secs,
      save_summaries_steps=save_summaries_steps, config=config,
      max_wait_secs=max_wait_secs, run_metadata=run_metadata)


def __getattr__(name: str):
  return getattr(_training, name)


def __dir__():
  return sorted(set(globals()) | set(dir(_training)))
