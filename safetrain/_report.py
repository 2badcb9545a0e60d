"""The result of a regularization check, as data, text and JSON.

One report type serves the library's errors and warnings, the CLI's audit and
the example trainers, so every place says the same thing the same way.
"""

import dataclasses
import enum
from typing import Any, Dict, Optional, Tuple

__all__ = ("RegularizationReport", "RegularizationTerm", "Status")

# How many left-out terms a message lists before "... and N more".
MESSAGE_LIMIT = 5


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
    tensor: the tensor itself (not part of equality or JSON).
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


@dataclasses.dataclass(frozen=True)
class RegularizationReport:
  """What a check found for one optimized loss.

  Attributes:
    loss_name: the optimized loss tensor's name.
    loss_description: its name, dtype and shape, for messages.
    terms: every regularization loss of the graph, deduplicated.
    trained_variables: names of the variables the train op updates.
  """

  loss_name: str
  loss_description: str
  terms: Tuple[RegularizationTerm, ...]
  trained_variables: Tuple[str, ...]
  expected_coefficient: Optional[float] = None

  @property
  def missing(self) -> Tuple[RegularizationTerm, ...]:
    """Terms that must be in the loss and are not."""
    return tuple(t for t in self.terms if t.is_missing)

  @property
  def overcounted(self) -> Tuple[RegularizationTerm, ...]:
    """Included terms whose coefficient exceeds the expected one."""
    expected = self.expected_coefficient
    if expected is None:
      return ()
    return tuple(
        t for t in self.terms
        if t.status is Status.INCLUDED and t.coefficient is not None and
        t.coefficient > expected * (1 + 1e-6))

  @property
  def ok(self) -> bool:
    return not self.missing and not self.overcounted

  def count(self, status: Status) -> int:
    return sum(1 for t in self.terms if t.status is status)

  def to_dict(self) -> Dict[str, Any]:
    return {
        "loss": self.loss_name,
        "ok": self.ok,
        "trained_variables": len(self.trained_variables),
        "regularization_losses": len(self.terms),
        "counts": {s.value: self.count(s) for s in Status},
        "missing": [t.name for t in self.missing],
        "overcounted": [t.name for t in self.overcounted],
        "terms": [t.to_dict() for t in self.terms],
    }

  def to_text(self) -> str:
    """A table of every term, for people."""
    lines = [f"loss {self.loss_description}: "
             f"{len(self.terms)} regularization losses, "
             f"{len(self.missing)} required but left out"]
    if not self.terms:
      lines.append("  (the graph has no regularization losses)")
    width = max([len(t.name) for t in self.terms] + [4])
    for term in self.terms:
      coefficient = ("" if term.coefficient is None else
                     f"  x{term.coefficient:g}")
      flag = "  <- LEFT OUT" if term.is_missing else ""
      variables = ", ".join(term.variables) or "(no variable)"
      lines.append(f"  {term.status.value:<11} {term.name:<{width}}  "
                   f"{variables}{coefficient}{flag}")
    return "\n".join(lines)

  def missing_message(self, caller: str) -> str:
    """The message of MissingRegularizationError: what, which, why, fix."""
    missing = self.missing
    lines = [
        f"{caller}: the loss being optimized leaves out {len(missing)} of "
        f"{len(self.terms)} regularization losses, so weight decay has no "
        "effect on the variables they regularize.",
        f"  optimized loss:  {self.loss_description}",
    ]
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
    lines.append('To leave them out on purpose, pass on_missing="warn".')
    return "\n".join(lines)

  def overcounted_message(self, caller: str) -> str:
    terms = self.overcounted
    lines = [
        f"{caller}: the loss being optimized counts {len(terms)} "
        f"regularization loss{'es' if len(terms) != 1 else ''} more often "
        "than once, so weight decay is stronger than configured.",
        f"  optimized loss:  {self.loss_description}",
    ]
    for term in terms[:MESSAGE_LIMIT]:
      lines.append(f"  counted x{term.coefficient:g} (expected "
                   f"x{self.expected_coefficient:g}): '{term.name}'")
    if len(terms) > MESSAGE_LIMIT:
      lines.append(f"  ... and {len(terms) - MESSAGE_LIMIT} more "
                   "(see error.overcounted)")
    lines.append(
        "Fix: add regularization once, not in every clone's loss:\n"
        "    loss = safetrain.sum_clone_losses(clone_losses)\n"
        "and build a single-device loss with safetrain.total_loss_from(loss),"
        " which never adds a term twice.")
    lines.append('To count them so on purpose, pass on_missing="warn".')
    return "\n".join(lines)
