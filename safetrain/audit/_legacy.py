"""MetaGraphs that today's importer refuses, made importable as they are.

Training graphs that TensorFlow 0.12 to 1.15 wrote (and that tflearn,
Horovod or a custom kernel wrote through it) hold three things that
``tf.compat.v1.train.import_meta_graph`` of a current TensorFlow refuses,
though none of them changes what the graph computes:

* ``_output_shapes`` attributes: shape hints the writer recorded, which
  today's shape functions may disagree with (``FusedBatchNormGradV3`` in a
  ``cond`` of a TF 1.x batch-norm graph). Nothing the audit reads needs them,
  so where the importer refuses a graph they are dropped
  (``strip_shape_hints``) and the import tried again.
* Collection entries that name nothing in the graph (tflearn's ``trainops``
  holds ``Adam``, a name scope, not a node). They are dropped; ``repair``
  says which, and the audit refuses a graph whose dropped entries it would
  have needed (a regularization loss that is not in the graph).
* Op types this TensorFlow does not register (``HorovodAllreduce``, custom
  ``RoiPool``, dataset ops TensorFlow since renamed). An op whose meaning is
  known is replaced by the op with that meaning (Horovod's allreduce and
  broadcast pass each tensor through, averaged or copied across workers: an
  ``Identity`` for every question the rule asks). Any other becomes a
  *stand-in*: a ``Placeholder`` per output, of the type its consumers read,
  so the rest of the graph imports. A stand-in cuts the graph at that op;
  ``repair`` keeps the op's inputs, so the audit can tell whether the cut
  lies where the answer depends on it (see ``_audit``).

Everything here edits the parsed protobuf only; nothing is imported or run.
"""

import dataclasses
from typing import Dict, List, Optional, Sequence, Set, Tuple

from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.python.framework import op_def_registry

__all__ = ("Repairs", "StandIn", "repair", "strip_shape_hints")

_SHAPE_HINT = "_output_shapes"
# Unknown op types whose meaning is known, and the op that has it. Horovod's
# allreduce averages (or sums) a tensor across workers and its broadcast
# copies one worker's value to all: for which tensors depend on which, and
# along which edges a gradient flows, each is its input passed through.
_KNOWN_MEANING = {
    "HorovodAllreduce": "Identity",
    "HorovodBroadcast": "Identity",
}
# Attributes that may name an unknown op's output type.
_TYPE_ATTRS = ("T", "dtype", "out_type", "Tout", "output_type")
# Where a stand-in's second, third, ... output lives.
_OUTPUT_SUFFIX = "/_safetrain_output_"


@dataclasses.dataclass(frozen=True)
class StandIn:
  """An op of an unknown type, replaced by one placeholder per output.

  Attributes:
    name: the op's name (its first output's placeholder keeps it).
    op_type: the unknown type.
    inputs: the names of the ops that fed it (its data inputs).
    outputs: the placeholders' names, one per output used.
  """

  name: str
  op_type: str
  inputs: Tuple[str, ...]
  outputs: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Repairs:
  """What ``repair`` changed.

  Attributes:
    shape_hints: how many ``_output_shapes`` attributes were dropped (by
      ``strip_shape_hints``).
    dropped: collection key -> the entries dropped from it (names of
      nothing in the graph).
    replaced: op name -> the known op type it now has (was: unknown type).
    stand_ins: the unknown ops cut out of the graph.
    functions: library functions dropped because they use unknown ops.
  """

  shape_hints: int = 0
  dropped: Dict[str, Tuple[str, ...]] = dataclasses.field(
      default_factory=dict)
  replaced: Dict[str, str] = dataclasses.field(default_factory=dict)
  stand_ins: Tuple[StandIn, ...] = ()
  functions: Tuple[str, ...] = ()


def _op_name(reference: str) -> str:
  """``'scope/op'`` of ``'scope/op:1'`` or ``'^scope/op'``."""
  return reference.lstrip("^").split(":")[0]


def strip_shape_hints(meta_graph_def) -> int:
  """Drops every ``_output_shapes`` attribute; returns how many. In place.

  Called only when the importer refuses a graph: a pass over every node
  costs about 3 us each, a few percent of the import itself.
  """
  count = 0
  graph_def = meta_graph_def.graph_def
  nodes = list(graph_def.node)
  for function in graph_def.library.function:
    nodes.extend(function.node_def)
  for node in nodes:
    if _SHAPE_HINT in node.attr:
      del node.attr[_SHAPE_HINT]
      count += 1
  return count


def _dangling_entries(meta_graph_def) -> Dict[str, Tuple[str, ...]]:
  """Drops collection entries naming no node; returns them by key."""
  names = {node.name for node in meta_graph_def.graph_def.node}
  dropped: Dict[str, Tuple[str, ...]] = {}
  for key, collection in meta_graph_def.collection_def.items():
    if collection.WhichOneof("kind") != "node_list":
      continue
    values = list(collection.node_list.value)
    kept = [v for v in values if _op_name(v) in names]
    if len(kept) != len(values):
      dropped[key] = tuple(v for v in values if _op_name(v) not in names)
      del collection.node_list.value[:]
      collection.node_list.value.extend(kept)
  return dropped


def _unknown_functions(graph_def) -> Set[str]:
  """Library functions that use an unknown op, or call such a function."""
  functions = {f.signature.name: f for f in graph_def.library.function}
  bad: Set[str] = set()
  changed = True
  while changed:
    changed = False
    for name, function in functions.items():
      if name in bad:
        continue
      for node in function.node_def:
        if (node.op in bad or _references(node) & bad or
            (node.op not in functions and
             op_def_registry.get(node.op) is None)):
          bad.add(name)
          changed = True
          break
  return bad


