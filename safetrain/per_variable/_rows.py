"""The ledger's rows: what one variable's decay is, and what rows show.

The types the v1-graph ledger (``_ledger``) and the Keras ledger
(``_ledger_keras``) both build: ``Row`` per variable, its ``Mechanism``s,
the ``Ledger``, the kinds and training states, the per-step factor
(``decay_of``) and the findings (``findings``). Both ledgers import this
module; it imports neither.
"""

import dataclasses
from typing import Any, Dict, Optional, Sequence, Tuple

from safetrain.per_variable import _ledger_text
from safetrain.rule import _policy
from safetrain.rule import _report

__all__ = (
    "KINDS", "Ledger", "Mechanism", "Row", "Step", "decay_of", "findings",
)

KERNEL = "kernel"
BIAS = "bias"
SCALE = "normalization scale"
OFFSET = "normalization offset"
EMBEDDING = "embedding"
OTHER = "other"
KINDS = (KERNEL, BIAS, SCALE, OFFSET, EMBEDDING, OTHER)

TRAINED = "trained"
FROZEN = "frozen"
EXCLUDED = "excluded"

STATE_DEPENDENT = "depends on the optimizer state"


@dataclasses.dataclass(frozen=True)
class Mechanism:
  """One way a variable is regularized.

  Attributes:
    kind: ``"L2"``, ``"L1"``, ``"L1L2"``, ``"decoupled"`` or ``"other"`` (a
      term whose form the graph does not show as ``c*sum(w^2)``/``c*sum|w|``).
    source: the term's tensor name, or the optimizer with its decay rate.
    status: the term's ``Status`` value (``included``, ``missing``, ...);
      ``"applied"`` for decoupled decay, ``"declared"`` for a Keras model's
      regularizer (no loss to look into).
    l2: ``c`` of ``c * sum(w^2)``, as the term's graph (or the Keras
      regularizer) shows it; None if none or not shown.
    l1: ``c`` of ``c * sum(|w|)``, likewise.
    coefficient: how often the optimized loss counts the term (the
      report's); None when not read.
    rate: the decoupled decay rate ``wd`` (``w -= lr * wd * w``); None when
      the optimizer decays otherwise (``w -= c * w``, Ftrl's own ``l2``;
      ``source`` says how).
  """

  kind: str
  source: str
  status: str
  l2: Optional[float] = None
  l1: Optional[float] = None
  coefficient: Optional[float] = None
  rate: Optional[float] = None

  @property
  def acts(self) -> bool:
    """Whether it changes the variable during training."""
    return self.status in ("included", "applied", "declared")

  @property
  def shrinks(self) -> bool:
    """Whether it acts and decays ``w`` in proportion to ``w`` (L2-like)."""
    return self.acts and (self.kind in ("L2", "L1L2", "decoupled"))

  def describe(self) -> str:
    if self.kind == "decoupled":
      return (f"decoupled wd={self.rate:g}" if self.rate is not None else
              f"decoupled ({self.source})")
    parts = []
    if self.l2 is not None:
      parts.append(f"{self.l2:g}*sum(w^2)")
    if self.l1 is not None:
      parts.append(f"{self.l1:g}*sum|w|")
    form = " + ".join(parts) or (
        f"{self.kind} term (coefficient not a constant)"
        if self.kind != "other" else "other term")
    times = ("" if self.coefficient is None or self.coefficient == 1.0 else
             f" x{self.coefficient:g}")
    state = "" if self.status == "included" else f" ({self.status})"
    return f"{form}{times}{state}"

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


def _is_zero(mechanism: Mechanism) -> bool:
  """Whether its strength is shown, and 0 (an L2 of scale 0, say)."""
  values = [v for v in (mechanism.l2, mechanism.l1, mechanism.rate)
            if v is not None]
  return bool(values) and not any(values)


