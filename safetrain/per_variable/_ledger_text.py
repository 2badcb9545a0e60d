"""The ledger as a table for a terminal.

Every cell is printed in full, so every variable name can be read, copied
and searched for (``MobilenetV2/expanded_conv_16/depthwise/
depthwise_weights``). The table is ``width`` columns wide (100 by default)
where the names fit, and wider where they do not: a column is never
narrower than its longest cell. Each row's per-step decay is a number where
the optimizer's math makes it constant, else a mark ``[a]``, ``[b]``
explained under the table; so are the formulas. The findings under the
table wrap at ``width``.
"""

import textwrap
from typing import Dict, List, Sequence

__all__ = ("render",)

_KIND = {"kernel": "kernel", "bias": "bias", "normalization scale": "scale",
         "normalization offset": "offset", "embedding": "embed",
         "other": "other"}


# What the number after "L2" is, since the regularizers scale it two ways.
_L2_NOTE = ("  L2 c: the term is c*sum(w^2); slim.l2_regularizer(s) gives "
            "c = s/2, Keras L2(s) c = s")


def _kind(row) -> str:
  kind = _KIND.get(row.kind, row.kind)
  return "dwkernel" if kind == "kernel" and "Depthwise" in row.used_by else (
      kind)


def _mechanisms(row) -> str:
  parts = []
  for m in row.mechanisms:
    if m.kind == "decoupled":
      parts.append(f"wd {m.rate:g}" if m.rate is not None else
                   f"opt L2 {m.l2:g}" if m.l2 is not None else "decoupled")
      continue
    text = {"L2": f"L2 {m.l2:g}" if m.l2 is not None else "L2",
            "L1": f"L1 {m.l1:g}" if m.l1 is not None else "L1",
            "L1L2": "L1L2", "other": "other"}[m.kind]
    if m.coefficient is not None and abs(m.coefficient - 1.0) > 1e-6:
      text += f" x{m.coefficient:g}"
    if m.status not in ("included", "declared"):
      text += " " + m.status.upper()
    parts.append(text)
  return ", ".join(parts) or "-"


def _widths(table: Sequence[Sequence[str]], least: Sequence[int],
            width: int) -> List[int]:
  """Each column's width: its longest cell, and at least ``least``.

  The first column (the names) also fills the table out to ``width``.
  """
  widths = [max([w] + [len(cells[i]) for cells in table])
            for i, w in enumerate(least)]
  rest = sum(widths[1:]) + len(widths) - 1  # The other columns and gaps.
  widths[0] = max(widths[0], width - rest)
  return widths


def render(ledger, width: int = 100) -> str:
  """The ledger's table in full, its notes, and its findings wrapped.

  Args:
    ledger: a ``Ledger``.
    width: the table's width where its cells fit, and where the findings'
      text wraps. No cell is cut: longer names make the table wider.

  Returns:
    The text, without a final newline.
  """
  rows = ledger.rows
  decayed = sum(r.decayed for r in rows)
  lines = [f"ledger of {ledger.source} ({ledger.optimizer}): {len(rows)} "
           f"trainable variables, {decayed} decayed"]
  columns = (("variable", 16), ("shape", 12), ("kind", 8), ("state", 8),
             ("decay", 18), ("per step", 9))
  notes: Dict[str, str] = {}
  table: List[List[str]] = [[c for c, _ in columns]]
  for row in rows:
    if row.decay is not None:
      step = "1" if row.decay == 1.0 else f"{row.decay:.6g}"
      if row.decay != 1.0:
        notes.setdefault(f"formula: {row.decay_note}", "")
    elif row.training == "frozen":
      step = "-"
    else:
      key = row.decay_note
      marks = sum(1 for n in notes.values() if n)
      notes.setdefault(key, f"[{chr(ord('a') + marks)}]")
      step = notes[key]
    shape = "x".join("?" if d is None else str(d) for d in row.shape) or (
        "scalar")
    state = row.training
    table.append([row.variable, shape, _kind(row), state, _mechanisms(row),
                  step])
  widths = _widths(table, [w for _, w in columns], width)
  for cells in table:
    lines.append(" ".join(c.ljust(w) for c, w in zip(cells, widths,
                                                     strict=True)).rstrip())
  for note, mark in notes.items():
    lines.append(f"  {mark + ' ' if mark else ''}{note}")
  if any(m.kind == "L2" and m.l2 is not None
         for r in rows for m in r.mechanisms):
    lines.append(_L2_NOTE)
  frozen_by = sorted({r.by for r in rows if r.by})
  if frozen_by:
    lines.append(f"  frozen/excluded by: {', '.join(frozen_by)}")
  for finding in ledger.findings:
    label = "PROBLEM" if finding.is_error else "INFO"
    lines.extend(textwrap.wrap(
        f"{label} ({finding.kind.value}): {finding.detail}", width,
        subsequent_indent="    "))
  if not ledger.findings:
    # The ledger's own findings; a verdict of the loss (terms left out) is
    # the report's, printed after the ledger by whoever shows it.
    lines.append("no finding." if ledger.verdicts else "OK: no finding.")
  return "\n".join(lines)
