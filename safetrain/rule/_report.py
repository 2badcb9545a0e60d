"""The result of a regularization check, as data, text and JSON.

One report type serves the library's errors and warnings, the CLI's audit and
the example trainers, so every place says the same thing the same way.
"""

import dataclasses
import enum
import re
from typing import Any, Dict, List, Optional, Tuple

from safetrain.terms import _keras

__all__ = ("Finding", "FindingKind", "OptOut", "RegularizationReport",
           "RegularizationTerm", "Status", "Verdict", "verdicts")

# How many left-out terms a message lists before "... and N more".
MESSAGE_LIMIT = 5
# model_deploy's clone scopes, as the update's names show them.
_CLONE_SCOPE = re.compile(r"(^|/)clone_\d+/")


class Status(enum.Enum):
  """How one regularization loss stands with respect to the optimized loss."""

  INCLUDED = "included"
  """The loss depends on it through a differentiable path."""
  MISSING = "missing"
  """The loss does not depend on it at all."""
  BLOCKED = "blocked"
  """The loss's value uses it, but no gradient reaches it (a stop-gradient,
  an integer cast or an op without a gradient lies in between)."""
  FROZEN = "frozen"
  """Left out, but it regularizes only variables that are not trained."""
  UNREACHABLE = "unreachable"
  """It lives in another graph (a layer built inside a v2 ``tf.cond``
  branch), so no loss of this graph can include it."""


_ADVICE = {
    Status.MISSING: (
        "Add the regularization losses to the loss you optimize:\n"
        "    loss = safetrain.total_loss_from(loss)\n"
        "    train_op = safetrain.create_train_op_safe(loss, optimizer, "
        "global_step=global_step)"),
    Status.BLOCKED: (
        "A tf.stop_gradient, an integer cast or an op without a gradient "
        "(Round, Floor, ...) lies between the loss and these terms, so their "
        "gradient never reaches the weights. Add them directly:\n"
        "    loss = task_loss + tf.add_n("
        "tf.compat.v1.losses.get_regularization_losses())"),
    Status.UNREACHABLE: (
        "These tensors belong to another graph (a layer built inside a "
        "control-flow-v2 branch such as tf.cond), so no loss outside that "
        "branch can include them. Build the layer outside the branch, or "
        "return its regularization from the branch and add it to the loss:\n"
        "    out, reg = tf.cond(pred, lambda: (layer(x), tf.add_n("
        "layer.losses)), ...)"),
}


@dataclasses.dataclass(frozen=True)
class RegularizationTerm:
  """One regularization loss and its status.

  Attributes:
    name: the tensor's name, e.g.
      ``'conv1/kernel/Regularizer/l2_regularizer:0'``.
    variables: names of the variables it regularizes, found by graph
      dependency, never by name.
    status: a ``Status``.
    required: whether it regularizes a variable that the train op updates.
    coefficient: the factor with which it enters the optimized loss, where
      the graph shows it (sums, constant scaling, means); None otherwise.
    tensor: the tensor itself (not part of equality or JSON); in a TF2
      tape's report, the recorded regularizer that builds it.
  """

  name: str
  variables: Tuple[str, ...]
  status: Status
  required: bool
  coefficient: Optional[float] = None
  tensor: Any = dataclasses.field(default=None, compare=False, repr=False)

  @property
  def is_missing(self) -> bool:
    return self.required and self.status is not Status.INCLUDED

  def to_dict(self) -> Dict[str, Any]:
    return {
        "name": self.name,
        "variables": list(self.variables),
        "status": self.status.value,
        "required": self.required,
        "coefficient": self.coefficient,
    }


class FindingKind(enum.Enum):
  """What the per-variable ledger (``safetrain.ledger``) found."""

  DECAYED_TWICE = "decayed twice"
  """A variable decayed by two mechanisms, an L2 term of the loss and the
  optimizer's decoupled decay (AdamW): the DOUBLED verdict."""
  SEVERAL_TERMS = "several decay terms"
  """Information: a variable decayed by more than one term of the loss (a
  decay on every kernel plus an extra one on the head, say). Each term is
  counted once, so the decay is the sum of their coefficients, as
  configured; the row's per-step factor shows it."""
  UNMATCHED = "exclusion matches nothing"
  """An exclusion pattern, scope or mask entry that matches no variable."""
  ALL_LEFT_OUT = "every term left out"
  """Regularized variables whose terms are all left out of the loss (the
  MISSING verdict, seen per variable)."""
  UNREGULARIZED_KERNEL = "kernel not regularized"
  """Information: a kernel with no decay while its sibling kernels have it
  (a forgotten ``arg_scope``?)."""
  DECAYED_BIAS_OR_NORM = "bias or normalization decayed"
  """Information: a bias or normalization scale/offset is decayed."""


