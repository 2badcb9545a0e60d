"""Auditing a saved MetaGraph: did the train ops it holds apply weight decay?

``audit_meta_graph(path)`` loads a ``.meta`` file (or the newest one in a
training directory), finds its train ops, traces each back to the loss it
minimizes and the variables it updates (``_trace``), and judges them as one
update with the library's own report and policy (``_train.update_report``,
``_report.verdicts``): the same rule, coefficients included, that
``create_train_op_safe`` and the guard apply.

The file is untrusted input. It is parsed as a protobuf and imported into a
fresh ``tf.Graph`` without a session: nothing runs, no variable is restored,
no ``py_func`` body is called and no code from the file is executed. Every way
the input can be unusable ends in ``AuditInputError`` with a one-line message.
"""

import dataclasses
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from google.protobuf import message as _pb_message
from google.protobuf import text_format
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

# The registry of the ops this TensorFlow build knows, to check attributes.
from tensorflow.python.framework import op_def_registry

from safetrain import _errors
from safetrain.audit import _legacy
from safetrain.graph import _graph
from safetrain.per_variable import _ledger
from safetrain.rule import _check
from safetrain.rule import _policy
from safetrain.rule import _report
from safetrain.rule import _trace
from safetrain.terms import _keras
from safetrain.tf1 import _train

__all__ = (
    "AuditInputError",
    "AuditResult",
    "EXIT_BAD_INPUT",
    "EXIT_OK",
    "EXIT_PROBLEM",
    "NoTrainOpError",
    "TrainOpAudit",
    "audit_meta_graph",
    "find_meta_file",
    "load_meta_graph",
)

EXIT_OK = _policy.EXIT_OK
EXIT_PROBLEM = _policy.EXIT_PROBLEM
EXIT_BAD_INPUT = _policy.EXIT_BAD_INPUT

# How many names a one-line message lists before "...".
_LIST_LIMIT = 5
_STEP = re.compile(r"-(\d+)\.meta$")

# The audit's user changes the policy of the script that built the graph.
_AUDIT_OPT_OUT = _report.OptOut(
    "run the script as `safetrain run --on_missing={mode} -- python train.py "
    "...`")


AuditInputError = _errors.AuditInputError
NoTrainOpError = _errors.NoTrainOpError


def _printable(text: str, limit: int = 80) -> str:
  """``text`` from the file, safe for a one-line message: escaped, cut."""
  text = ascii(str(text))[1:-1]
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _listing(names: Sequence[str]) -> str:
  names = [_printable(n) for n in names]
  shown = ", ".join(names[:_LIST_LIMIT])
  if len(names) > _LIST_LIMIT:
    shown += f", ... ({len(names)} in all)"
  return shown


def find_meta_file(path: str) -> str:
  """``path`` itself, or the newest ``.meta`` file in directory ``path``."""
  if not isinstance(path, (str, os.PathLike)) or not str(path):
    raise AuditInputError(f"audit: PATH must be a file or directory name, "
                          f"got {path!r}.", str(path))
  path = os.fspath(path)
  if not os.path.exists(path):
    raise AuditInputError(f"audit: {path}: no such file or directory.", path)
  if not os.path.isdir(path):
    return path
  try:
    entries = sorted(os.listdir(path))
  except OSError as e:
    raise AuditInputError(f"audit: cannot list directory {path}: "
                          f"{e.strerror}.", path) from None
  if not entries:
    raise AuditInputError(
        f"audit: directory {path} is empty; pass a training directory with "
        "model.ckpt-N.meta files or a .meta file.", path)
  metas = [e for e in entries if e.endswith(".meta") and
           os.path.isfile(os.path.join(path, e))]
  if not metas:
    raise AuditInputError(
        f"audit: directory {path} has no .meta file (it holds "
        f"{_listing(entries)}); slim writes model.ckpt-N.meta beside each "
        "checkpoint.", path)

  def newest(name):
    full = os.path.join(path, name)
    step = _STEP.search(name)
    return (os.path.getmtime(full), int(step.group(1)) if step else -1, name)

  return os.path.join(path, max(metas, key=newest))


