"""MobileNetV2 in TF-Slim, the model of the seed story.

After Sandler et al., "MobileNetV2: Inverted Residuals and Linear
Bottlenecks" (2018), and the layout of TF-Slim's published
``nets/mobilenet/mobilenet_v2.py``: a 3x3 stem, seventeen inverted residual
blocks (1x1 expansion, 3x3 depthwise, linear 1x1 projection, a residual
connection where shapes allow), a 1x1 conv to 1280 channels, global average
pooling and a 1x1 conv for the logits. Every conv but the logits is followed
by batch norm; activations are ReLU6.

As in the published ``training_scope``, L2 weight decay applies to the kernels
of the ordinary convolutions (and fully connected layers) only; depthwise
kernels, biases and batch norm parameters carry no regularization.

    with slim.arg_scope(mobilenet_v2.training_scope(weight_decay=0.001)):
      logits, end_points = mobilenet_v2.mobilenet(images, num_classes=10)

The network is fully convolutional up to the global pooling, so any input size
works; the digits' 8x8 scaled to 32x32 ends in a 1x1 feature map.
"""

from typing import Any, Dict, Optional, Sequence, Tuple

import tensorflow as tf
import tf_slim as slim

__all__ = ("CONV_DEFS", "mobilenet", "training_scope")

# (expansion t, output channels c, repeats n, first stride s), as published.
CONV_DEFS: Tuple[Tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM_CHANNELS = 32
_LAST_CHANNELS = 1280


def _make_divisible(value: float, divisor: int = 8,
                    min_value: Optional[int] = None) -> int:
  """Rounds channel counts as the published model does."""
  min_value = min_value or divisor
  new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
  if new_value < 0.9 * value:  # Never round down by more than 10%.
    new_value += divisor
  return new_value


def training_scope(is_training: bool = True,
                   weight_decay: float = 0.00004,
                   stddev: float = 0.09,
                   dropout_keep_prob: float = 0.8,
                   bn_decay: float = 0.997) -> Dict[Any, Any]:
  """The arg scope for training (and, with ``is_training=False``, eval).

  Args:
    is_training: batch norm and dropout in training mode.
    weight_decay: the L2 scale of conv and fully connected kernels; 0 (or
      less) adds no regularization at all, as ``slim.l2_regularizer`` does.
    stddev: the standard deviation of the truncated normal initializer.
    dropout_keep_prob: dropout keep probability before the logits.
    bn_decay: batch norm moving average decay.

  Returns:
    An arg scope, for ``slim.arg_scope(training_scope(...))``.
  """
  batch_norm_params = {
      "is_training": is_training,
      "decay": bn_decay,
      "center": True,
      "scale": True,
  }
  regularizer = slim.l2_regularizer(weight_decay) if weight_decay > 0 else None
  initializer = tf.compat.v1.truncated_normal_initializer(stddev=stddev)
  with slim.arg_scope(
      [slim.conv2d, slim.fully_connected, slim.separable_conv2d],
      weights_initializer=initializer,
      normalizer_fn=slim.batch_norm,
      activation_fn=tf.nn.relu6), \
      slim.arg_scope([slim.batch_norm], **batch_norm_params), \
      slim.arg_scope([slim.dropout], is_training=is_training,
                     keep_prob=dropout_keep_prob), \
      slim.arg_scope([slim.conv2d, slim.fully_connected],
                     weights_regularizer=regularizer), \
      slim.arg_scope([slim.separable_conv2d],
                     weights_regularizer=None) as scope:
    return scope


def _expanded_conv(net, expansion: int, channels: int, stride: int,
                   scope: str):
  """An inverted residual block: expand, depthwise, project, add."""
  with tf.compat.v1.variable_scope(scope):
    in_channels = net.shape[-1]
    block_input = net
    if expansion != 1:
      net = slim.conv2d(net, _make_divisible(in_channels * expansion), [1, 1],
                        scope="expand")
    # num_outputs=None: depthwise only, as the published model builds it.
    net = slim.separable_conv2d(net, None, [3, 3], depth_multiplier=1,
                                stride=stride, scope="depthwise")
    net = slim.conv2d(net, channels, [1, 1], activation_fn=None,
                      scope="project")
    if stride == 1 and in_channels == channels:
      net = tf.add(net, block_input, name="residual")
    return net


def mobilenet(images: tf.Tensor,
              num_classes: Optional[int] = 1001,
              depth_multiplier: float = 1.0,
              scope: str = "MobilenetV2",
              conv_defs: Sequence[Tuple[int, int, int, int]] = CONV_DEFS,
              reuse: Optional[bool] = None) -> Tuple[tf.Tensor,
                                                     Dict[str, tf.Tensor]]:
  """MobileNetV2 logits for ``images``; call it inside ``training_scope``.

  Args:
    images: a float [batch, height, width, channels] tensor.
    num_classes: the number of logits; None returns the pooled features.
    depth_multiplier: scales every layer's channels (at least 8, rounded to
      a multiple of 8), except the last conv, which keeps 1280 when the
      multiplier is below 1, as published.
    scope: the variable scope.
    conv_defs: the inverted residual blocks as (t, c, n, s) tuples.
    reuse: reuse the variables of an earlier call (for an eval tower).

  Returns:
    ``(logits, end_points)``: [batch, num_classes] logits (or the pooled
    [batch, channels] features) and a dict of named activations.
  """
  if depth_multiplier <= 0:
    raise ValueError(f"depth_multiplier must be positive, got "
                     f"{depth_multiplier}.")
  if images.shape.rank != 4:
    raise ValueError(f"images must be [batch, height, width, channels], got "
                     f"shape {images.shape}.")
  end_points = {}
  with tf.compat.v1.variable_scope(scope, "MobilenetV2", [images],
                                   reuse=reuse):
    net = slim.conv2d(images, _make_divisible(_STEM_CHANNELS *
                                              depth_multiplier),
                      [3, 3], stride=2, scope="Conv")
    end_points["Conv"] = net
    index = 0
    for expansion, channels, repeats, stride in conv_defs:
      out_channels = _make_divisible(channels * depth_multiplier)
      for i in range(repeats):
        name = "expanded_conv" + (f"_{index}" if index else "")
        net = _expanded_conv(net, expansion, out_channels,
                             stride if i == 0 else 1, scope=name)
        end_points[name] = net
        index += 1
    last = _make_divisible(_LAST_CHANNELS * max(1.0, depth_multiplier))
    net = slim.conv2d(net, last, [1, 1], scope="Conv_1")
    end_points["Conv_1"] = net
    net = tf.reduce_mean(net, axis=[1, 2], keepdims=True,
                         name="global_pool")
    end_points["global_pool"] = net
    if num_classes is None:
      return tf.squeeze(net, [1, 2]), end_points
    with tf.compat.v1.variable_scope("Logits"):
      net = slim.dropout(net, scope="Dropout")
      logits = slim.conv2d(net, num_classes, [1, 1], activation_fn=None,
                           normalizer_fn=None,
                           biases_initializer=tf.compat.v1.zeros_initializer(),
                           scope="Conv2d_1c_1x1")
      logits = tf.squeeze(logits, [1, 2], name="output")
    end_points["Logits"] = logits
    end_points["Predictions"] = tf.nn.softmax(logits, name="Predictions")
  return logits, end_points

