"""The weight-decay ledger: per variable, how it is decayed, how strongly, why.

``ledger(...)`` gives one ``Row`` per trainable variable of an update:

* its shape and *kind*, read from the op that consumes the variable's value
  in the forward pass, never from its name: the filter of ``Conv2D``,
  ``Conv3D``, ``Conv2DBackpropInput`` or ``DepthwiseConv2dNative``, an operand
  of ``MatMul``/``BatchMatMul``/``Einsum`` is a *kernel*; the bias of
  ``BiasAdd``, or a vector added to a larger tensor by ``Add``, a *bias*; the
  scale and offset of ``FusedBatchNorm*`` (or of ``tf.nn.batch_normalization``
  written out: a vector times an ``Rsqrt``, a vector minus the centred mean)
  a *normalization scale* / *offset*; the table of a ``Gather`` or
  ``ResourceGather`` an *embedding*; anything else *other*. For a Keras
  model, the layer attribute that holds the variable decides (``kernel``,
  ``depthwise_kernel``, ``bias``, ``gamma``/``beta`` of a normalization
  layer, ``embeddings``).
* every mechanism acting on it: an L2/L1 term with the regularizer's own
  factor ``c`` as the term's graph shows it (``c * sum(w^2)``; ``L2Loss`` is
  ``sum(w^2)/2``) and the coefficient with which the optimized loss counts
  the term (the report's), or a Keras optimizer's decoupled weight decay;
* trained, frozen (the update does not change it) or excluded (from the
  optimizer's decay), and by what;
* the effective per-step decay where the optimizer's math makes it constant:
  ``1 - lr * 2c`` for plain SGD on ``c * sum(w^2)`` (lr a graph constant, the
  gradient unscaled), ``1 - lr * wd`` for decoupled decay; otherwise it says
  why not ("depends on the optimizer state").

Its _rows.findings (a variable decayed twice, by a term of the loss and by
decoupled decay; an exclusion matching nothing; a variable whose terms are
all left out; as information, a variable decayed by several terms of the
loss, a kernel left undecayed among decayed siblings, a decayed bias or
normalization parameter) are part of the update's ``RegularizationReport``,
so the one policy (``_policy``) judges them with everything else: a graph
gets the verdict every check of its loss gives it (``tests/verdict_test``).
"""

import dataclasses
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from safetrain import _errors
from safetrain.graph import _coefficient
from safetrain.graph import _graph
from safetrain.per_variable import _ledger_keras
from safetrain.per_variable import _rows
from safetrain.rule import _args
from safetrain.rule import _check
from safetrain.rule import _policy
from safetrain.rule import _report
from safetrain.rule import _trace
from safetrain.terms import _decoupled
from safetrain.terms import _forms
from safetrain.tf1 import _train

__all__ = ("ledger", "ledger_of_train_op")

# ledger() builds nothing, so "add" is not a way out there.
_LEDGER_OPT_OUT = _report.OptOut('pass on_missing="{mode}"', can_add=False)

# Op type -> the input indices that make a variable a kernel (None: any).
_KERNEL_INPUTS: Dict[str, Optional[Tuple[int, ...]]] = {
    "Conv2D": (1,), "Conv3D": (1,), "Conv2DBackpropInput": (1,),
    "DepthwiseConv2dNative": (1,), "MatMul": None, "BatchMatMul": None,
    "BatchMatMulV2": None, "BatchMatMulV3": None, "Einsum": None,
}
_FUSED_NORMS = frozenset({"FusedBatchNorm", "FusedBatchNormV2",
                          "FusedBatchNormV3"})