def _references(node) -> Set[str]:
  """The functions a node names in its attributes (``f``, branches, ...)."""
  found = set()
  for value in node.attr.values():
    if value.WhichOneof("value") == "func":
      found.add(value.func.name)
    elif value.WhichOneof("value") == "list":
      found.update(f.name for f in value.list.func)
  return found


def _consumer_types(graph_def) -> Dict[str, int]:
  """``'op:i'`` -> the type a consumer of that output reads, where known."""
  found: Dict[str, int] = {}
  for node in graph_def.node:
    op_def = op_def_registry.get(node.op)
    if op_def is None:
      continue
    data = [i for i in node.input if not i.startswith("^")]
    position = 0
    for arg in op_def.input_arg:
      count = 1
      if arg.number_attr and arg.number_attr in node.attr:
        count = node.attr[arg.number_attr].i
      elif arg.type_list_attr and arg.type_list_attr in node.attr:
        count = len(node.attr[arg.type_list_attr].list.type)
      for k in range(count):
        if position + k >= len(data):
          break
        dtype = arg.type
        if arg.type_attr and arg.type_attr in node.attr:
          dtype = node.attr[arg.type_attr].type
        elif arg.type_list_attr and arg.type_list_attr in node.attr:
          dtype = node.attr[arg.type_list_attr].list.type[k]
        reference = data[position + k]
        if ":" not in reference:
          reference += ":0"
        if dtype != types_pb2.DT_INVALID:
          found.setdefault(reference, dtype)
      position += count
  return found


def _own_type(node) -> Optional[int]:
  for attr in _TYPE_ATTRS:
    value = node.attr.get(attr)
    if value is not None and value.WhichOneof("value") == "type":
      return value.type
  return None


def _used_outputs(graph_def, name: str) -> List[int]:
  used = {0}
  for node in graph_def.node:
    for reference in node.input:
      if _op_name(reference) == name and ":" in reference:
        used.add(int(reference.split(":")[1]))
  return sorted(used)


def _stand_in(graph_def, node, types: Dict[str, int]) -> StandIn:
  """Turns ``node`` into one placeholder per used output, in place."""
  name = node.name
  inputs = tuple(_op_name(i) for i in node.input if not i.startswith("^"))
  outputs = []
  renamed = {}
  own = _own_type(node)
  for index in _used_outputs(graph_def, name):
    dtype = types.get(f"{name}:{index}", own or types_pb2.DT_FLOAT)
    if index == 0:
      target = node
      placeholder_name = name
    else:
      target = graph_def.node.add()
      placeholder_name = f"{name}{_OUTPUT_SUFFIX}{index}"
      renamed[f"{name}:{index}"] = f"{placeholder_name}:0"
    target.Clear()
    target.name = placeholder_name
    target.op = "Placeholder"
    target.attr["dtype"].type = dtype
    outputs.append(placeholder_name)
  for other in graph_def.node:
    for i, reference in enumerate(other.input):
      if reference in renamed:
        other.input[i] = renamed[reference]
  return StandIn(name=name, op_type="", inputs=inputs,
                 outputs=tuple(outputs))


def repair(meta_graph_def: meta_graph_pb2.MetaGraphDef) -> Repairs:
  """Makes ``meta_graph_def`` importable; see the module doc. In place."""
  graph_def = meta_graph_def.graph_def
  shape_hints = 0
  dropped = _dangling_entries(meta_graph_def)
  bad_functions = _unknown_functions(graph_def)
  if bad_functions:
    kept = [f for f in graph_def.library.function
            if f.signature.name not in bad_functions]
    del graph_def.library.function[:]
    graph_def.library.function.extend(kept)
    graph_def.library.gradient[:] = [
        g for g in graph_def.library.gradient
        if g.function_name not in bad_functions]
  replaced: Dict[str, str] = {}
  cut: List[Tuple[object, str]] = []
  unknown = {t for t in {node.op for node in graph_def.node}
             if op_def_registry.get(t) is None}
  if not unknown and not bad_functions:
    return Repairs(shape_hints=shape_hints, dropped=dropped)
  for node in graph_def.node:
    calls_bad = bool(bad_functions) and (
        node.op in bad_functions or bool(_references(node) & bad_functions))
    if node.op not in unknown and not calls_bad:
      continue
    if node.op in _KNOWN_MEANING and not calls_bad:
      replaced[node.name] = node.op
      data = [i for i in node.input if not i.startswith("^")]
      control = [i for i in node.input if i.startswith("^")]
      dtype = _own_type(node)
      node.op = _KNOWN_MEANING[node.op]
      for attr in list(node.attr):
        del node.attr[attr]
      del node.input[:]
      node.input.extend(data[:1] + control)
      if dtype is not None:
        node.attr["T"].type = dtype
      continue
    if node.op in {f.signature.name for f in graph_def.library.function}:
      continue  # A call of a function that is kept.
    cut.append((node, node.op))
  types = _consumer_types(graph_def) if cut else {}
  stand_ins = []
  for node, op_type in cut:
    stand_in = _stand_in(graph_def, node, types)
    stand_ins.append(dataclasses.replace(stand_in, op_type=op_type))
  return Repairs(shape_hints=shape_hints, dropped=dropped, replaced=replaced,
                 stand_ins=tuple(stand_ins),
                 functions=tuple(sorted(bad_functions)))


def unknown_types(stand_ins: Sequence[StandIn]) -> List[str]:
  """The unknown op types among ``stand_ins``, sorted, each once."""
  return sorted({s.op_type for s in stand_ins})
