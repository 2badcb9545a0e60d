"""Regularization declared through Keras, as terms the rule can check.

Keras layers used in a ``tf.compat.v1`` graph never put their regularization
into ``REGULARIZATION_LOSSES``; they keep it in ``layer.losses``. What each
Keras does there (measured on TF 2.15 and 2.21, with eager execution disabled
and inside ``tf.Graph().as_default()`` alike):

* Keras 3 (``keras`` 3, ``tf.keras`` on TF 2.16+): a weight regularizer is an
  attribute of the variable (``variable.regularizer``). Each read of
  ``.losses`` builds new term tensors (unnamed, ``mul:0``); none exist until
  ``.losses`` is read. Activity and ``add_loss`` terms are tensors built when
  the layer is called, kept in the layer's ``_losses``.
* Keras 2 (``tf_keras``, ``keras`` 2.x, ``tf.keras`` on TF 2.15): a weight
  regularizer is a callable in the layer's ``_callable_losses``; each read of
  ``.losses`` builds new tensors under ``<layer>/<weight>/Regularizer``, and
  none exist until it is read. Activity terms are built when the layer is
  called, under ``<layer>/ActivityRegularizer``.
* In no version does a regularizer set on an already-built layer
  (``layer.kernel_regularizer = l2(...)``) reach ``.losses``.

There is no registry of Keras layers, so this module keeps one: the first
time it sees a Keras module imported (it never imports one itself), it wraps
that Keras's base ``Layer.__init__`` to record each new layer (weakly), and
scans the garbage collector once for layers made before. A scan of every
object costs about 120 ms on a resnet_v1_152 graph; the record costs nothing
per check.

A weight term is a ``KerasTerm`` that behaves like TensorFlow's lazy
regularization tensors: one copy (its master) is built once per variable and
regularizer and cached, ``tf.convert_to_tensor(term)`` builds a fresh copy,
and ``_graph.lazy_copies`` finds any copy in a loss, such as the one a read of
``model.losses`` made. Activity and ``add_loss`` terms are the tensors Keras
made, checked as they are.

What a saved MetaGraph can show (``saved_terms``): Keras 2 activity terms
(built at call time, under ``ActivityRegularizer``) and Keras 2 weight terms
built by a read of ``.losses`` before the graph was saved (under
``<weight>/Regularizer``). It cannot show Keras weight terms that were never
read, nor any Keras 3 term: Keras 3 builds them without a name scope, and an
unnamed scalar computed from a variable (a weight-norm summary, say) is not
thereby a regularizer.
"""

import dataclasses
import functools
import gc
import inspect
import re
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple
import weakref

import tensorflow as tf

from safetrain.graph import _graph

__all__ = (
    "IneffectiveRegularizer",
    "KerasTerm",
    "generation",
    "ineffective_message",
    "ineffective_regularizers",
    "live_layers",
    "regularization_terms",
    "saved_terms",
    "weight_callable",
)

# Base Layer classes by module, each with the Keras generation it belongs to.
_LAYER_MODULES: Tuple[Tuple[str, int], ...] = (
    ("keras.src.layers.layer", 3),
    ("keras.src.engine.base_layer", 2),
    ("keras.src.engine.base_layer_v1", 2),
    ("keras.engine.base_layer", 2),
    ("keras.engine.base_layer_v1", 2),
    ("tf_keras.src.engine.base_layer", 2),
    ("tf_keras.src.engine.base_layer_v1", 2),
)
# tf.compat.v1.layers (and slim.batch_norm) are Keras 2 layers that put their
# regularization into REGULARIZATION_LOSSES themselves: not counted here.
_LEGACY_MODULES: Tuple[str, ...] = (
    "keras.src.legacy_tf_layers.base",
    "keras.legacy_tf_layers.base",
    "tf_keras.src.legacy_tf_layers.base",
)

_patched: Dict[str, type] = {}  # module name -> its patched Layer class
_layers: Dict[int, "weakref.ref"] = {}  # id -> layer, in construction order
_scan_pending = False
_HELD = ("safetrain", "keras layers")  # See _hold.


def _register(layer) -> None:
  key = id(layer)
  if key not in _layers:

    def forget(_, k: int = key) -> None:
      _layers.pop(k, None)

    _layers[key] = weakref.ref(layer, forget)


