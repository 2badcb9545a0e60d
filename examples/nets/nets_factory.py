"""Networks by name, each under its arg scope with a given weight decay.

After TF-Slim's ``nets/nets_factory.py``: this project's ``lenet`` and
``mobilenet_v2``, and tf_slim's own nets (``resnet_v1_50``, ``inception_v1``,
``vgg_16``, ...) built under their ``*_arg_scope(weight_decay=...)``.

    network_fn = nets_factory.get_network_fn("mobilenet_v2", num_classes=10,
                                             weight_decay=1e-3,
                                             is_training=True)
    logits, end_points = network_fn(images)

Every network function returns [batch, num_classes] logits.
"""

import functools
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import tensorflow as tf
import tf_slim as slim
from tf_slim.nets import alexnet
from tf_slim.nets import inception
from tf_slim.nets import overfeat
from tf_slim.nets import resnet_utils
from tf_slim.nets import resnet_v1
from tf_slim.nets import resnet_v2
from tf_slim.nets import vgg

from examples.nets import lenet
from examples.nets import mobilenet_v2

__all__ = ("NETWORKS", "default_image_size", "get_network_fn")

NetworkFn = Callable[..., Tuple[tf.Tensor, Dict[str, tf.Tensor]]]

# name: (network, arg scope, default image size, passes is_training to net).
_OURS = {
    "lenet": (lenet.lenet, lenet.lenet_arg_scope, 32),
    "mobilenet_v2": (mobilenet_v2.mobilenet, mobilenet_v2.training_scope, 32),
}
_TF_SLIM = {
    "alexnet_v2": (alexnet.alexnet_v2, alexnet.alexnet_v2_arg_scope),
    "inception_v1": (inception.inception_v1, inception.inception_v1_arg_scope),
    "inception_v2": (inception.inception_v2, inception.inception_v2_arg_scope),
    "inception_v3": (inception.inception_v3, inception.inception_v3_arg_scope),
    "overfeat": (overfeat.overfeat, overfeat.overfeat_arg_scope),
    "resnet_v1_50": (resnet_v1.resnet_v1_50, resnet_utils.resnet_arg_scope),
    "resnet_v1_101": (resnet_v1.resnet_v1_101, resnet_utils.resnet_arg_scope),
    "resnet_v1_152": (resnet_v1.resnet_v1_152, resnet_utils.resnet_arg_scope),
    "resnet_v2_50": (resnet_v2.resnet_v2_50, resnet_utils.resnet_arg_scope),
    "resnet_v2_101": (resnet_v2.resnet_v2_101, resnet_utils.resnet_arg_scope),
    "resnet_v2_152": (resnet_v2.resnet_v2_152, resnet_utils.resnet_arg_scope),
    "vgg_a": (vgg.vgg_a, vgg.vgg_arg_scope),
    "vgg_16": (vgg.vgg_16, vgg.vgg_arg_scope),
    "vgg_19": (vgg.vgg_19, vgg.vgg_arg_scope),
}
NETWORKS: Tuple[str, ...] = tuple(sorted(set(_OURS) | set(_TF_SLIM)))


def default_image_size(name: str) -> int:
  """The input size a network is built for (32 for this project's nets)."""
  _check_name(name)
  if name in _OURS:
    return _OURS[name][2]
  # resnet_v1_50 and friends are plain functions; resnet_v1 has the size.
  return getattr(_TF_SLIM[name][0], "default_image_size", 224)


def _check_name(name: str) -> None:
  if name not in NETWORKS:
    raise ValueError(f"Unknown model_name {name!r}; choose one of: "
                     f"{', '.join(NETWORKS)}.")


def get_network_fn(name: str,
                   num_classes: int,
                   weight_decay: float = 0.0,
                   is_training: bool = False,
                   depth_multiplier: float = 1.0,
                   arg_scope_kwargs: Optional[Mapping[str, Any]] = None
                   ) -> NetworkFn:
  """A function ``(images, reuse=None) -> (logits, end_points)``.

  Args:
    name: one of ``NETWORKS``.
    num_classes: the number of logits.
    weight_decay: the L2 scale the net's arg scope puts on its kernels.
    is_training: batch norm and dropout in training mode.
    depth_multiplier: channel multiplier, for ``lenet`` and ``mobilenet_v2``.
    arg_scope_kwargs: more arguments for the net's arg scope function, such
      as ``{"bn_decay": 0.9}`` for ``mobilenet_v2``.

  Returns:
    The network function, with a ``default_image_size`` attribute.
  """
  _check_name(name)
  extra = dict(arg_scope_kwargs or {})
  if name in _OURS:
    net, scope_fn, _ = _OURS[name]
    if name == "mobilenet_v2":
      scope = scope_fn(is_training=is_training, weight_decay=weight_decay,
                       **extra)
      net = functools.partial(net, depth_multiplier=depth_multiplier)
    else:
      scope = scope_fn(weight_decay=weight_decay, **extra)
      net = functools.partial(net, is_training=is_training,
                              depth_multiplier=depth_multiplier)
  else:
    if depth_multiplier != 1.0:
      raise ValueError(f"depth_multiplier is supported for lenet and "
                       f"mobilenet_v2 only, not {name!r}.")
    net, scope_fn = _TF_SLIM[name]
    scope = scope_fn(weight_decay=weight_decay, **extra)
    net = functools.partial(net, is_training=is_training)

  def network_fn(images: tf.Tensor, reuse: Optional[bool] = None):
    with slim.arg_scope(scope), tf.compat.v1.variable_scope(
        tf.compat.v1.get_variable_scope(), reuse=reuse):
      logits, end_points = net(images, num_classes=num_classes)
    if logits.shape.rank == 4:  # ResNets keep [batch, 1, 1, classes].
      logits = tf.squeeze(logits, [1, 2], name="SpatialSqueeze")
    return logits, end_points

  network_fn.default_image_size = default_image_size(name)
  return network_fn
