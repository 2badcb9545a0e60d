"""Argument checks shared by the public functions.

Each check turns a misuse into one of our exceptions with a one-line message
that names the argument and the fix, before TensorFlow can fail somewhere
deep inside with a traceback that says neither.
"""

from typing import Iterable, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from safetrain import _errors
from safetrain.graph import _graph
from safetrain.rule import _on_missing

__all__ = (
    "ON_MISSING_CHOICES",
    "graph_loss",
    "graph_losses",
    "on_missing",
    "optimizer",
    "require_graph_mode",
    "trained_variables",
)

ON_MISSING_CHOICES = _on_missing.CHOICES

_EAGER_FIX = (
    "{caller} builds TensorFlow 1 style graphs and does not work under eager "
    "execution. Call tf.compat.v1.disable_eager_execution() at the start of "
    "your program, or build the model inside `with tf.Graph().as_default():`.")


def require_graph_mode(caller: str) -> None:
  if tf.executing_eagerly():
    raise _errors.EagerModeError(_EAGER_FIX.format(caller=caller))


def _describe(value) -> str:
  if isinstance(value, np.ndarray):
    return f"a numpy array of shape {value.shape}"
  text = repr(value)
  if len(text) > 60:
    text = text[:57] + "..."
  return f"{type(value).__name__} {text}"


def graph_loss(value, caller: str, argument: str = "total_loss"):
  """Returns ``value`` as a float scalar graph tensor, or raises."""
  if _graph.is_lazy_tensor(value):
    value = value._master_tensor  # pylint: disable=protected-access
  if isinstance(value, tf.Variable):
    raise _errors.InvalidArgumentTypeError(
        f"{caller}: {argument} is the variable {value.name!r}, not a loss. "
        f"Pass the loss tensor computed from it, e.g. "
        f"{argument}=tf.reduce_mean(...).")
  if not isinstance(value, tf.Tensor):
    raise _errors.InvalidArgumentTypeError(
        f"{caller}: {argument} must be a graph tf.Tensor, got "
        f"{_describe(value)}. Build the loss with TensorFlow ops, e.g. "
        f"{argument} = tf.compat.v1.losses.sparse_softmax_cross_entropy("
        "labels, logits).")
  if not hasattr(value, "graph") or tf.executing_eagerly() or _is_eager(value):
    raise _errors.EagerModeError(_EAGER_FIX.format(caller=caller))
  dtype = value.dtype.base_dtype
  if not dtype.is_floating:
    raise _errors.InvalidArgumentTypeError(
        f"{caller}: {argument} {value.name!r} has dtype {dtype.name}; "
        f"gradients need a floating-point loss. Cast it: "
        f"{argument} = tf.cast({argument}, tf.float32).")
  ndims = value.shape.ndims
  if ndims is not None and ndims != 0:
    raise _errors.InvalidArgumentError(
        f"{caller}: {argument} {value.name!r} has shape {value.shape}, but "
        f"a loss must be a scalar. Reduce it first: "
        f"{argument} = tf.reduce_mean({argument}).")
  return value


def _is_eager(value) -> bool:
  try:
    _ = value.graph
  except AttributeError:
    return True
  return False


def graph_losses(values: Sequence, caller: str, argument: str = "losses"):
  """Checks a list of losses: each a scalar float tensor, all one graph."""
  losses = [graph_loss(v, caller, f"{argument}[{i}]")
            for i, v in enumerate(values)]
  same_graph(losses, caller, argument)
  return losses


def same_graph(tensors: Iterable, caller: str, argument: str) -> None:
  tensors = list(tensors)
  if not tensors:
    return
  first = tensors[0]
  for tensor in tensors[1:]:
    if tensor.graph is not first.graph:
      raise _errors.InvalidArgumentError(
          f"{caller}: {argument} mixes tensors from two graphs "
          f"({first.name!r} and {tensor.name!r}). Build every loss in one "
          "graph, under one `with graph.as_default():`.")


def trained_variables(variables: Optional[Iterable], graph, caller: str
                      ) -> List[tf.Variable]:
  """``variables_to_train`` or the graph's trainable variables; not empty."""
  if variables is None:
    variables = graph.get_collection(
        tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)
  else:
    if isinstance(variables, (tf.Variable, tf.Tensor)):
      variables = [variables]
    variables = list(variables)
    for variable in variables:
      if not isinstance(variable, tf.Variable) and not hasattr(
          variable, "_get_variable_list"):
        raise _errors.InvalidArgumentTypeError(
            f"{caller}: variables_to_train must hold tf.Variable objects, "
            f"got {_describe(variable)}. Pass e.g. "
            "variables_to_train=tf.compat.v1.trainable_variables('logits').")
      if getattr(variable, "graph", graph) is not graph:
        raise _errors.InvalidArgumentError(
            f"{caller}: variable {variable.name!r} in variables_to_train "
            "belongs to another graph than the loss. Create the variables "
            "and the loss under one `with graph.as_default():`.")
  if not variables:
    raise _errors.InvalidArgumentError(
        f"{caller}: there are no variables to train: the graph has no "
        "trainable variables and variables_to_train is empty. Build the "
        "model before the train op, in the same graph.")
  return list(variables)


def optimizer(value, caller: str):
  if value is None:
    raise _errors.InvalidArgumentTypeError(
        f"{caller}: optimizer is None. Pass a TF1 optimizer, e.g. "
        "optimizer=tf.compat.v1.train.MomentumOptimizer(0.01, 0.9).")
  if not hasattr(value, "compute_gradients") or not hasattr(
      value, "apply_gradients"):
    raise _errors.InvalidArgumentTypeError(
        f"{caller}: optimizer must be a tf.compat.v1.train.Optimizer, got "
        f"{_describe(value)}. Keras optimizers do not build graph-mode "
        "train ops; use e.g. tf.compat.v1.train.AdamOptimizer(1e-3).")
  return value


on_missing = _on_missing.check