_GATHERS = frozenset({"Gather", "GatherV2", "ResourceGather"})
# Ops a variable's value passes through unchanged on its way to a consumer.
# (Casts too: a bfloat16 model reads its float32 variables through one.)
_READS = _graph.READ_OPS | {"Cast"}
_GRADIENT_SCOPE = re.compile(r"(^|/)gradients(_\d+)?/")
# Apply op type -> (optimizer, index of its learning rate input).
_APPLY = {
    "GradientDescent": ("sgd", 1), "Momentum": ("momentum", 2),
    "KerasMomentum": ("momentum", 2), "Adam": ("adam", 5),
    "AdamWithAmsgrad": ("adam", 6), "RMSProp": ("rmsprop", 3),
    "CenteredRMSProp": ("rmsprop", 4), "Adagrad": ("adagrad", 2),
    "AdagradV2": ("adagrad", 2), "Adadelta": ("adadelta", 3),
    "Ftrl": ("ftrl", 4), "FtrlV2": ("ftrl", 4), "AdaMax": ("adamax", 5),
    "ProximalGradientDescent": ("proximal sgd", 1),
}
_APPLY_TYPE = re.compile(r"^(?:Resource)?(?:Sparse)?Apply(\w+)$")


# --- Reading a v1 graph. --------------------------------------------------


def _owner(tensor) -> Optional[tf.Operation]:
  return _graph.variable_op_of(tensor, _READS)


# Consumer types that can decide a kind (the others are only listed).
_DECIDING = (frozenset(_KERNEL_INPUTS) | _FUSED_NORMS | _GATHERS |
             frozenset({"BiasAdd", "Add", "AddV2", "Mul", "Sub"}))


def _uses(variable_op) -> Tuple[List[Tuple[tf.Operation, int]], List[str]]:
  """The forward ops that take the variable's value: (op, input index) of
  those whose type can decide its kind, and the types of all of them."""
  found = []
  types = []
  queue = [variable_op]
  seen = set()
  while queue:
    op = queue.pop()
    if op in seen:
      continue
    seen.add(op)
    for output in op.outputs:
      for consumer in output.consumers():
        op_type = consumer.type
        if op_type in _READS:
          queue.append(consumer)
        elif op_type in _DECIDING:
          name = consumer.name
          if "gradients" in name and _GRADIENT_SCOPE.search(name):
            continue  # The backward pass uses the value too; not a kind.
          for index, tensor in enumerate(consumer.inputs):
            if tensor is output:
              found.append((consumer, index))
          types.append(op_type)
        elif not _APPLY_TYPE.match(op_type):
          types.append(op_type)
  return found, types


def _is_rsqrt_product(op, index: int) -> bool:
  other = op.inputs[1 - index].op if len(op.inputs) == 2 else None
  return other is not None and other.type == "Rsqrt"


def _classify(variable_op, rank: Optional[int]) -> Tuple[str, str]:
  """(kind, the op type that decided it) from the variable's consumers."""
  uses, seen_types = _uses(variable_op)
  for op, index in uses:
    allowed = _KERNEL_INPUTS.get(op.type, ())
    if allowed is None or index in (allowed or ()):
      return _rows.KERNEL, op.type
  for op, index in uses:
    if op.type in _GATHERS and index == 0:
      return _rows.EMBEDDING, op.type
  for op, index in uses:
    if op.type in _FUSED_NORMS and index in (1, 2):
      return (_rows.SCALE if index == 1 else _rows.OFFSET), op.type
  # BiasAdd decides before the shapes of tf.nn.batch_normalization, whose
  # Sub an optimizer written with assigns (w - lr * update) also has.
  for op, index in uses:
    if op.type == "BiasAdd" and index == 1:
      return _rows.BIAS, op.type
  for op, index in uses:
    if rank == 1 and op.type == "Mul" and _is_rsqrt_product(op, index):
      return _rows.SCALE, "Mul by Rsqrt (batch_normalization)"
    if rank == 1 and op.type == "Sub" and index == 0:
      return _rows.OFFSET, "Sub (batch_normalization)"
  for op, index in uses:
    if op.type in ("Add", "AddV2") and rank == 1:
      other = op.inputs[1 - index]
      if other.shape.ndims is not None and other.shape.ndims > 1:
        return _rows.BIAS, op.type
  types = sorted(set(seen_types))
  return _rows.OTHER, ", ".join(types[:3]) or "no consumer"