def _hold(layer, graph) -> None:
  """Keeps ``layer`` alive as long as ``graph``, as its variables are.

  ``Dense(4, kernel_regularizer=l2(0.1))(x)`` in a v1 graph keeps no
  reference to the layer, yet its variables are trained through the graph,
  so its regularization must stay checkable. The list lives on the graph,
  so a graph and its layers are freed together: ``tf.Graph`` takes no new
  attributes, so it goes into the graph's dict of session-handle feeders,
  which is keyed by op-name strings and read only by name (a tuple key can
  never clash). Without that dict the layer is only weakly recorded.
  """
  feeders = getattr(graph, "_handle_feeders", None)
  if isinstance(feeders, dict):
    feeders.setdefault(_HELD, []).append(layer)


def _wrap_init(cls) -> None:
  original = cls.__init__
  if getattr(original, "_safetrain_registers", False):
    return

  @functools.wraps(original)
  def __init__(self, *args, **kwargs):  # pylint: disable=invalid-name
    original(self, *args, **kwargs)
    _register(self)
    if not tf.executing_eagerly():
      _hold(self, tf.compat.v1.get_default_graph())

  setattr(__init__, "_safetrain_registers", True)  # noqa: B010 (for mypy)
  # The wrapper must look like the original to every inspection: Keras 3's
  # Operation.__new__ reads a layer class's __init__ with getfullargspec,
  # which does not follow __wrapped__, and binds the call with signature,
  # which does. With (*args, **kwargs) on one side and the original's
  # parameters on the other, a Layer subclass without an __init__ of its own
  # failed to construct (KeyError: 'args').
  try:
    __init__.__signature__ = inspect.signature(original)  # type: ignore[attr-defined]
  except (TypeError, ValueError):
    pass  # No signature to copy; nothing inspects one either.
  cls.__init__ = __init__


def _track() -> None:
  """Starts recording the layers of every Keras imported so far."""
  global _scan_pending
  for module_name, _ in _LAYER_MODULES:
    if module_name in _patched:
      continue
    module = sys.modules.get(module_name)
    cls = getattr(module, "Layer", None)
    if not isinstance(cls, type):
      continue
    _wrap_init(cls)
    _patched[module_name] = cls
    _scan_pending = True
  if _scan_pending:
    _scan_pending = False
    _scan()


def _subclasses(bases) -> set:
  found, stack = set(), list(bases)
  while stack:
    cls = stack.pop()
    if cls not in found:
      found.add(cls)
      stack.extend(cls.__subclasses__())
  return found


def _scan() -> None:
  """Records the layers that existed before their Keras was patched."""
  types = _subclasses(_patched.values())
  for obj in gc.get_objects():
    if type(obj) in types:  # Faster than isinstance over every object.
      _register(obj)


def generation(layer) -> int:
  for module_name, version in _LAYER_MODULES:
    cls = _patched.get(module_name)
    if cls is not None and isinstance(layer, cls):
      return version
  return 0


def _legacy_classes() -> Tuple[type, ...]:
  found = []
  for module_name in _LEGACY_MODULES:
    cls = getattr(sys.modules.get(module_name), "Layer", None)
    if isinstance(cls, type):
      found.append(cls)
  return tuple(found)


def live_layers() -> List:
  """Every recorded Keras layer still alive, legacy tf.layers left out."""
  _track()
  legacy = _legacy_classes()
  layers = []
  for ref in list(_layers.values()):
    layer = ref()
    if layer is not None and not (legacy and isinstance(layer, legacy)):
      layers.append(layer)
  return layers


class KerasTerm:
  """One Keras regularization term, checked like a lazy regularization tensor.

  Weight terms are lazy: ``_master_tensor`` is one copy, built once and
  cached, and ``_thunk()`` builds another, as ``tf.convert_to_tensor(term)``
  does. Activity and ``add_loss`` terms are the very tensors Keras built when
  the layer was called; they have no ``_master_tensor`` (searching for copies
  of a whole network's activations would walk the network).

  Attributes:
    name, graph, dtype, op, value_index: those of the master tensor.
    layer: the name of the layer that declared the term.
    variable: the ``tf.Variable`` regularized (None for activity and
      ``add_loss`` terms).
    kind: ``'weight'``, ``'activity'`` or ``'add_loss'``.
  """

  def __init__(self, tensor, thunk: Optional[Callable[[], Any]], *,
               layer: str, variable, kind: str):
    if thunk is not None:
      self._master_tensor = tensor
      self._thunk = thunk
    self._tensor = tensor
    self.name = tensor.name
    self.graph = tensor.graph
    self.dtype = tensor.dtype
    self.op = tensor.op
    self.value_index = tensor.value_index
    self.shape = tensor.shape
    self.layer = layer
    self.variable = variable
    self.kind = kind

  def build(self):
    """A tensor of this term's value: a fresh copy for a weight term."""
    thunk = getattr(self, "_thunk", None)
    return self._tensor if thunk is None else thunk()

  def __repr__(self) -> str:
    return (f"<KerasTerm {self.kind} of layer {self.layer!r}: "
            f"'{self.name}'>")


