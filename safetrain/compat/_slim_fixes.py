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
        # A name may map to partitions and a whole variable alike.
        is_part = var._save_slice_info  # pylint: disable=protected-access
        feed_dict[placeholder] = value[_sliced_index(var)] if is_part else value
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


def _streaming_covariance(predictions, labels, weights=None,
                          metrics_collections=None, updates_collections=None,
                          name=None):
  """tf_slim's ``streaming_covariance``, with no NaN from a zero total weight.

  tf_slim 1.1.0 merges each batch's comoment into the running one with the
  term ``n_A * n_B / n_AB``, divided plainly. While the weights seen so far
  sum to zero (a first batch that is all padding, weights ``0``), that is
  ``0 / 0``: the comoment becomes NaN and stays NaN for every later batch,
  so the covariance (and ``streaming_pearson_correlation``) never recovers.
  Upstream's ``testMultiUpdateWithErrorAndWeights`` fails on it. Here that
  division is ``div_no_nan``, as the means' already are; the variables,
  their names and all other arithmetic are tf_slim's documented ones
  (https://en.wikipedia.org/wiki/Algorithms_for_calculating_variance):
  ``C_AB = C_A + C_B + (E[x_A] - E[x_B]) (E[y_A] - E[y_B]) n_A n_B / n_AB``.
  tf_slim's own helpers (``metric_ops.metrics_impl``) make the variables,
  so they are metric variables exactly as tf_slim's are.
  """
  metric_ops = importlib.import_module("tf_slim.metrics.metric_ops")
  impl = metric_ops.metrics_impl
  with tf.compat.v1.variable_scope(name, "covariance",
                                   (predictions, labels, weights)):
    predictions, labels, weights = impl._remove_squeezable_dimensions(  # pylint: disable=protected-access
        predictions, labels, weights)
    predictions.get_shape().assert_is_compatible_with(labels.get_shape())
    count = impl.metric_variable([], tf.float32, name="count")
    mean_prediction = impl.metric_variable([], tf.float32,
                                           name="mean_prediction")
    mean_label = impl.metric_variable([], tf.float32, name="mean_label")
    comoment = impl.metric_variable([], tf.float32, name="comoment")

    if weights is None:
      batch_count = tf.cast(tf.size(labels), tf.float32)
    else:
      weights = metric_ops.weights_broadcast_ops.broadcast_weights(
          weights, labels)
      batch_count = tf.reduce_sum(weights)

    def weighted(values):
      return values if weights is None else values * weights

    new_count = count.assign_add(batch_count)
    prev_count = new_count - batch_count

    def merged_mean(mean, values):
      """Moves ``mean`` to the new count; returns (old mean, batch mean)."""
      batch_mean = tf.math.divide_no_nan(tf.reduce_sum(weighted(values)),
                                         batch_count)
      delta = tf.math.divide_no_nan((batch_mean - mean) * batch_count,
                                    new_count)
      return mean.assign_add(delta) - delta, batch_mean

    prev_mean_x, batch_mean_x = merged_mean(mean_prediction, predictions)
    prev_mean_y, batch_mean_y = merged_mean(mean_label, labels)
    batch_comoment = tf.reduce_sum(
        weighted((predictions - batch_mean_x) * (labels - batch_mean_y)))
    delta_comoment = batch_comoment + (
        (prev_mean_x - batch_mean_x) * (prev_mean_y - batch_mean_y) *
        tf.math.divide_no_nan(prev_count * batch_count, new_count))
    update_comoment = comoment.assign_add(delta_comoment)

    def covariance(op_name):
      return tf.where(tf.less_equal(count, 1.), float("nan"),
                      tf.truediv(comoment, count - 1), name=op_name)

    value = covariance("covariance")
    with tf.control_dependencies([update_comoment]):
      update_op = covariance("update_op")
  if metrics_collections:
    tf.compat.v1.add_to_collections(metrics_collections, value)
  if updates_collections:
    tf.compat.v1.add_to_collections(updates_collections, update_op)
  return value, update_op


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
  # streaming_pearson_correlation calls it through metric_ops' globals.
  _replace(("tf_slim.metrics.metric_ops", "tf_slim.metrics"),
           "streaming_covariance", _streaming_covariance)