# Findings that are errors (through the policy); the others inform.
ERROR_FINDINGS = frozenset({FindingKind.DECAYED_TWICE, FindingKind.UNMATCHED,
                            FindingKind.ALL_LEFT_OUT})


@dataclasses.dataclass(frozen=True)
class Finding:
  """One thing the ledger found, naming the variables concerned.

  Attributes:
    kind: a ``FindingKind``.
    variables: the variables (or, for ``UNMATCHED``, the patterns) named.
    detail: one line saying what and why.
  """

  kind: FindingKind
  variables: Tuple[str, ...]
  detail: str

  @property
  def is_error(self) -> bool:
    return self.kind in ERROR_FINDINGS

  def to_dict(self) -> Dict[str, Any]:
    return {"kind": self.kind.value, "error": self.is_error,
            "variables": list(self.variables), "detail": self.detail}


@dataclasses.dataclass(frozen=True)
class OptOut:
  """How the user of one entry point changes the policy, for its messages.

  Attributes:
    how: the call or command, with ``{mode}`` where the ``on_missing`` value
      goes: ``'pass on_missing="{mode}"'`` for a Python call; the guard under
      ``safetrain run`` and the audit name the command's flag instead.
    can_add: whether ``on_missing="add"`` can fix left-out terms there (not
      for ``safetrain.ledger``, which builds nothing).
    warned: the message is a warning the user asked for with
      ``on_missing="warn"``, so it does not tell them to ask for it again.
  """

  how: str
  can_add: bool = True
  warned: bool = False

  def lines(self, purpose: str, *, add: bool = False) -> List[str]:
    """What to do without editing the code, and how to keep it ``purpose``.

    Args:
      purpose: what the warning mode keeps, e.g. "leave them out".
      add: the verdict is only left-out terms that ``"add"`` can add.
    """
    result = []
    if add and self.can_add:
      result.append("To add them without changing the loss, "
                    f"{self.how.format(mode='add')}.")
    if not self.warned:
      result.append(f"To {purpose} on purpose, {self.how.format(mode='warn')}.")
    return result


# What a message says to opt out, by default (a Python call).
OPT_OUT = OptOut('pass on_missing="{mode}"')

# Relative tolerance when comparing coefficients (float32 arithmetic).
_TOLERANCE = 1e-6


def _count(n: int, noun: str) -> str:
  """'1 regularization loss', '2 regularization losses'."""
  if n == 1:
    return f"1 {noun}"
  return f"{n} {noun}es" if noun.endswith("s") else f"{n} {noun}s"


def close(value: float, expected: float) -> bool:
  """Whether two coefficients are equal within float32 arithmetic."""
  return abs(value - expected) <= _TOLERANCE * max(1.0, abs(expected))