def _convert(value, dtype=None, name=None, as_ref=False):  # pylint: disable=unused-argument
  tensor = value.build()
  if dtype is not None and not dtype.is_compatible_with(tensor.dtype):
    tensor = tf.cast(tensor, dtype)
  return tensor


tf.register_tensor_conversion_function(KerasTerm, _convert)

# (id(variable), id(regularizer)) -> (weak refs to both, the term).
_weight_terms: Dict[Tuple[int, int], Tuple[Any, Any, KerasTerm]] = {}


def _cached_weight_term(variable, regularizer, graph, build, *, layer: str,
                        tf_variable, scope: str) -> Optional[KerasTerm]:
  """The term of ``variable`` under ``regularizer``, built once."""
  key = (id(variable), id(regularizer))
  found = _weight_terms.get(key)
  if found is not None and found[0]() is variable and found[1]() is regularizer:
    return found[2]

  def thunk():
    with graph.as_default(), graph.control_dependencies(None), \
        graph.name_scope(scope):
      return tf.convert_to_tensor(build())

  master = thunk()
  if master.graph is not graph:
    return None
  term = KerasTerm(master, thunk, layer=layer, variable=tf_variable,
                   kind="weight")
  try:
    refs = (weakref.ref(variable, functools.partial(_forget, key)),
            weakref.ref(regularizer))
  except TypeError:  # Not weakly referenceable: build anew at each check.
    return term
  _weight_terms[key] = refs + (term,)
  return term


def _forget(key, _) -> None:
  if _weight_terms is not None:  # None while the interpreter shuts down.
    _weight_terms.pop(key, None)


def _tf_variable(variable):
  """The tf.Variable behind a Keras 3 variable (or the variable itself)."""
  value = getattr(variable, "value", None)
  return value if isinstance(value, tf.Variable) else variable


def _graph_of(variable):
  try:
    return _tf_variable(variable).graph
  except (AttributeError, RuntimeError):
    return None  # An eager variable: it belongs to no graph.


def _keras3_terms(layer, graph) -> List[KerasTerm]:
  terms = []
  own = getattr(layer, "_trainable_variables", None)
  if own is None:
    own = getattr(layer, "trainable_weights", None) or ()
  for variable in own:
    regularizer = getattr(variable, "regularizer", None)
    if (regularizer is None or not getattr(variable, "trainable", True) or
        _graph_of(variable) is not graph):
      continue
    tf_variable = _tf_variable(variable)
    term = _cached_weight_term(
        variable, regularizer, graph,
        functools.partial(regularizer, variable), layer=layer.name,
        tf_variable=tf_variable, scope=tf_variable.op.name + "/Regularizer/")
    if term is not None:
      terms.append(term)
  kind = "activity" if getattr(layer, "activity_regularizer", None) else (
      "add_loss")
  terms.extend(_tensor_terms(layer, graph, lambda _: kind))
  return terms


def _tensor_terms(layer, graph, kind_of) -> List[KerasTerm]:
  terms = []
  for tensor in getattr(layer, "_losses", ()) or ():
    if isinstance(tensor, tf.Tensor) and not isinstance(
        tensor, tf.Variable) and getattr(tensor, "graph", None) is graph:
      terms.append(KerasTerm(tensor, None, layer=layer.name, variable=None,
                             kind=kind_of(tensor)))
  return terms


def weight_callable(loss_callable) -> Tuple[Any, Any]:
  """(variable, regularizer) of a Keras 2 weight regularization callable.

  Keras 2 wraps ``partial(_loss_for_variable, variable)`` in
  ``partial(_tag_unconditional, ...)``; the regularizer is a free variable of
  ``_loss_for_variable``. (None, None) for a user's ``add_loss(callable)``.
  """
  inner = loss_callable.args[0] if (
      isinstance(loss_callable, functools.partial) and
      loss_callable.args) else None
  if not (isinstance(inner, functools.partial) and inner.args and
          getattr(inner.func, "__name__", "") == "_loss_for_variable"):
    return None, None
  variable = inner.args[0]
  regularizer = None
  code, closure = inner.func.__code__, inner.func.__closure__ or ()
  for name, cell in zip(code.co_freevars, closure, strict=False):
    if name == "regularizer":
      regularizer = cell.cell_contents
  return variable, regularizer