def _parse(data: bytes, path: str) -> meta_graph_pb2.MetaGraphDef:
  """A MetaGraphDef from binary or text protobuf bytes, or AuditInputError."""
  meta_graph_def = meta_graph_pb2.MetaGraphDef()
  try:
    meta_graph_def.ParseFromString(data)
  except (_pb_message.DecodeError, RuntimeError, ValueError) as binary_error:
    reason = f"not a binary MetaGraphDef ({_first_line(binary_error)})"
    _refuse_graph_def(data, path)
    try:
      text = data.decode("utf-8")
    except UnicodeDecodeError:
      text = None
    if text is None:
      raise AuditInputError(f"audit: {path} is not a MetaGraph file: "
                            f"{reason}.", path) from None
    meta_graph_def = meta_graph_pb2.MetaGraphDef()
    try:
      text_format.Parse(text, meta_graph_def)
    except (text_format.ParseError, _pb_message.DecodeError, RuntimeError,
            ValueError):
      raise AuditInputError(
          f"audit: {path} is not a MetaGraph file: {reason}, nor a text "
          "MetaGraphDef.", path) from None
  if not meta_graph_def.graph_def.node:
    _refuse_graph_def(data, path)
    raise AuditInputError(
        f"audit: {path} is not a MetaGraph file: it parses, but holds no "
        "graph (no nodes). Pass the model.ckpt-N.meta file slim writes.",
        path)
  return meta_graph_def


def _refuse_graph_def(data: bytes, path: str) -> None:
  """AuditInputError, saying so, when ``data`` is a GraphDef with nodes.

  slim's ``graph.pbtxt`` (and a frozen ``.pb``) is a GraphDef: the ops
  without the collections (REGULARIZATION_LOSSES, the train op) the audit
  reads, so it cannot be audited; the MetaGraph beside it can.
  """
  graph_def = tf.compat.v1.GraphDef()
  try:
    graph_def.ParseFromString(data)
  except (_pb_message.DecodeError, RuntimeError, ValueError):
    graph_def.Clear()
    try:
      text_format.Parse(data.decode("utf-8"), graph_def)
    except (UnicodeDecodeError, text_format.ParseError,
            _pb_message.DecodeError, RuntimeError, ValueError):
      return
  if not graph_def.node or not all(n.op for n in graph_def.node):
    return
  directory = os.path.dirname(path) or "."
  try:
    beside = any(e.endswith(".meta") for e in os.listdir(directory))
  except OSError:
    beside = False
  instead = (f"the training directory ({directory}), whose newest "
             "model.ckpt-N.meta is taken" if beside else
             "the model.ckpt-N.meta file slim writes beside each checkpoint")
  raise AuditInputError(
      f"audit: {path} is a GraphDef, not a MetaGraph: it holds the ops but "
      "not the collections (REGULARIZATION_LOSSES, the train op) the audit "
      f"reads. Pass {instead}.", path)


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return _printable(text[0] if text else type(error).__name__, limit=200)