def _mechanism(term, variable_op) -> _rows.Mechanism:
  kind, l2, l1 = _forms.form(term.tensor, variable_op)
  return _rows.Mechanism(kind=kind, source=term.name, status=term.status.value,
                   l2=l2, l1=l1, coefficient=term.coefficient)


def _apply_ops(train_op, variable_ops: Sequence[tf.Operation]
               ) -> Dict[tf.Operation, tf.Operation]:
  """Variable op -> the apply op of ``train_op`` that updates it.

  An apply op takes the variable itself (its ref, or its resource handle) as
  its first input, so it is among the variable op's consumers. Only where a
  variable has several (two train ops in one graph) are the train op's
  ancestors walked to pick its own.
  """
  candidates: Dict[tf.Operation, List[tf.Operation]] = {}
  for variable_op in variable_ops:
    for output in variable_op.outputs:
      for consumer in output.consumers():
        if (_APPLY_TYPE.match(consumer.type) and consumer.inputs and
            consumer.inputs[0] is output):
          candidates.setdefault(variable_op, []).append(consumer)
  mine: Optional[set] = None
  if any(len(c) > 1 for c in candidates.values()):
    mine = set(_graph.ancestor_ops([train_op], data=False))
    if not any(op in mine for c in candidates.values() for op in c):
      mine = set(_graph.ancestor_ops([train_op]))  # As _trace does.
  found: Dict[tf.Operation, tf.Operation] = {}
  for variable_op, ops in candidates.items():
    own = [op for op in ops if mine is None or op in mine]
    if own:
      found[variable_op] = own[0]
  return found


def _step_of(apply_op, constants: Optional[Dict] = None) -> _rows.Step:
  """The step of one apply op; ``constants`` caches folded learning rates
  (an optimizer feeds one lr tensor to the apply ops of all its variables).
  """
  if apply_op is None:
    return _rows.Step("unknown", None, "the optimizer is not known")
  match = _APPLY_TYPE.match(apply_op.type)
  name, lr_index = _APPLY.get(match.group(1) if match else "",
                              (apply_op.type, -1))
  lr = None
  if 0 <= lr_index < len(apply_op.inputs):
    rate = apply_op.inputs[lr_index]
    constants = {} if constants is None else constants
    if _graph.key(rate) not in constants:
      constants[_graph.key(rate)] = _coefficient.scalar_constant(rate)
    lr = constants[_graph.key(rate)]
  if name != "sgd" or "Sparse" in apply_op.type:
    return _rows.Step(name, lr, f"{_rows.STATE_DEPENDENT} ({name})")
  if lr is None:
    return _rows.Step(name, None, "lr is not a constant in the graph")
  delta = apply_op.inputs[2]
  if not _GRADIENT_SCOPE.search(delta.op.name):
    return _rows.Step(name, lr, "the gradient is transformed before the update "
                 "(clipping, a multiplier or a sum of clones)")
  return _rows.Step(name, lr, "")


def _shape(variable) -> Tuple[Optional[int], ...]:
  shape = getattr(variable, "shape", None)
  try:
    return tuple(None if d is None else int(d) for d in tf.TensorShape(shape))
  except (TypeError, ValueError):
    return ()


def rows_of_graph(report: _report.RegularizationReport, variables: Sequence,
                  apply_of: Dict, frozen_by: str,
                  step: Optional[_rows.Step] = None,
                  decoupled: Optional[Dict] = None) -> List[_rows.Row]:
  """The rows of a v1 update, from its report and its variables.

  Each variable's step is that of its apply op in ``apply_of``, or ``step``
  for all when given (an optimizer object, no train op yet); ``decoupled``
  maps variable ops to the decay their update applies itself.
  """
  decoupled = decoupled or {}
  terms_of: Dict[str, List] = {}
  for term in report.terms:
    for name in term.variables:
      terms_of.setdefault(name, []).append(term)
  trained = set(report.trained_variables)
  constants: Dict = {}
  rows = []
  for variable in variables:
    name = variable.op.name
    shape = _shape(variable)
    kind, used_by = _classify(variable.op, len(shape) if shape else None)
    mechanisms = tuple(_mechanism(t, variable.op)
                       for t in terms_of.get(name, ()))
    if variable.op in decoupled:
      decay = decoupled[variable.op]
      mechanisms += (_rows.Mechanism(
          kind="decoupled", source=decay.describe(), status="applied",
          rate=decay.rate, l2=decay.l2),)
    training = _rows.TRAINED if name in trained else _rows.FROZEN
    own = step or _step_of(apply_of.get(variable.op), constants)
    decay, note = _rows.decay_of(mechanisms, own, training)
    rows.append(_rows.Row(
        variable=name, shape=shape, kind=kind, used_by=used_by,
        training=training, by="" if training == _rows.TRAINED else frozen_by,
        mechanisms=mechanisms, decay=decay, decay_note=note))
  return rows