def _keras2_terms(layer, graph) -> List[KerasTerm]:
  terms = []
  layer_graph = _layer_graph(layer)
  for loss_callable in getattr(layer, "_callable_losses", ()) or ():
    variable, regularizer = weight_callable(loss_callable)
    if variable is None:  # add_loss(callable): built in the layer's graph.
      if layer_graph is graph:
        terms.extend(_callable_term(loss_callable, layer, graph))
      continue
    if _graph_of(variable) is not graph:
      continue
    term = _cached_weight_term(
        variable, loss_callable if regularizer is None else regularizer,
        graph, loss_callable, layer=layer.name, tf_variable=variable,
        scope="")
    if term is not None:
      terms.append(term)
  terms.extend(_tensor_terms(
      layer, graph,
      lambda t: "activity" if "ActivityRegularizer" in t.name else "add_loss"))
  return terms


def _callable_term(loss_callable, layer, graph) -> List[KerasTerm]:
  key = (id(loss_callable), id(layer))
  found = _weight_terms.get(key)
  if found is not None and found[0]() is loss_callable:
    return [found[2]]

  def thunk():
    with graph.as_default(), graph.control_dependencies(None):
      return tf.convert_to_tensor(loss_callable())

  tensor = thunk()
  if tensor is None or tensor.graph is not graph:
    return []
  term = KerasTerm(tensor, thunk, layer=layer.name, variable=None,
                   kind="add_loss")
  _weight_terms[key] = (weakref.ref(loss_callable), None, term)
  return [term]


def _layer_graph(layer):
  for variable in getattr(layer, "_trainable_weights", None) or getattr(
      layer, "weights", ()):
    graph = _graph_of(variable)
    if graph is not None:
      return graph
  return None


def regularization_terms(graph) -> List[KerasTerm]:
  """Every Keras regularization term whose tensors live in ``graph``.

  Weight regularizers of every Keras layer (each variable and regularizer
  once, however often the layer is called), activity regularizers and
  ``add_loss`` terms, in the order the layers were made. Builds each weight
  term's master copy the first time it is asked for; later calls reuse it.
  """
  terms = []
  seen = set()
  for layer in live_layers():
    version = generation(layer)
    if version == 3:
      found = _keras3_terms(layer, graph)
    elif version == 2:
      found = _keras2_terms(layer, graph)
    else:
      continue
    for term in found:
      key = (term.op, term.value_index)
      if key not in seen:
        seen.add(key)
        terms.append(term)
  return terms


@dataclasses.dataclass(frozen=True)
class IneffectiveRegularizer:
  """A regularizer set on a layer after its weights were made.

  Attributes:
    layer: the layer's name.
    attribute: the layer attribute set, e.g. ``'kernel_regularizer'``.
    variable: the name of the variable it was meant for.
    weight: the layer attribute holding that variable, e.g. ``'kernel'``.
    keras: 3 for Keras 3, 2 for Keras 2 (tf_keras, keras 2.x).
    regularizer: the regularizer object.
  """

  layer: str
  attribute: str
  variable: str
  weight: str
  keras: int
  regularizer: Any = dataclasses.field(compare=False, repr=False)


def _weight_for(layer, attribute: str) -> Tuple[Optional[str], Any]:
  base = attribute[:-len("_regularizer")]
  for weight in (base, base + "_kernel"):
    try:
      variable = getattr(layer, weight, None)
    except Exception:  # pylint: disable=broad-except
      variable = None  # A property that fails on this layer.
    if variable is not None and hasattr(variable, "dtype") and (
        _graph_of(variable) is not None):
      return weight, variable
  return None, None


def _reaches_losses(layer, variable, regularizer, version: int) -> bool:
  if version == 3:
    return getattr(variable, "regularizer", None) is regularizer
  for loss_callable in getattr(layer, "_callable_losses", ()) or ():
    found, found_regularizer = weight_callable(loss_callable)
    if found is variable and found_regularizer in (None, regularizer):
      return True
    if found is None:  # add_loss(callable): does its term use the variable?
      for term in _callable_term(loss_callable, layer, _graph_of(variable)):
        walk = _graph.Walk([term], differentiable=True)
        if any(op is variable.op for op in walk.ops):
          return True
  return False


