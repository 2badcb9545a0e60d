"""Training graphs in the shapes older TensorFlow, tflearn and Horovod wrote.

Each function builds a small training graph with today's TensorFlow, then
rewrites its MetaGraphDef the way the real files of the corpus
(``corpus/graphs.tsv``) have it, so a test needs no third-party file:

* ``tf1_gradient_seed``: TensorFlow 1.5 to 1.15 seeded ``tf.gradients`` with
  ``Fill(Shape(loss), grad_ys_0)`` named ``gradients/Fill``; today's seed is
  the ``grad_ys_0`` constant itself.
* ``dangling_entry``: tflearn's ``trainops`` collection names ``Adam``, a name
  scope, not an op.
* ``stale_output_shapes``: ``_output_shapes`` attributes that today's shape
  functions disagree with.
* ``unknown_op``: an op type today's TensorFlow does not register
  (Horovod's allreduce on the gradients, a custom kernel elsewhere).
"""

import os
from typing import Callable, Optional, Tuple

import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

import helpers


def export(build: Callable[[], tf.Operation]) -> meta_graph_pb2.MetaGraphDef:
  """The MetaGraphDef of a graph whose train op ``build`` returns."""
  with tf.Graph().as_default():
    build()
    return tf.compat.v1.train.export_meta_graph()


def slim_train_op(included: bool = True, optimizer=None) -> tf.Operation:
  """A slim CNN with L2 regularizers, trained on a loss with or without them."""
  loss = helpers.cross_entropy()
  if included:
    loss = loss + tf.add_n(helpers.regularization())
  optimizer = optimizer or tf.compat.v1.train.GradientDescentOptimizer(0.1)
  return optimizer.minimize(loss)


def write(meta: meta_graph_pb2.MetaGraphDef, directory: str,
          name: str = "model.ckpt-1.meta") -> str:
  path = os.path.join(directory, name)
  with open(path, "wb") as f:
    f.write(meta.SerializeToString())
  return path


def _node(graph_def, name: str):
  for node in graph_def.node:
    if node.name == name:
      return node
  raise KeyError(name)


def tf1_gradient_seed(meta: meta_graph_pb2.MetaGraphDef
                      ) -> meta_graph_pb2.MetaGraphDef:
  """Each gradient seed renamed as TF 1.5-1.15 named it.

  Today ``gradients/grad_ys_0`` is the seed (a ``Fill`` of its own
  ``grad_ys_0/Const``) that the loss's gradient ops read. TF 1.x named the
  constant ``grad_ys_0`` and the seed ``Fill``:
  ``gradients/Fill = Fill(gradients/Shape, gradients/grad_ys_0)``.
  """
  meta = _copy(meta)
  graph_def = meta.graph_def
  renames = {}
  for node in graph_def.node:
    if node.op == "Fill" and node.name.endswith("grad_ys_0"):
      prefix = node.name.rsplit("/", 1)[0]
      renames[node.name] = f"{prefix}/Fill"
      renames[f"{node.name}/Const"] = node.name
  assert renames, "no gradient seed to rewrite"
  for node in graph_def.node:
    if node.name in renames:
      node.name = renames[node.name]
    for i, reference in enumerate(node.input):
      control = reference.startswith("^")
      name, _, index = reference.lstrip("^").partition(":")
      if name in renames:
        node.input[i] = (("^" if control else "") + renames[name] +
                         (f":{index}" if index else ""))
  return meta


def dangling_entry(meta: meta_graph_pb2.MetaGraphDef, key: str = "trainops",
                   name: str = "Adam") -> meta_graph_pb2.MetaGraphDef:
  """A node-list collection entry naming no op, as tflearn writes one."""
  meta = _copy(meta)
  meta.collection_def[key].node_list.value.append(name)
  return meta


def stale_output_shapes(meta: meta_graph_pb2.MetaGraphDef
                        ) -> meta_graph_pb2.MetaGraphDef:
  """Every recorded output shape says [7, 7, 7], a rank none of them has."""
  meta = _copy(meta)
  for node in meta.graph_def.node:
    if "_output_shapes" not in node.attr:
      continue
    for shape in node.attr["_output_shapes"].list.shape:
      shape.Clear()
      for _ in range(3):
        shape.dim.add().size = 7
  return meta


def unknown_op(meta: meta_graph_pb2.MetaGraphDef, target: str,
               op_type: str = "MadeUpKernel",
               attr_type: Optional[int] = types_pb2.DT_FLOAT
               ) -> Tuple[meta_graph_pb2.MetaGraphDef, str]:
  """An op of type ``op_type`` spliced in after the op named ``target``.

  Every consumer of ``target:0`` reads the new op instead. Returns the
  rewritten MetaGraphDef and the new op's name.
  """
  meta = _copy(meta)
  graph_def = meta.graph_def
  _node(graph_def, target)
  name = f"{target}/{op_type}"
  for node in graph_def.node:
    for i, reference in enumerate(node.input):
      if reference in (target, target + ":0"):
        node.input[i] = name
  new = graph_def.node.add()
  new.name = name
  new.op = op_type
  new.input.append(target)
  if attr_type is not None:
    new.attr["T"].type = attr_type
  return meta, name


def imports(meta: meta_graph_pb2.MetaGraphDef) -> bool:
  """Whether today's TensorFlow imports ``meta`` as it is."""
  try:
    with tf.Graph().as_default():
      tf.compat.v1.train.import_meta_graph(meta, clear_devices=True)
  except Exception:  # pylint: disable=broad-except
    return False
  return True


def _copy(meta):
  copy = meta_graph_pb2.MetaGraphDef()
  copy.CopyFrom(meta)
  return copy