def _optimizer_text(apply_of: Dict) -> str:
  steps = {}
  constants: Dict = {}
  for op in apply_of.values():
    step = _step_of(op, constants)
    lr = "lr not constant" if step.learning_rate is None else (
        f"lr {step.learning_rate:g}")
    steps[f"{step.optimizer}, {lr}"] = True
  return "; ".join(steps) or "unknown"


def _unmatched_scopes(scopes: Sequence[str], variables: Sequence
                      ) -> List[Tuple[str, str]]:
  names = [v.op.name for v in variables]
  return [(s, "trainable scope") for s in scopes
          if not any(_check.in_scope(n, s.strip()) for n in names)]


def ledger_of_train_op(train_op, *, trainable_scopes: Sequence[str] = (),
                       report: Optional[_report.RegularizationReport] = None
                       ) -> _rows.Ledger:
  """The ledger of a built v1 train op (traced as ``_trace`` does).

  Args:
    train_op: the op or tensor ``create_train_op``/``minimize`` returned.
    trainable_scopes: the scopes that selected the trained variables (the
      trainer's ``--trainable_scopes``), to name what froze the rest and to
      report a scope that matches no variable.
    report: the update's report if already made (the audit's); by default
      the one ``create_train_op_safe`` makes.
  """
  return _ledger_of_trace(_trace.trace_train_op(train_op), trainable_scopes,
                          report)


def _ledger_of_trace(trace: _trace.TrainOpTrace,
                     trainable_scopes: Sequence[str],
                     report: Optional[_report.RegularizationReport]
                     ) -> _rows.Ledger:
  graph = trace.train_op.graph
  if not trace.variable_ops:
    raise _errors.InvalidArgumentError(
        f"ledger: {trace.train_op.name} updates no variable, so it is not a "
        "train op; for a loss pass it with the variables it trains: "
        "safetrain.ledger(loss, variables).")
  if not trace.losses:
    raise _errors.InvalidArgumentError(
        f"ledger: could not find the loss that {trace.train_op.name} "
        "minimizes; pass the loss and variables: "
        "safetrain.ledger(loss, variables).")
  variables = graph.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)
  if report is None:
    owners = _graph.variable_key_ops(_check.all_variables(graph))
    trained = [owners[op] for op in trace.variable_ops if op in owners]
    report = _train.update_report(list(trace.losses), trained,
                                  train_op=trace.train_op)
  apply_of = _apply_ops(trace.train_op, trace.variable_ops)
  frozen_by = ("trainable_scopes " + ",".join(trainable_scopes)
               if trainable_scopes else "variables_to_train")
  decoupled = _decoupled.decoupled_decay(trace.train_op, trace.variable_ops)
  rows = rows_of_graph(report, variables, apply_of, frozen_by,
                       decoupled=decoupled)
  unmatched = _unmatched_scopes(trainable_scopes, variables)
  report = dataclasses.replace(report, findings=_rows.findings(rows, unmatched))
  return _rows.Ledger(source=f"train op '{trace.train_op.name}'",
                optimizer=_optimizer_text(apply_of), rows=tuple(rows),
                report=report)