@dataclasses.dataclass(frozen=True)
class Row:
  """One trainable variable in the ledger.

  Attributes:
    variable: its name (``conv1/weights``).
    shape: its shape (None for unknown dimensions).
    kind: one of ``KINDS``.
    used_by: what decided the kind: the consuming op type (``Conv2D``) or
      the Keras layer and attribute (``Dense.kernel``).
    training: ``trained``, ``frozen`` or ``excluded`` (from decay).
    by: what froze or excluded it; empty when trained.
    mechanisms: every regularization acting on it.
    decay: the effective per-step factor on ``w`` where it is constant.
    decay_note: the formula behind ``decay``, or why there is none.
  """

  variable: str
  shape: Tuple[Optional[int], ...]
  kind: str
  used_by: str
  training: str
  by: str
  mechanisms: Tuple[Mechanism, ...]
  decay: Optional[float]
  decay_note: str

  @property
  def decayed(self) -> bool:
    return self.training != FROZEN and any(
        m.acts and m.kind != "other" and not _is_zero(m)
        for m in self.mechanisms)

  def to_dict(self) -> Dict[str, Any]:
    result = dataclasses.asdict(self)
    result["shape"] = list(self.shape)
    result["mechanisms"] = [m.to_dict() for m in self.mechanisms]
    result["decayed"] = self.decayed
    return result


@dataclasses.dataclass(frozen=True)
class Ledger:
  """The ledger of one update.

  Attributes:
    source: what it is of (a train op's name, a Keras model's).
    optimizer: the optimizer as far as known, e.g. ``"sgd, lr 0.1"``.
    rows: one ``Row`` per trainable variable, in graph order.
    report: the update's ``RegularizationReport``, with the findings.
  """

  source: str
  optimizer: str
  rows: Tuple[Row, ...]
  report: _report.RegularizationReport

  @property
  def findings(self) -> Tuple[_report.Finding, ...]:
    return self.report.findings

  @property
  def verdicts(self) -> Tuple[_report.Verdict, ...]:
    return _report.verdicts(self.report)

  @property
  def exit_code(self) -> int:
    return _policy.exit_code(self.report)

  def to_dict(self) -> Dict[str, Any]:
    return {
        "source": self.source,
        "optimizer": self.optimizer,
        "ok": not self.verdicts,
        "verdicts": [v.value for v in self.verdicts],
        "decayed": sum(r.decayed for r in self.rows),
        "rows": [r.to_dict() for r in self.rows],
        "findings": [f.to_dict() for f in self.findings],
    }

  def to_text(self, width: int = 100) -> str:
    return _ledger_text.render(self, width)


@dataclasses.dataclass(frozen=True)
class Step:
  """What the update does to one variable: the optimizer and its lr."""

  optimizer: str
  learning_rate: Optional[float]
  note: str  # Why the step's decay is not a constant; empty if it may be.



def decay_of(mechanisms: Sequence[Mechanism], step: Step,
             training: str) -> Tuple[Optional[float], str]:
  """The per-step factor on ``w`` and its formula, or why there is none."""
  if training == FROZEN:
    return None, "not trained"
  acting = [m for m in mechanisms if m.acts and m.kind != "other"]
  if not acting:
    return (1.0, "no decay") if not any(
        m.acts for m in mechanisms) else (None, "a term of unknown form")
  if any(m.kind in ("L1", "L1L2") for m in acting):
    return None, "L1 moves w toward 0 by lr*c each step, not a factor"
  if any(m.kind == "decoupled" and m.rate is None for m in acting):
    return None, "the optimizer decays w in its own way, not by lr*wd"
  lr = step.learning_rate
  decoupled_only = all(m.kind == "decoupled" for m in acting)
  if lr is None or (step.note and not decoupled_only):
    # Decoupled decay alone is 1 - lr*wd whatever the optimizer.
    return None, step.note or "lr is not known"
  rate = 0.0
  formula = []
  condition = ""
  for m in acting:
    if m.kind == "decoupled":
      rate += lr * (m.rate or 0.0)
      formula.append("lr*wd")
    else:
      k = m.coefficient
      if k is None and m.status == "declared":
        k, condition = 1.0, " (if the loss adds model.losses once)"
      if m.l2 is None or k is None:
        return None, "the term's coefficient in the loss is not shown"
      rate += lr * 2 * m.l2 * k
      formula.append("lr*2c" + ("" if k == 1 else "*k"))
  return 1.0 - rate, "1 - " + " - ".join(formula) + condition


