"""``tf_slim.learning`` with a checked ``create_train_op`` and ``train``."""

from typing import Any, Callable, Dict, Iterable, Optional

import tensorflow as tf
import tf_slim.learning as _learning

from safetrain.tf1 import _train

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


_USE_DEFAULT = _learning._USE_DEFAULT  # pylint: disable=protected-access


def train(
    train_op: tf.Tensor,
    logdir: Optional[str],
    train_step_fn: Callable = _learning.train_step,
    train_step_kwargs: Any = _USE_DEFAULT,
    log_every_n_steps: int = 1,
    graph: Optional[tf.Graph] = None,
    master: str = "",
    is_chief: bool = True,
    global_step: Any = None,
    number_of_steps: Optional[int] = None,
    init_op: Any = _USE_DEFAULT,
    init_feed_dict: Any = None,
    local_init_op: Any = _USE_DEFAULT,
    init_fn: Optional[Callable] = None,
    ready_op: Any = _USE_DEFAULT,
    summary_op: Any = _USE_DEFAULT,
    save_summaries_secs: float = 600,
    summary_writer: Any = _USE_DEFAULT,
    startup_delay_steps: int = 0,
    saver: Any = None,
    save_interval_secs: float = 600,
    sync_optimizer: Any = None,
    session_config: Any = None,
    session_wrapper: Optional[Callable] = None,
    trace_every_n_steps: Optional[int] = None,
    ignore_live_threads: bool = False,
    *,
    on_missing: str = "raise",
) -> Any:
  """``tf_slim.learning.train``, after checking ``train_op``'s loss.

  Takes slim's parameters, in slim's order, with slim's defaults. Before the
  first step it finds the losses ``train_op`` minimizes and raises the
  verdict's ``RegularizationError`` if they leave out regularization of the
  variables it updates, or count it twice or too weakly
  (``on_missing="warn"`` warns instead).
  """
  _train.check_train_op(train_op, on_missing, "slim.learning.train")
  return _learning.train(
      train_op, logdir, train_step_fn=train_step_fn,
      train_step_kwargs=train_step_kwargs,
      log_every_n_steps=log_every_n_steps, graph=graph, master=master,
      is_chief=is_chief, global_step=global_step,
      number_of_steps=number_of_steps, init_op=init_op,
      init_feed_dict=init_feed_dict, local_init_op=local_init_op,
      init_fn=init_fn, ready_op=ready_op, summary_op=summary_op,
      save_summaries_secs=save_summaries_secs, summary_writer=summary_writer,
      startup_delay_steps=startup_delay_steps, saver=saver,
      save_interval_secs=save_interval_secs, sync_optimizer=sync_optimizer,
      session_config=session_config, session_wrapper=session_wrapper,
      trace_every_n_steps=trace_every_n_steps,
      ignore_live_threads=ignore_live_threads)


def __getattr__(name: str):
  return getattr(_learning, name)


def __dir__():
  return sorted(set(globals()) | set(dir(_learning)))
