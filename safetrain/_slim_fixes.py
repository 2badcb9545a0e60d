"""Fixes for bugs in tf_slim 1.1.0's own code on current TensorFlow and NumPy.

``_compat`` restores names TensorFlow moved; the functions here replace
tf_slim functions whose bodies are wrong on current releases. Each is
written here from the documented behaviour (tf_slim's code is not copied)
and installed by ``install()``, called from ``_compat.apply()``.
"""

import importlib
import sys

import tensorflow as tf

__all__ = ("install",)


def _sliced_index(variable):
  """The NumPy index of a partition in its full variable: a tuple of slices.

  tf_slim 1.1.0 builds a list of slices, which NumPy 1.23 and later refuse
  (``IndexError: only integers, slices ... are valid indices``).
  """
  info = variable._save_slice_info  # pylint: disable=protected-access
  return tuple(slice(offset, offset + size)
               for offset, size in zip(info.var_offset, info.var_shape,
                                      strict=True))


def _grouped(var_list):
  """``{checkpoint name: [variables]}``, as tf_slim groups ``var_list``."""
  variables = importlib.import_module("tf_slim.ops.variables")
  if isinstance(var_list, dict):
    return {name: list(value) if isinstance(value, (list, tuple)) else [value]
            for name, value in var_list.items()}
  grouped = {}
  for var in var_list:
    grouped.setdefault(variables.get_variable_full_name(var), []).append(var)
  return grouped


def _make_assign_from_checkpoint(original):
  def assign_from_checkpoint(model_path, var_list, ignore_missing_vars=False):
    """tf_slim's, with partitioned variables indexed by a tuple of slices."""
    whole, parts = {}, {}
    for name, group in _grouped(var_list).items():
      is_sliced = any(v._save_slice_info for v in group)  # pylint: disable=protected-access
      (parts if is_sliced else whole)[name] = group
    assign_op, feed_dict = original(model_path, whole, ignore_missing_vars)
    if not parts:
      return assign_op, feed_dict
    reader = tf.compat.v1.train.NewCheckpointReader(model_path)
    assigns = [assign_op]
    for name, group in parts.items():
      if not reader.has_tensor(name):
        message = f"Checkpoint is missing variable [{name}]"
        if not ignore_missing_vars:
          raise ValueError(message)
        tf.compat.v1.logging.warning(message)
        continue
      value = reader.get_tensor(name)
      for var in group:
        placeholder = tf.compat.v1.placeholder(
            var.dtype.base_dtype, var.get_shape(),
            name="placeholder/" + var.op.name)
        assigns.append(var.assign(placeholder))
        feed_dict[placeholder] = value[_sliced_index(var)]
    return tf.group(*assigns), feed_dict

  assign_from_checkpoint.__doc__ = original.__doc__
  assign_from_checkpoint.__wrapped__ = original
  return assign_from_checkpoint


def _next_array_size(required_size, growth_factor=1.5):
  """The next capacity of streaming_concat's array, computed in float64.

  tf_slim 1.1.0 takes the logarithms in float32, which rounds
  ``ceil(log(n) / log(g))`` down for large ``n`` and returns a size smaller
  than required (7371555 for 7371556).
  """
  size = tf.cast(required_size, tf.float64)
  growth = tf.cast(growth_factor, tf.float64)
  exponent = tf.math.ceil(tf.math.log(size) / tf.math.log(growth))
  return tf.cast(tf.math.ceil(growth ** exponent), tf.int32)


def _replace(module_names, attr, replacement):
  for module_name in module_names:
    module = sys.modules.get(module_name) or importlib.import_module(
        module_name)
    if getattr(module, attr, None) is not None:
      setattr(module, attr, replacement)


def install() -> None:
  """Replaces each buggy tf_slim function where tf_slim exposes it."""
  variables = importlib.import_module("tf_slim.ops.variables")
  if not hasattr(variables.assign_from_checkpoint, "__wrapped__"):
    fixed = _make_assign_from_checkpoint(variables.assign_from_checkpoint)
    _replace(("tf_slim.ops.variables", "tf_slim"), "assign_from_checkpoint",
             fixed)
  _replace(("tf_slim.metrics.metric_ops",), "_next_array_size",
           _next_array_size)