@dataclasses.dataclass(frozen=True)
class RegularizationReport:
  """What a check found for one update: the losses whose gradients it applies.

  Attributes:
    loss_name: the optimized loss tensor's name (the first, for an update
      that sums the gradients of several losses).
    loss_description: its name, dtype and shape, for messages.
    terms: every regularization loss of the graph, deduplicated, with its
      status and, where read, its coefficient summed over the losses.
    trained_variables: names of the variables the update changes.
    expected_coefficient: the coefficient that counts as "once" (1 for one
      device, a sum of clones or a parameter-server worker); None when
      coefficients were not read.
    losses: the names of every loss of the update (``(loss_name,)`` for one).
    scale: the magnitude of a constant factor by which the whole (single)
      loss is scaled, e.g. 0.5 for ``0.5 * (data + regularization)``: the
      relative weight of data and decay is what matters, so "once" means
      ``scale`` then. A negative factor flips the terms' signs, which their
      coefficients keep: a term with a negative one is maximized.
    replicas: N when the loss is a replica's whose gradient is summed with
      N-1 others (``MirroredStrategy``); 1 otherwise.
    misscaled_data: with N replicas, (name, coefficient) of each data loss
      that does not enter with 1/N.
    ineffective: regularizers set where they never act (a Keras layer's
      ``kernel_regularizer`` assigned after it was built).
    findings: what the per-variable ledger found (``safetrain.ledger``);
      empty for a report no ledger was made of.
  """

  loss_name: str
  loss_description: str
  terms: Tuple[RegularizationTerm, ...]
  trained_variables: Tuple[str, ...]
  expected_coefficient: Optional[float] = None
  losses: Tuple[str, ...] = ()
  scale: float = 1.0
  replicas: int = 1
  misscaled_data: Tuple[Tuple[str, float], ...] = ()
  ineffective: Tuple[Any, ...] = ()
  findings: Tuple[Finding, ...] = ()

  def found(self, kind: FindingKind) -> Tuple[Finding, ...]:
    """The findings of one kind."""
    return tuple(f for f in self.findings if f.kind is kind)

  @property
  def missing(self) -> Tuple[RegularizationTerm, ...]:
    """Terms that must be in the loss and are not."""
    return tuple(t for t in self.terms if t.is_missing)

  @property
  def expected(self) -> Optional[float]:
    """The coefficient each included term should have, scale included."""
    if self.expected_coefficient is None:
      return None
    return self.expected_coefficient * self.scale

  def _counted(self):
    expected = self.expected
    if expected is None:
      return ()
    return tuple(t for t in self.terms
                 if t.status is Status.INCLUDED and
                 t.coefficient is not None and
                 not close(t.coefficient, expected))

  @property
  def overcounted(self) -> Tuple[RegularizationTerm, ...]:
    """Included terms whose coefficient exceeds the expected one."""
    expected = self.expected
    return tuple(t for t in self._counted() if t.coefficient > expected)

  @property
  def undercounted(self) -> Tuple[RegularizationTerm, ...]:
    """Included terms whose coefficient falls short of the expected one."""
    expected = self.expected
    return tuple(t for t in self._counted() if t.coefficient < expected)

  @property
  def misscaled_regularization(self) -> Tuple[RegularizationTerm, ...]:
    """With N replicas, the included terms not at exactly the expected."""
    return self._counted() if self.replicas > 1 else ()

  @property
  def ok(self) -> bool:
    """No verdict: ``verdicts`` finds nothing."""
    return not verdicts(self)

  def count(self, status: Status) -> int:
    return sum(1 for t in self.terms if t.status is status)

  def to_dict(self) -> Dict[str, Any]:
    return {
        "loss": self.loss_name,
        "losses": list(self.losses or (self.loss_name,)),
        "ok": self.ok,
        "trained_variables": len(self.trained_variables),
        "regularization_losses": len(self.terms),
        "counts": {s.value: self.count(s) for s in Status},
        "expected_coefficient": self.expected,
        "missing": [t.name for t in self.missing],
        "overcounted": [t.name for t in self.overcounted],
        "undercounted": [t.name for t in self.undercounted],
        "misscaled_data": [list(d) for d in self.misscaled_data],
        "ineffective": [str(i) for i in self.ineffective],
        "terms": [t.to_dict() for t in self.terms],
        "findings": [f.to_dict() for f in self.findings],
    }

  def to_text(self) -> str:
    """A table of every term, for people."""
    losses = self.losses or (self.loss_name,)
    head = (f"loss {self.loss_description}" if len(losses) == 1 else
            f"{len(losses)} losses of one update "
            f"({', '.join(repr(n) for n in losses)})")
    lines = [f"{head}: {_count(len(self.terms), 'regularization loss')}, "
             f"{len(self.missing)} required but left out"]
    if not self.terms:
      lines.append("  (the graph has no regularization losses)")
    width = max([len(t.name) for t in self.terms] + [4])
    overcounted = {t.name for t in self.overcounted}
    undercounted = {t.name for t in self.undercounted}
    for term in self.terms:
      coefficient = ("" if term.coefficient is None else
                     f"  x{term.coefficient:g}")
      flag = ""
      if term.is_missing:
        flag = "  <- LEFT OUT"
      elif term.name in overcounted and term.coefficient and self.expected:
        flag = f"  <- COUNTED x{term.coefficient / self.expected:g}"
      elif term.name in undercounted:
        flag = f"  <- TOO WEAK (expected x{self.expected:g})"
      variables = ", ".join(term.variables) or "(no variable)"
      lines.append(f"  {term.status.value:<11} {term.name:<{width}}  "
                   f"{variables}{coefficient}{flag}")
    for name, value in self.misscaled_data:
      lines.append(f"  data loss   {name}  x{value:g} (expected "
                   f"x1/{self.replicas})  <- NOT SCALED FOR {self.replicas} "
                   "REPLICAS")
    for item in self.ineffective:
      lines.append(f"  ineffective {item}  <- NEVER APPLIED")
    return "\n".join(lines)

  def _loss_lines(self) -> List[str]:
    losses = self.losses or (self.loss_name,)
    if len(losses) == 1:
      return [f"  optimized loss:  {self.loss_description}"]
    lines = [f"  one update sums the gradients of {len(losses)} losses:"]
    lines.extend(f"                   '{name}'" for name in losses)
    return lines

  def missing_message(self, caller: str, opt_out: OptOut = OPT_OUT, *,
                      addable: bool = False) -> str:
    """The message of MissingRegularizationError: what, which, why, fix.

    ``addable``: every term is left out in a way ``on_missing="add"`` fixes.
    """
    missing = self.missing
    lines = [
        f"{caller}: the loss being optimized leaves out {len(missing)} of "
        f"{len(self.terms)} regularization losses, so weight decay has no "
        "effect on the variables they regularize.",
    ] + self._loss_lines()
    label = "left out:"
    for term in missing[:MESSAGE_LIMIT]:
      variables = ", ".join(term.variables) or "no variable"
      lines.append(f"  {label:<16} '{term.name}'  ({term.status.value}; "
                   f"variable {variables})")
      label = ""
    if len(missing) > MESSAGE_LIMIT:
      lines.append(f"  {'':<16} ... and {len(missing) - MESSAGE_LIMIT} more "
                   "(see error.missing)")
    lines.append("Fix:")
    for status in (Status.MISSING, Status.BLOCKED, Status.UNREACHABLE):
      if any(t.status is status for t in missing):
        lines.append(_ADVICE[status])
    lines.extend(opt_out.lines("leave them out", add=addable))
    return "\n".join(lines)

  def overcounted_message(self, caller: str, opt_out: OptOut = OPT_OUT,
                          routes: str = "") -> str:
    """The message of DoubleCountedRegularizationError."""
    terms = self.overcounted
    lines = [
        f"{caller}: the loss being optimized counts {len(terms)} "
        f"regularization loss{'es' if len(terms) != 1 else ''} more often "
        "than once, so weight decay is stronger than configured.",
    ] + self._loss_lines() + self._coefficient_lines(terms, "overcounted")
    if routes:
      lines.append(routes)
    if self._cloned():
      lines.append(
          "Fix: add regularization once, not in every clone's loss:\n"
          "    loss = safetrain.sum_clone_losses(clone_losses)\n"
          "and build a single-device loss with "
          "safetrain.total_loss_from(loss), which never adds a term twice.")
    else:
      lines.append(
          "Fix: add each regularization loss once, to the data loss alone:\n"
          "    loss = safetrain.total_loss_from(data_loss)\n"
          "which never adds a term twice.")
    lines.extend(opt_out.lines("count them so"))
    return "\n".join(lines)

  def _cloned(self) -> bool:
    """Whether the update sums clones' losses (model_deploy's layout)."""
    names = list(self.losses) + [self.loss_name] + [t.name for t in self.terms]
    return len(self.losses) > 1 or any(_CLONE_SCOPE.search(n) for n in names)

  def undercounted_message(self, caller: str, opt_out: OptOut = OPT_OUT) -> str:
    """The message of TooWeakRegularizationError."""
    terms = self.undercounted
    lines = [
        f"{caller}: the loss being optimized counts {len(terms)} "
        f"regularization loss{'es' if len(terms) != 1 else ''} less than "
        "once, so weight decay is weaker than configured.",
    ] + self._loss_lines() + self._coefficient_lines(terms, "undercounted")
    negative = len([t for t in terms
                    if t.coefficient is not None and t.coefficient < 0])
    if negative:
      lines.append(
          f"{negative} of them enter with a negative sign: minimizing the "
          "loss maximizes them, and the weights grow.")
    lines.append(
        "Fix: add each regularization loss once, unscaled, to the loss of "
        "one update:\n"
        "    loss = safetrain.total_loss_from(data_loss)" +
        ("\n(for clones: safetrain.sum_clone_losses(clone_losses))."
         if self._cloned() else ""))
    lines.extend(opt_out.lines("count them so"))
    return "\n".join(lines)

  def replica_message(self, caller: str, opt_out: OptOut = OPT_OUT) -> str:
    """The message of ReplicaScalingError (N replicas, summed gradients)."""
    n = self.replicas
    lines = [
        f"{caller}: {n} replicas sum their gradients, so each replica's data "
        f"loss must enter its loss x1/{n} and the regularization x1 (only the "
        "first replica's gradient carries it); otherwise weight decay is off "
        f"by a factor of {n}.",
        f"  replica loss:  '{self.loss_name}'"]
    for name, value in self.misscaled_data:
      lines.append(f"  data loss x{value:g} (expected x{1 / n:g}): '{name}'")
    for term in self.misscaled_regularization[:MESSAGE_LIMIT]:
      lines.append(f"  regularization x{term.coefficient:g} (expected x1): "
                   f"'{term.name}'")
    lines.append("Fix: in the function given to strategy.run,\n"
                 "    loss = safetrain.replica_total_loss(data_loss)")
    lines.extend(opt_out.lines("build it so"))
    return "\n".join(lines)

  def ineffective_message(self, caller: str, opt_out: OptOut = OPT_OUT) -> str:
    """The message of IneffectiveRegularizerError."""
    return "\n".join([_keras.ineffective_message(
        caller, list(self.ineffective))] + opt_out.lines("train without them"))

  def findings_message(self, caller: str, kind: FindingKind,
                       opt_out: OptOut = OPT_OUT) -> str:
    """The message of a ledger finding's verdict: what, which, why, fix."""
    found = self.found(kind)
    lines = [f"{caller}: {_FINDING_WHAT[kind]}"]
    for finding in found[:MESSAGE_LIMIT]:
      lines.append(f"  {finding.detail}")
    if len(found) > MESSAGE_LIMIT:
      lines.append(f"  ... and {len(found) - MESSAGE_LIMIT} more "
                   "(see error.report.findings)")
    lines.append(_FINDING_FIX[kind])
    lines.extend(opt_out.lines("keep it so"))
    return "\n".join(lines)

  def _coefficient_lines(self, terms, field: str) -> List[str]:
    lines = []
    for term in terms[:MESSAGE_LIMIT]:
      lines.append(f"  counted x{term.coefficient:g} (expected "
                   f"x{self.expected:g}): '{term.name}'")
    if len(terms) > MESSAGE_LIMIT:
      lines.append(f"  ... and {len(terms) - MESSAGE_LIMIT} more "
                   f"(see error.{field})")
    return lines


