"""A small LeNet-style slim net, for fast runs and tests.

Two 5x5 conv + 2x2 max-pool stages, a fully connected layer, dropout and the
logits, after TF-Slim's ``nets/lenet.py``. ``lenet_arg_scope(weight_decay)``
puts L2 on every conv and fully connected kernel (not on biases).

    with slim.arg_scope(lenet.lenet_arg_scope(weight_decay=1e-3)):
      logits, end_points = lenet.lenet(images, num_classes=10)
"""

from typing import Any, Dict, Optional, Tuple

import tensorflow as tf
import tf_slim as slim

__all__ = ("lenet", "lenet_arg_scope")


def lenet_arg_scope(weight_decay: float = 0.0) -> Dict[Any, Any]:
  """L2 on conv and fully connected kernels; ReLU; truncated normal init."""
  regularizer = slim.l2_regularizer(weight_decay) if weight_decay > 0 else None
  with slim.arg_scope(
      [slim.conv2d, slim.fully_connected],
      weights_regularizer=regularizer,
      weights_initializer=tf.compat.v1.truncated_normal_initializer(
          stddev=0.1),
      activation_fn=tf.nn.relu) as scope:
    return scope


def lenet(images: tf.Tensor,
          num_classes: Optional[int] = 10,
          is_training: bool = True,
          dropout_keep_prob: float = 0.5,
          depth_multiplier: float = 1.0,
          scope: str = "LeNet",
          reuse: Optional[bool] = None) -> Tuple[tf.Tensor,
                                                 Dict[str, tf.Tensor]]:
  """LeNet logits for ``images`` (any size divisible by 4).

  Args:
    images: a float [batch, height, width, channels] tensor.
    num_classes: the number of logits; None returns the fc3 features.
    is_training: dropout is active only in training.
    dropout_keep_prob: the keep probability of the dropout before the logits.
    depth_multiplier: scales the channels of every layer (32, 64, 1024).
    scope: the variable scope.
    reuse: reuse the variables of an earlier call (for an eval tower).

  Returns:
    ``(logits, end_points)``.
  """
  def depth(channels: int) -> int:
    return max(4, int(channels * depth_multiplier))

  end_points = {}
  with tf.compat.v1.variable_scope(scope, "LeNet", [images], reuse=reuse):
    net = end_points["conv1"] = slim.conv2d(images, depth(32), [5, 5],
                                            scope="conv1")
    net = end_points["pool1"] = slim.max_pool2d(net, [2, 2], 2, scope="pool1")
    net = end_points["conv2"] = slim.conv2d(net, depth(64), [5, 5],
                                            scope="conv2")
    net = end_points["pool2"] = slim.max_pool2d(net, [2, 2], 2, scope="pool2")
    net = slim.flatten(net)
    net = end_points["fc3"] = slim.fully_connected(net, depth(1024),
                                                   scope="fc3")
    if num_classes is None:
      return net, end_points
    net = end_points["dropout3"] = slim.dropout(
        net, dropout_keep_prob, is_training=is_training, scope="dropout3")
    logits = end_points["Logits"] = slim.fully_connected(
        net, num_classes, activation_fn=None, scope="fc4")
  end_points["Predictions"] = tf.nn.softmax(logits, name="Predictions")
  return logits, end_points