# --- Findings. --------------------------------------------------------------


def findings(rows: Sequence[Row], unmatched: Sequence[Tuple[str, str]] = ()
             ) -> Tuple[_report.Finding, ...]:
  """What the rows show, errors first; ``unmatched``: (pattern, where)."""
  kind = _report.FindingKind
  found = []
  stacked = []
  for row in rows:
    shrinking = [m for m in row.mechanisms if m.shrinks]
    if row.training == FROZEN or len(shrinking) < 2:
      continue
    detail = (f"{row.variable}: " + " and ".join(m.describe()
                                                 for m in shrinking) +
              f" (per step {row.decay_note})")
    # Decoupled decay on top of a term of the loss is the DOUBLED verdict,
    # as the Keras optimizer's own check (_keras_decay) and the rule's
    # (_check.with_decoupled) say. Several terms of the loss on one
    # variable, each counted once, are what every check of the loss passes:
    # their coefficients add up, as configured.
    if any(m.kind == "decoupled" for m in shrinking):
      found.append(_report.Finding(kind.DECAYED_TWICE, (row.variable,),
                                   detail))
    else:
      stacked.append((row.variable, detail))
  for pattern, where in unmatched:
    found.append(_report.Finding(kind.UNMATCHED, (pattern,), (
        f"{where} {pattern!r} matches none of the {len(rows)} variables")))
  left_out = [r.variable for r in rows if r.training != FROZEN and
              r.mechanisms and all(m.status == "missing" or
                                   m.status == "blocked"
                                   for m in r.mechanisms)]
  if left_out:
    found.append(_report.Finding(kind.ALL_LEFT_OUT, tuple(left_out), (
        f"{len(left_out)} regularized variables are not decayed: "
        f"{_names(left_out)}")))
  for depthwise in (False, True):
    kernels = [r for r in rows if r.kind == KERNEL and r.training != FROZEN
               and ("Depthwise" in r.used_by) == depthwise]
    plain = [r.variable for r in kernels if not r.decayed]
    if plain and len(plain) < len(kernels):
      found.append(_report.Finding(kind.UNREGULARIZED_KERNEL, tuple(plain), (
          f"{len(plain)} of {len(kernels)} "
          f"{'depthwise ' if depthwise else ''}kernels are not decayed while "
          f"the others are (a forgotten arg_scope?): {_names(plain)}")))
  if stacked:
    shown = "; ".join(detail for _, detail in stacked[:3])
    found.append(_report.Finding(kind.SEVERAL_TERMS, tuple(
        v for v, _ in stacked), (
            f"{len(stacked)} variables are decayed by several terms of the "
            f"loss, whose coefficients add up: {shown}"
            + (f"; ... ({len(stacked)} in all)" if len(stacked) > 3 else ""))))
  decayed = [r.variable for r in rows
             if r.kind in (BIAS, SCALE, OFFSET) and r.decayed]
  if decayed:
    found.append(_report.Finding(kind.DECAYED_BIAS_OR_NORM, tuple(decayed), (
        f"{len(decayed)} biases or normalization parameters are decayed: "
        f"{_names(decayed)}")))
  return tuple(found)


def _names(names: Sequence[str]) -> str:
  shown = ", ".join(names[:3])
  return shown + (f", ... ({len(names)} in all)" if len(names) > 3 else "")