def _disallowed_attr(meta_graph_def) -> Optional[str]:
  """The first node attribute outside its op's allowed values, if any.

  TensorFlow checks some of these only with a CHECK in C++ while importing
  (a constant whose tensor type differs from its dtype, fed to StridedSlice,
  aborts the whole process), so an untrusted graph is checked here first.
  """
  graph_def = meta_graph_def.graph_def
  nodes = list(graph_def.node)
  for function in graph_def.library.function:
    nodes.extend(function.node_def)
  rules_of: Dict[str, Tuple] = {}
  for node in nodes:
    op = node.op
    rules = rules_of.get(op)
    if rules is None:
      rules = rules_of[op] = _allowed_values(op)
    if op == "Const" and "value" in node.attr and "dtype" in node.attr:
      if node.attr["value"].tensor.dtype != node.attr["dtype"].type:
        return (f"constant {_printable(node.name, limit=80)!r} holds a "
                "tensor of another type than its dtype attribute")
    if not rules:
      continue
    attrs = node.attr
    for name, kind, permitted in rules:
      if name not in attrs:
        continue
      value = attrs[name]
      if kind == "type":
        given = [value.type] if value.WhichOneof("value") == "type" else []
      elif kind == "list(type)":
        given = list(value.list.type)
      else:  # "string"
        given = [value.s] if value.WhichOneof("value") == "s" else []
      if any(v not in permitted for v in given):
        return (f"node {_printable(node.name, limit=80)!r} ({op}) has "
                f"attribute {name} outside the values its op allows")
  return None


def _allowed_values(op_type: str) -> Tuple[Tuple[str, str, frozenset], ...]:
  """(attribute, kind, allowed values) of ``op_type``'s restricted attrs."""
  op_def = op_def_registry.get(op_type)
  if op_def is None:
    return ()
  rules = []
  for attr_def in op_def.attr:
    allowed = attr_def.allowed_values
    if not allowed.HasField("list"):
      continue
    if attr_def.type in ("type", "list(type)"):
      rules.append((attr_def.name, attr_def.type,
                    frozenset(allowed.list.type)))
    elif attr_def.type == "string":
      rules.append((attr_def.name, "string", frozenset(allowed.list.s)))
  return tuple(rules)


def load_meta_graph(path: str) -> Tuple[tf.Graph, meta_graph_pb2.MetaGraphDef,
                                        str]:
  """Imports the MetaGraph at ``path`` into a new graph, running nothing.

  A graph an older TensorFlow wrote is repaired first where today's importer
  would refuse it (see ``_legacy``); the ``meta_graph_def`` returned is the
  repaired one.

  Args:
    path: a ``.meta`` file, or a directory (its newest ``.meta`` is taken).

  Returns:
    (graph, meta_graph_def, meta_path).

  Raises:
    AuditInputError: the path is missing, holds no ``.meta``, or the file is
      not a MetaGraph this TensorFlow can import.
  """
  graph, meta_graph_def, meta_path, _ = _load(path)
  return graph, meta_graph_def, meta_path


