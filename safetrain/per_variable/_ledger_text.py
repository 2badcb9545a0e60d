"""The ledger as a table for a terminal (100 columns by default).

Long variable names are shortened in the middle (``MobilenetV2/exp…ject/
weights``): the model's top scope and the weight's own name stay. Each row's
per-step decay is a number where the optimizer's math makes it constant,
else a mark ``[a]``, ``[b]`` explained under the table; so are the formulas.
"""

import textwrap
from typing import Dict, List

__all__ = ("render", "shorten")

_KIND = {"kernel": "kernel", "bias": "bias", "normalization scale": "scale",
         "normalization offset": "offset", "embedding": "embed",
         "other": "other"}


# What the number after "L2" is, since the regularizers scale it two ways.
_L2_NOTE = ("  L2 c: the term is c*sum(w^2); slim.l2_regularizer(s) gives "
            "c = s/2, Keras L2(s) c = s")


def _cut(text: str, width: int) -> str:
  if len(text) <= width:
    return text
  if width < 5:
    return text[:width]
  tail = (width - 1) // 2 + (width - 1) % 2
  return text[:width - 1 - tail] + "\u2026" + text[-tail:]


def shorten(text: str, width: int) -> str:
  """``text`` cut to ``width`` characters, keeping what tells names apart.

  The scopes of a path are cut in their middle first, longest first, so
  their ends (block indices such as ``_16``) and the last component (the
  weight's name) stay; only then is the whole cut in the middle.
  """
  parts = text.split("/")
  while len("/".join(parts)) > width:
    longest = max(range(len(parts) - 1), key=lambda i: len(parts[i]),
                  default=None)
    if longest is None or len(parts[longest]) <= 5:
      break
    over = len("/".join(parts)) - width
    parts[longest] = _cut(parts[longest],
                          max(5, len(parts[longest]) - over))
  return _cut("/".join(parts), width)


def _kind(row) -> str:
  kind = _KIND.get(row.kind, row.kind)
  return "dwkernel" if kind == "kernel" and "Depthwise" in row.used_by else (
      kind)


def _mechanisms(row) -> str:
  parts = []
  for m in row.mechanisms:
    if m.kind == "decoupled":
      parts.append(f"wd {m.rate:g}")
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


def render(ledger, width: int = 100) -> str:
  """The ledger's table, its notes and its findings, ``width`` wide."""
  rows = ledger.rows
  decayed = sum(r.decayed for r in rows)
  lines = [f"ledger of {ledger.source} ({ledger.optimizer}): {len(rows)} "
           f"trainable variables, {decayed} decayed"]
  columns = (("variable", 0), ("shape", 12), ("kind", 8), ("state", 8),
             ("decay", 18), ("per step", 9))
  fixed = sum(w for _, w in columns) + len(columns) - 1
  name_width = max(16, width - fixed)
  widths = [name_width] + [w for _, w in columns[1:]]
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
  for cells in table:
    lines.append(" ".join(shorten(c, w).ljust(w)
                          for c, w in zip(cells, widths, strict=True)
                          ).rstrip())
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
    lines.append("OK: no finding.")
  return "\n".join(lines)
