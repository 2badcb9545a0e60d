"""The policy the process-wide guard applies now, and nothing else.

``safetrain run`` (for the whole process) and ``guard_optimizers`` (for a
block) install a policy; three checks read it on every call: the TF1
optimizer guard (``tf1._guard``), the tape (``tf2._tape``) and Keras
optimizers' decay (``tf2._keras_decay``). The state lives here, below all of
them, so that none of them imports another to ask; ``guard._install``
changes it and puts the checks on.
"""

import threading
from typing import List, Optional, Tuple

from safetrain.rule import _report

__all__ = ("current", "installed", "lock", "push", "push_first", "remove")

lock = threading.Lock()
"""Held by whoever changes the stack and patches or unpatches with it."""

# (on_missing, opt_out), innermost last. ``safetrain run``'s entry is first.
_stack: List[Tuple[str, _report.OptOut]] = []


def installed() -> Optional[str]:
  """The policy the guard applies now, or None when it is not installed."""
  return _stack[-1][0] if _stack else None


def current() -> Optional[Tuple[str, _report.OptOut]]:
  """The innermost ``(on_missing, opt_out)``, or None."""
  return _stack[-1] if _stack else None


def push(entry: Tuple[str, _report.OptOut]) -> None:
  """Makes ``entry`` the innermost policy (a ``guard_optimizers`` block)."""
  _stack.append(entry)


def push_first(entry: Tuple[str, _report.OptOut]) -> None:
  """Makes ``entry`` the outermost policy (``safetrain run``)."""
  _stack.insert(0, entry)


def remove(entry: Tuple[str, _report.OptOut]) -> bool:
  """Removes the innermost entry equal to ``entry``; True if none is left."""
  for i in range(len(_stack) - 1, -1, -1):
    if _stack[i] == entry:
      del _stack[i]
      break
  return not _stack


def clear() -> None:
  """Forgets every policy (tests)."""
  _stack.clear()