def _load(path: str) -> Tuple[tf.Graph, meta_graph_pb2.MetaGraphDef, str,
                              _legacy.Repairs]:
  """``load_meta_graph``, with what was repaired."""
  meta_path = find_meta_file(path)
  try:
    with open(meta_path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise AuditInputError(f"audit: cannot read {meta_path}: {e.strerror}.",
                          meta_path) from None
  if not data:
    raise AuditInputError(f"audit: {meta_path} is empty, not a MetaGraph.",
                          meta_path)
  meta_graph_def = _parse(data, meta_path)
  repairs = _legacy.repair(meta_graph_def)
  disallowed = _disallowed_attr(meta_graph_def)
  if disallowed:
    raise AuditInputError(
        f"audit: {meta_path} is not a valid graph: {disallowed}.", meta_path)
  try:
    graph = _import(meta_graph_def)
  except Exception as e:  # pylint: disable=broad-except
    # Untrusted input: TensorFlow signals a malformed graph with many types
    # (ValueError, KeyError, TypeError, tf.errors.*); each is bad input here,
    # unless the writer's shape hints were all that stood in the way.
    error: Optional[Exception] = e
    hints = _legacy.strip_shape_hints(meta_graph_def)
    if hints:
      try:
        graph = _import(meta_graph_def)
        error = None
        repairs = dataclasses.replace(repairs, shape_hints=hints)
      except Exception as again:  # pylint: disable=broad-except
        error = again
    if error is not None:
      raise AuditInputError(
          f"audit: cannot import the graph in {meta_path}: "
          f"{type(error).__name__}: {_first_line(error)}", meta_path) from None
  _check_collections(graph, meta_path, repairs)
  return graph, meta_graph_def, meta_path, repairs


def _import(meta_graph_def) -> tf.Graph:
  """A new graph with ``meta_graph_def`` imported: runs and restores nothing."""
  graph = tf.Graph()
  # TensorFlow's deprecation notices for what the saved graph uses (a
  # QueueRunner, say) speak to the script's author, not to the audit's user.
  logger = tf.get_logger()
  level = logger.level
  logger.setLevel("ERROR")
  try:
    with graph.as_default():
      # Builds Operation objects from the protobuf. Devices are cleared so a
      # GPU graph imports on any machine.
      tf.compat.v1.train.import_meta_graph(meta_graph_def, clear_devices=True)
  finally:
    logger.setLevel(level)
  return graph


def _check_collections(graph, meta_path: str,
                       repairs: _legacy.Repairs) -> None:
  """Collections the analysis reads must hold what TensorFlow puts there."""
  key = tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES
  lost = repairs.dropped.get(key)
  if lost:
    raise AuditInputError(
        f"audit: safetrain cannot check {meta_path} yet: its {key} "
        f"collection names {_listing(lost)}, which is not an op of the graph "
        "(a term built inside a function body, such as a v2 tf.cond branch, "
        "is not read from a saved graph), so a term could be missed.",
        meta_path)
  for item in graph.get_collection(key):
    if not isinstance(item, tf.Tensor):
      name = _printable(getattr(item, "name", repr(item)))
      raise AuditInputError(
          f"audit: {meta_path}: the {key} collection holds '{name}', a "
          f"{type(item).__name__}, where only tensors belong; the file is "
          "corrupt or was edited.", meta_path)


@dataclasses.dataclass(frozen=True)
class TrainOpAudit:
  """The check of one train op.

  Attributes:
    name: the train op's name.
    op_type: its op type.
    variables: names of the variables its optimizer updates.
    reports: the report of the update (one, for all the losses whose
      gradients the train op applies), or none when it could not be checked.
    problem: why it could not be checked (no loss or no variable found), or
      None.
    ledger: with ``per_variable=True``, the per-variable ledger
      (``safetrain.ledger``); its findings are in the report.
    note: how it was judged without a report, where it was (its loss is
      not in the graph, and no term regularizes what it updates).
  """

  name: str
  op_type: str
  variables: Tuple[str, ...]
  reports: Tuple[_report.RegularizationReport, ...]
  problem: Optional[str] = None
  ledger: Any = None
  note: Optional[str] = None

  @property
  def missing(self) -> Tuple[_report.RegularizationTerm, ...]:
    return tuple(t for r in self.reports for t in r.missing)

  @property
  def verdicts(self) -> Tuple[_report.Verdict, ...]:
    """What the one policy says of this train op's update."""
    found: List[_report.Verdict] = []
    for report in self.reports:
      found.extend(v for v in _report.verdicts(report) if v not in found)
    return tuple(found)

  def to_dict(self) -> Dict[str, Any]:
    return {
        "name": self.name,
        "type": self.op_type,
        "variables": list(self.variables),
        "checked": self.problem is None,
        "problem": self.problem,
        "note": self.note,
        "verdicts": [v.value for v in self.verdicts],
        "losses": [r.to_dict() for r in self.reports],
        **({"ledger": self.ledger.to_dict()} if self.ledger else {}),
    }


@dataclasses.dataclass(frozen=True)
class AuditResult:
  """What the audit of one MetaGraph found.

  Attributes:
    path: the ``.meta`` file audited.
    tensorflow_version: the TensorFlow version that wrote it, if recorded.
    train_ops: one ``TrainOpAudit`` per train op.
  """

  path: str
  tensorflow_version: str
  train_ops: Tuple[TrainOpAudit, ...]

  @property
  def missing(self) -> Tuple[_report.RegularizationTerm, ...]:
    return tuple(t for a in self.train_ops for t in a.missing)

  @property
  def verdicts(self) -> Tuple[_report.Verdict, ...]:
    found: List[_report.Verdict] = []
    for audit in self.train_ops:
      found.extend(v for v in audit.verdicts if v not in found)
    return tuple(found)

  @property
  def unchecked(self) -> Tuple[TrainOpAudit, ...]:
    return tuple(a for a in self.train_ops if a.problem is not None)

  @property
  def ok(self) -> bool:
    return not self.verdicts and not self.unchecked

  @property
  def exit_code(self) -> int:
    """0 nothing wrong, 1 a verdict (left out, doubled, ...), 2 unchecked."""
    if self.verdicts:
      return EXIT_PROBLEM
    if self.unchecked:
      return EXIT_BAD_INPUT
    return EXIT_OK

  def to_dict(self) -> Dict[str, Any]:
    return {
        "path": self.path,
        "tensorflow_version": self.tensorflow_version,
        "ok": self.ok,
        "exit_code": self.exit_code,
        "verdicts": [v.value for v in self.verdicts],
        "missing": sorted({t.name for t in self.missing}),
        "train_ops": [a.to_dict() for a in self.train_ops],
    }

  def to_text(self) -> str:
    """A table per train op, then the policy's verdict in full."""
    lines = [f"audit of {self.path} (written by TensorFlow "
             f"{self.tensorflow_version or 'unknown'})"]
    for audit in self.train_ops:
      lines.append(f"train op '{audit.name}' ({audit.op_type}): updates "
                   f"{len(audit.variables)} variable"
                   f"{'s' if len(audit.variables) != 1 else ''}")
      if audit.problem is not None:
        lines.append(f"  NOT CHECKED: {audit.problem}")
      if audit.note is not None:
        lines.append(f"  {audit.note}")
      for report in audit.reports:
        lines.extend("  " + line for line in report.to_text().splitlines())
      if audit.ledger is not None:
        lines.append(audit.ledger.to_text())
    problems = [(a, r, _report.verdicts(r)) for a in self.train_ops
                for r in a.reports]
    problems = [p for p in problems if p[2]]
    # Each problem's message says what, which, why and the fix.
    for audit, report, found in problems:
      lines.append(f"PROBLEM in train op '{audit.name}':")
      lines.append(_policy.message(report, found, "audit",
                                   opt_out=_AUDIT_OPT_OUT))
    if not problems and self.unchecked:
      lines.append("UNKNOWN: could not check "
                   f"{len(self.unchecked)} train op(s); see above.")
    elif not problems:
      lines.append(self._ok_line())
    return "\n".join(lines)

  def _ok_line(self) -> str:
    """What was checked, for a graph with no verdict (one line, short)."""
    terms = [t for a in self.train_ops for r in a.reports for t in r.terms]
    required = {t.name for t in terms if t.required}
    count = len(self.train_ops)
    if not terms:
      whose = ("its train op's loss has none" if count == 1 else
               f"none of its {count} train ops' losses has any")
      return (f"OK: the graph has no regularization term; {whose} to "
              "include.")
    if not required:
      which = ("its train op does not update" if count == 1 else
               f"none of its {count} train ops updates")
      count_terms = len({t.name for t in terms})
      if count_terms == 1:
        return ("OK: the graph's regularization term regularizes only "
                f"variables {which}.")
      return (f"OK: the graph's {count_terms} regularization terms "
              f"regularize only variables {which}.")
    if count == 1:
      if len(required) == 1:
        return ("OK: its train op's loss includes the term that regularizes "
                "what it updates, once.")
      return (f"OK: its train op's loss includes each of the {len(required)} "
              "terms that regularize what it updates, once.")
    return (f"OK: each of its {count} train ops' losses includes each term "
            "that regularizes what it updates, once.")


class _OpVariable:
  """Stands for a variable the optimizer updates but no collection lists."""

  def __init__(self, op):
    self.op = op
    self.name = op.name + ":0"


def _cut_problem(reports, graph, repairs: _legacy.Repairs) -> Optional[str]:
  """Why an op cut out of the graph (``_legacy``) leaves the verdict open.

  A stand-in cuts the graph at an op this TensorFlow does not know. That
  matters only on a term's path: where a term is computed from variables
  through it (which variables it regularizes is then not known), or where a
  term flows into it (the term may reach the loss through it). Elsewhere (an
  input pipeline's op, a custom layer of the forward pass) the verdict is
  the same with or without it.
  """
  if not repairs.stand_ins:
    return None
  terms = [t for r in reports for t in r.terms
           if t.tensor is not None and t.tensor.graph is graph]
  if not terms:
    return None
  term_ops = {t.tensor.op for t in terms}
  above_terms = set(_graph.ancestor_ops(term_ops, control=False))
  for stand_in in repairs.stand_ins:
    cut = {graph.get_operation_by_name(n) for n in stand_in.outputs}
    inputs = [graph.get_operation_by_name(n) for n in stand_in.inputs
              if _graph.has_op(graph, n)]
    below = set(_graph.ancestor_ops(inputs, control=False))
    reason = None
    if cut & above_terms:
      reason = "a regularization term is computed through it"
    elif below & term_ops:
      reason = "a regularization term flows into it"
    if reason:
      return (f"safetrain cannot check it yet: {reason}, and op "
              f"'{_printable(stand_in.name)}' has type "
              f"{_printable(stand_in.op_type)}, which TensorFlow "
              f"{tf.__version__} does not know.")
  return None


def _audit_train_op(op, graph, memo: _graph.Memo,
                    per_variable: bool = False,
                    repairs: Optional[_legacy.Repairs] = None
                    ) -> TrainOpAudit:
  trace = _trace.trace_train_op(op)
  owners = {o.name: v for o, v in _graph.variable_key_ops(
      _check.all_variables(graph)).items()}
  variables = [owners[o.name] if o.name in owners else _OpVariable(o)
               for o in trace.variable_ops]
  problem = None
  if not trace.variable_ops:
    problem = "it runs no optimizer apply op, so it updates no variable."
  elif not trace.losses:
    regularizing = _check.regularizing(graph, _saved_terms(graph, memo),
                                       variables, memo)
    if not regularizing:
      # Gradients fed from outside (a policy-gradient loop's placeholders):
      # no loss to read, but nothing it would have to include either.
      return TrainOpAudit(
          name=op.name, op_type=op.type, variables=trace.variables,
          reports=(), note=(
              "its loss is not in the graph (the gradients it applies are "
              "not computed there), and no regularization term regularizes "
              "the variables it updates: nothing to include."))
    count = len(regularizing)
    problem = ("could not find the loss it minimizes (no create_train_op "
               "result and no gradients seed among its inputs), and "
               + ("a regularization term regularizes" if count == 1 else
                  f"{count} regularization terms regularize")
               + " the variables it updates.")
  reports = () if problem else (
      _analyze_imported(trace.losses, variables, memo, op),)
  if reports and repairs is not None:
    problem = _cut_problem(reports, graph, repairs)
    if problem:
      reports = ()
  ledger = None
  if per_variable and reports:
    ledger = _ledger.ledger_of_train_op(op, report=reports[0])
    reports = (ledger.report,)  # The same report, with the ledger's findings.
  return TrainOpAudit(name=op.name, op_type=op.type, variables=trace.variables,
                      reports=reports, problem=problem, ledger=ledger)


class _SavedRegularization:
  """A regularization tensor of an imported graph, checked as a lazy tensor.

  ``get_variable(regularizer=...)`` and partitioned variables put lazy
  tensors into the collection, which build a fresh copy of the regularizer
  each time they are used. A saved graph keeps one copy in the collection and
  the loss uses another, and after import nothing says which entries were
  lazy. Presented as a lazy tensor whose master is the saved copy, the check
  accepts any copy that computes the same value the same way (see
  ``_graph.lazy_copies``), and the saved copy itself.
  """

  def __init__(self, tensor):
    self._master_tensor = tensor
    self._thunk = None  # Never called: nothing is built in the graph.
    self.graph = tensor.graph
    self.name = tensor.name
    self.op = tensor.op
    self.value_index = tensor.value_index
    self.dtype = tensor.dtype


def _saved_terms(graph, memo: _graph.Memo) -> List:
  """Every regularization term of a saved graph, found once per graph."""
  key = ("saved terms", graph)
  if key not in memo.graph_answers:
    memo.graph_answers[key] = _check.regularization_losses(
        graph, keras_terms=_keras.saved_terms(graph), memo=memo)
  return memo.graph_answers[key]


def _analyze_imported(losses, variables, memo: _graph.Memo,
                      train_op) -> _report.RegularizationReport:
  """The update's report for losses of an imported graph (see above)."""
  graph = losses[0].graph
  saved = [_SavedRegularization(t) for t in _saved_terms(graph, memo)]
  report = _train.update_report(losses, variables, memo=memo,
                                regularization=saved, train_op=train_op)
  terms = tuple(
      dataclasses.replace(t, tensor=s._master_tensor)  # pylint: disable=protected-access
      for t, s in zip(report.terms, saved, strict=True))
  return dataclasses.replace(report, terms=terms)


def _found(graph) -> Dict[str, Any]:
  keys = tf.compat.v1.GraphKeys
  return {
      "ops": len(graph.get_operations()),
      "variables": len(graph.get_collection(keys.GLOBAL_VARIABLES)),
      "trainable_variables": len(graph.get_collection(
          keys.TRAINABLE_VARIABLES)),
      "regularization_losses": len(_check.regularization_losses(graph)),
      "losses": [getattr(t, "name", str(t)) for t in
                 graph.get_collection(keys.LOSSES)],
      "collections": sorted(graph.get_all_collection_keys()),
  }


def audit_meta_graph(path: str, *, per_variable: bool = False
                     ) -> AuditResult:
  """Audits the train ops of a saved MetaGraph for left-out regularization.

  Args:
    path: a ``.meta`` file (``model.ckpt-N.meta``, written by slim beside
      each checkpoint) or a training directory (its newest ``.meta``).
    per_variable: also make each train op's weight-decay ledger
      (``TrainOpAudit.ledger``); its findings join the verdicts.

  Returns:
    An ``AuditResult``: per train op, a ``RegularizationReport`` per loss.

  Raises:
    AuditInputError: unusable input (see ``load_meta_graph``).
    NoTrainOpError: the graph holds no train op.
  """
  graph, meta_graph_def, meta_path, repairs = _load(path)
  train_ops = _trace.find_train_ops(graph)
  if not train_ops:
    found = _found(graph)
    raise NoTrainOpError(
        f"audit: {meta_path} has no train op: no train_op collection, no "
        "optimizer apply op and no variable update computed from gradients "
        f"(safetrain checks gradient training). It holds {found['ops']} ops, "
        f"{found['variables']} variables ({found['trainable_variables']} "
        f"trainable), {found['regularization_losses']} regularization losses,"
        f" losses [{_listing(found['losses'])}], collections "
        f"[{_listing(found['collections'])}]. Is it an inference graph, or "
        "one trained without gradients (closed form, trees)?",
        meta_path, found)
  memo = _graph.Memo()  # Shared by the train ops of this one graph.
  return AuditResult(
      path=meta_path,
      tensorflow_version=_printable(
          meta_graph_def.meta_info_def.tensorflow_version),
      train_ops=tuple(_audit_train_op(op, graph, memo, per_variable,
                                      repairs)
                      for op in train_ops))