def _ledger_of_loss(loss, variables, optimizer) -> _rows.Ledger:
  caller = "ledger"
  loss = _args.graph_loss(loss, caller, "loss")
  trained = _args.trained_variables(variables, loss.graph, caller)
  report = _train.update_report([loss], trained)
  everything = loss.graph.get_collection(
      tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)
  step = _v1_optimizer_step(optimizer)
  rows = rows_of_graph(report, everything, {}, "variables_to_train", step)
  report = dataclasses.replace(report, findings=_rows.findings(rows))
  return _rows.Ledger(source=f"loss '{loss.name}'", optimizer=step.optimizer,
                rows=tuple(rows), report=report)


def _v1_optimizer_step(optimizer) -> _rows.Step:
  """The step of a ``tf.compat.v1.train`` optimizer object, if given."""
  if optimizer is None:
    return _rows.Step("unknown", None, "the optimizer is not known")
  lr = getattr(optimizer, "_learning_rate", None)
  lr = lr if isinstance(lr, (int, float)) else None
  if type(optimizer) is tf.compat.v1.train.GradientDescentOptimizer:  # noqa: E721
    return _rows.Step(f"sgd, lr {lr:g}" if lr is not None else "sgd", lr,
                 "" if lr is not None else "lr is not a Python number")
  name = type(optimizer).__name__
  return _rows.Step(name, lr, f"{_rows.STATE_DEPENDENT} ({name})")


def ledger(target: Any, variables: Optional[Sequence] = None, *,
           optimizer: Any = None, trainable_scopes: Sequence[str] = (),
           on_missing: Optional[str] = None) -> _rows.Ledger:
  """The weight-decay ledger of an update: one row per trainable variable.

  Args:
    target: a v1 train op (what ``create_train_op`` or ``minimize``
      returned), a v1 loss tensor (then pass ``variables`` if not all
      trainable variables are trained, and ``optimizer`` to get the
      per-step decay), or a Keras model (TF2; pass its ``optimizer`` unless
      it is compiled). For a saved MetaGraph use ``audit_ledgers``.
    variables: with a loss, the variables the update trains.
    optimizer: with a loss, its ``tf.compat.v1.train`` optimizer; with a
      Keras model, its Keras optimizer.
    trainable_scopes: with a train op, the scopes that chose the trained
      variables (see ``ledger_of_train_op``).
    on_missing: None only reports; ``"raise"`` or ``"warn"`` act on the
      _rows.findings through the one policy, as everywhere.

  Returns:
    A ``Ledger``: ``rows``, ``findings``, ``to_text()``, ``to_dict()``.

  Raises:
    RegularizationError: with ``on_missing="raise"``, the subclass of the
      first verdict (``DoubleCountedRegularizationError`` for a variable
      decayed twice, ``UnmatchedExclusionError``, ...).
  """
  caller = "ledger"
  if on_missing is not None:
    _args.on_missing(on_missing, caller)
    if on_missing == "add":
      raise _errors.InvalidArgumentError(
          "ledger: on_missing='add' cannot change an update that is already "
          "built; pass 'raise' or 'warn', or add the terms when building it "
          "(create_train_op_safe(..., on_missing='add')).")
  if _ledger_keras.is_keras_model(target):
    result = _ledger_keras.ledger_of_model(target, optimizer)
  else:
    _args.require_graph_mode(caller)
    if isinstance(target, tf.Operation) or (
        isinstance(target, tf.Tensor) and not
        target.dtype.base_dtype.is_floating):
      result = ledger_of_train_op(target, trainable_scopes=trainable_scopes)
    else:
      trace = None
      if (isinstance(target, tf.Tensor) and target.op.type == "Identity" and
          target.op.control_inputs and variables is None and
          optimizer is None):
        trace = _trace.trace_train_op(target)
      if trace is not None and trace.variable_ops:
        # create_train_op's result; a loss behind update ops
        # (control_dependencies + identity) updates no variable itself.
        result = _ledger_of_trace(trace, trainable_scopes, None)
      else:
        result = _ledger_of_loss(target, variables, optimizer)
  if on_missing is not None:
    _policy.apply(result.report, on_missing, caller, opt_out=_LEDGER_OPT_OUT)
  return result