def ineffective_regularizers(graph) -> List[IneffectiveRegularizer]:
  """Regularizers set on built layers of ``graph`` that reach no loss."""
  found = []
  for layer in live_layers():
    version = generation(layer)
    if not version or not getattr(layer, "built", False):
      continue
    for attribute, regularizer in sorted(vars(layer).items()):
      attribute = attribute.lstrip("_")
      if (not attribute.endswith("_regularizer") or regularizer is None or
          attribute == "activity_regularizer" or not callable(regularizer)):
        continue
      weight, variable = _weight_for(layer, attribute)
      if variable is None or _graph_of(variable) is not graph:
        continue
      if weight is not None and not _reaches_losses(
          layer, variable, regularizer, version):
        found.append(IneffectiveRegularizer(
            layer=layer.name, attribute=attribute,
            variable=_tf_variable(variable).op.name, weight=weight,
            keras=version, regularizer=regularizer))
  return found


_INEFFECTIVE_TEMPLATE = (
    "{caller}: {count} regularizer(s) were set on Keras layers after the "
    "layers were built, so they never reach layer.losses and weight decay "
    "has no effect on the variables they were meant for.\n"
    "{items}\n"
    "Keras makes a weight's regularization term when it makes the weight; "
    "setting layer.{attribute} later changes only the attribute.\n"
    "Fix (for each):\n{fix}")
_FIX_KERAS3 = ("    layer.{weight}.regularizer = layer.{attribute}  "
               "# Keras 3 reads it from the variable")
_FIX_KERAS2 = ("    layer.add_loss(lambda: layer.{attribute}(layer.{weight}))"
               "  # Keras 2: the documented way for built layers")


def ineffective_message(caller: str,
                        items: List[IneffectiveRegularizer]) -> str:
  """What, which layers, why it has no effect, and the fix as code."""
  lines = [f"  layer {i.layer!r}: {i.attribute} set after build "
           f"(variable {i.variable}, Keras {i.keras})" for i in items]
  fixes = []
  for item in items:
    template = _FIX_KERAS3 if item.keras == 3 else _FIX_KERAS2
    fix = template.format(weight=item.weight, attribute=item.attribute)
    if fix not in fixes:
      fixes.append(fix)
  return _INEFFECTIVE_TEMPLATE.format(
      caller=caller, count=len(items), items="\n".join(lines),
      attribute=items[0].attribute if items else "kernel_regularizer",
      fix="\n".join(fixes) + "\nand then add model.losses to the loss "
      "(safetrain.total_loss_from(loss) does).")


# A Keras 2 term's scope: <weight>/Regularizer[_N] or
# <layer>/ActivityRegularizer[_N].
_SCOPE = re.compile(r"^(.*?)/(Regularizer|ActivityRegularizer)(_\d+)?/")
# Gradient ops of a term are built under gradients[_N]/<the term's scope>.
_GRADIENTS = re.compile(r"(^|/)gradients(_\d+)?(/|$)")


def saved_terms(graph) -> List:
  """Keras terms that an imported graph shows, outside REGULARIZATION_LOSSES.

  A term is the output of a ``.../Regularizer[_N]/`` or
  ``.../ActivityRegularizer[_N]/`` name scope (the scopes Keras 2 builds its
  terms in): a floating-point scalar no other op of that scope consumes.
  Scopes of variables whose regularization is in the collection (slim's
  ``weights/Regularizer``, and copies of its lazy terms) are left out. See
  the module docstring for what a saved graph cannot show.
  """
  collected = graph.get_collection(
      tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES)
  covered = set()
  for tensor in collected:
    match = _SCOPE.match(getattr(tensor, "name", ""))
    if match:
      covered.add((match.group(1), match.group(2)))
  scopes: Dict[str, List] = {}
  for op in graph.get_operations():
    name = op.name
    if "Regularizer" not in name:  # Cheap: most ops' names are not matched.
      continue
    match = _SCOPE.match(name + "/")
    if (match and (match.group(1), match.group(2)) not in covered and
        not _GRADIENTS.search(match.group(1)) and op.type != "Const"):
      scopes.setdefault(match.group(0), []).append(op)
  found = []
  for ops in scopes.values():
    inside = set(ops)
    for op in ops:
      for output in op.outputs:
        if (output.shape.ndims == 0 and output.dtype.is_floating and
            not any(c in inside for c in output.consumers())):
          found.append(output)
  return found