class Verdict(enum.Enum):
  """What is wrong with the regularization of one update."""

  MISSING = "missing"
  """A required term is not in any loss of the update."""
  DOUBLED = "doubled"
  """A term enters with a larger coefficient than once."""
  TOO_WEAK = "too weak"
  """A term enters with a smaller coefficient than once."""
  MISSCALED = "not scaled for replicas"
  """N replicas sum their gradients, but a replica's loss is not data/N plus
  the regularization once."""
  INEFFECTIVE = "ineffective"
  """A regularizer is set where it never reaches any loss."""
  UNMATCHED = "exclusion matches nothing"
  """An exclusion (a decay mask's name, a trainable scope) matches no
  variable, so it excludes nothing (the ledger's finding)."""



def verdicts(report: "RegularizationReport") -> Tuple[Verdict, ...]:
  """Everything wrong with ``report``, most fundamental first; () if ok."""
  found = []
  if report.missing or report.found(FindingKind.ALL_LEFT_OUT):
    found.append(Verdict.MISSING)
  if report.overcounted or report.found(FindingKind.DECAYED_TWICE):
    found.append(Verdict.DOUBLED)
  if report.replicas > 1:
    if report.misscaled_data or report.undercounted:
      found.append(Verdict.MISSCALED)
  elif report.undercounted:
    found.append(Verdict.TOO_WEAK)
  if report.ineffective:
    found.append(Verdict.INEFFECTIVE)
  if report.found(FindingKind.UNMATCHED):
    found.append(Verdict.UNMATCHED)
  return tuple(found)


_FINDING_WHAT = {
    FindingKind.DECAYED_TWICE: (
        "some variables are decayed by two mechanisms at once, so their "
        "weight decay is stronger than either configures."),
    FindingKind.UNMATCHED: (
        "an exclusion matches no variable, so it excludes nothing and the "
        "variables it was meant for are treated like all others."),
    FindingKind.ALL_LEFT_OUT: (
        "every regularization term of these variables is left out of the "
        "loss, so they are not decayed at all."),
}
_FINDING_FIX = {
    FindingKind.DECAYED_TWICE: (
        "Fix: decay each variable once: drop the regularizer (or its term "
        "from the loss), or keep the variable out of the optimizer's own "
        "decay (a Keras optimizer: "
        "optimizer.exclude_from_weight_decay(var_list=[...]); BERT's "
        "AdamWeightDecayOptimizer: its exclude_from_weight_decay list of "
        "name patterns; Ftrl: l2_regularization_strength=0)."),
    FindingKind.UNMATCHED: (
        "Fix: match the names the variables have (see the ledger's variable "
        "column), or pass the variables themselves (var_list=...)."),
    FindingKind.ALL_LEFT_OUT: _ADVICE[Status.MISSING],
}
