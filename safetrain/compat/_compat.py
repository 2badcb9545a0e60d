"""Makes tf_slim 1.1.0, the last release, work on current TensorFlow.

tf_slim reaches into TensorFlow's private modules (``tensorflow.python.*``)
for names that later TensorFlow releases moved elsewhere. Each line below puts
one moved name back where tf_slim looks for it, and only when it is missing,
so on a TensorFlow that still has the name nothing changes. A restored name
changes no behaviour: it is the very object TensorFlow now keeps under its
new address. Two things here do change behaviour, on purpose: Supervisor
threads run in the graph that made them (``_run_looper_threads_in_their_graph``)
and tf_slim's own bugs are fixed (``_slim_fixes``).

``import safetrain`` calls ``apply_when_tf_slim_loads()``: ``apply()`` then
runs once, right after tf_slim itself is imported, or at once if it already
is; importing safetrain alone loads neither tf_slim nor TensorFlow.
"""

import importlib
import sys
import types

from safetrain.compat import _on_import

__all__ = ("apply", "apply_when_tf_slim_loads")

TF_SLIM = "tf_slim"

_applied = False


def _module(name: str):
  try:
    return importlib.import_module(name)
  except ImportError:
    return None


def _restore(module_name: str, attr: str, new_module_name: str, new_attr: str):
  """Sets ``module_name.attr`` to ``new_module_name.new_attr`` if missing."""
  module = _module(module_name)
  new_module = _module(new_module_name)
  if module is None or new_module is None or hasattr(module, attr):
    return
  setattr(module, attr, getattr(new_module, new_attr))


def _alias_tf_keras_legacy_layers():
  """TF 2.15+ loads tf.compat.v1.layers from ``tf_keras.legacy_tf_layers``.

  tf_keras keeps that package at ``tf_keras.src.legacy_tf_layers`` and has no
  module at the old address, so ``slim.batch_norm`` fails with
  ``No module named 'tf_keras.legacy_tf_layers'``. Register the real package
  under the name TensorFlow's lazy loaders import.
  """
  if "tf_keras.legacy_tf_layers" in sys.modules:
    return
  try:
    importlib.import_module("tf_keras.legacy_tf_layers")
    return
  except ImportError:
    pass
  package = _module("tf_keras.src.legacy_tf_layers")
  if not isinstance(package, types.ModuleType):
    return  # tf_keras is not installed: nothing to alias.
  sys.modules["tf_keras.legacy_tf_layers"] = package
  for sub in ("base", "convolutional", "core", "normalization", "pooling",
              "variable_scope_shim", "migration_utils"):
    module = _module("tf_keras.src.legacy_tf_layers." + sub)
    if module is not None:
      sys.modules["tf_keras.legacy_tf_layers." + sub] = module


def _run_looper_threads_in_their_graph():
  """Supervisor's threads run in the graph of the thread that started them.

  Since TF 2.0, eager execution is on by default and a new thread starts
  eager, without the graph its creator had entered. A TF1 script that
  builds its model in ``with tf.Graph().as_default():`` and trains with
  ``slim.learning.train(..., save_summaries_secs=60)`` then dies: the
  Supervisor's step-counter thread reads ``global_step`` eagerly
  (``TypeError: <tf.Tensor 'global_step:0' ...> is out of scope``). Each
  ``coordinator.LooperThread`` now records the creator's graph and enters it
  when it runs, which is what those threads assume.
  """
  coordinator = _module("tensorflow.python.training.coordinator")
  ops = _module("tensorflow.python.framework.ops")
  context = _module("tensorflow.python.eager.context")
  if coordinator is None or ops is None or context is None:
    return
  looper = coordinator.LooperThread
  if getattr(looper.run, "_safetrain_in_graph", False):
    return
  original_init, original_run = looper.__init__, looper.run

  def __init__(self, *args, **kwargs):  # pylint: disable=invalid-name
    original_init(self, *args, **kwargs)
    self._safetrain_graph = (None if context.executing_eagerly()
                             else ops.get_default_graph())

  def run(self):
    graph = getattr(self, "_safetrain_graph", None)
    if graph is None:
      return original_run(self)
    with graph.as_default():
      return original_run(self)

  run._safetrain_in_graph = True  # pylint: disable=protected-access
  looper.__init__, looper.run = __init__, run


def apply_when_tf_slim_loads() -> None:
  """Calls ``apply()`` once tf_slim has loaded (now, if it has)."""
  _on_import.after_import(TF_SLIM, lambda unused_module: apply())


def apply() -> None:
  """Restores every moved name tf_slim 1.1.0 needs. Safe to call twice.

  Every name restored here is missing from TF 2.15 and 2.21 alike (checked
  by importing both), so all of them apply to every supported TensorFlow.
  """
  global _applied
  if _applied:
    return
  _alias_tf_keras_legacy_layers()
  tf = "tensorflow.python."
  # Tensor moved from framework/ops.py to framework/tensor.py.
  # (slim.batch_norm(updates_collections=None), gradient_multipliers)
  _restore(tf + "framework.ops", "Tensor", tf + "framework.tensor", "Tensor")
  # IndexedSlices moved from framework/ops.py to framework/indexed_slices.py.
  # (clip_gradient_norm, summarize_gradients, clip_gradient_norms)
  _restore(tf + "framework.ops", "IndexedSlices",
           tf + "framework.indexed_slices", "IndexedSlices")
  # control_flow_ops was split: cond, case, Assert and while_loop moved to
  # modules of their own. (streaming metrics, tfexample_decoder.Image and
  # BackupHandler, metric_learning losses)
  _restore(tf + "ops.control_flow_ops", "cond", tf + "ops.cond", "cond")
  _restore(tf + "ops.control_flow_ops", "case",
           tf + "ops.control_flow_case", "case")
  _restore(tf + "ops.control_flow_ops", "Assert",
           tf + "ops.control_flow_assert", "Assert")
  _restore(tf + "ops.control_flow_ops", "while_loop",
           tf + "ops.while_loop", "while_loop")
  # stack and unstack moved from array_ops.py to array_ops_stack.py.
  # (streaming_curve_points, recall_at_precision, tfexample_decoder)
  _restore(tf + "ops.array_ops", "stack", tf + "ops.array_ops_stack", "stack")
  _restore(tf + "ops.array_ops", "unstack",
           tf + "ops.array_ops_stack", "unstack")
  # variable_scope.variable was replaced by variable_v1.VariableV1, which
  # takes the same arguments. (slim.local_variable, slim.global_variable)
  _restore(tf + "ops.variable_scope", "variable",
           tf + "ops.variable_v1", "VariableV1")
  # Eager by default (TF 2.0): Supervisor threads start outside the graph.
  # (slim.learning.train with save_summaries_secs in a tf.Graph() block)
  _run_looper_threads_in_their_graph()
  # tf_slim's own bugs on current NumPy and TensorFlow (see _slim_fixes):
  # assign_from_checkpoint on partitioned variables, streaming_concat sizes.
  from safetrain.compat import (
    _slim_fixes,  # pylint: disable=g-import-not-at-top
  )
  _slim_fixes.install()
  _applied = True
