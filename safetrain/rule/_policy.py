"""The one policy: a report's verdict, and what to do about it.

Every entry point builds a ``RegularizationReport`` for the update it sees
(``_check.analyze``) and hands it here: ``create_train_op_safe`` and
``total_loss_from``, the drop-in ``safetrain.slim``, the optimizer guard (and
so ``safetrain run``), the audit of a saved graph, the clone and replica
builders and the example trainers. So one graph gets one verdict, whichever
way it is checked.

``_report.verdicts(report)`` says what is wrong (a fact about the report,
so it lives with it); ``apply(report, on_missing, ...)`` acts on it:
``"raise"`` raises the error of the first verdict (with every verdict's
message), ``"add"`` returns the left-out terms for the caller to add when
leaving out is all that is wrong, ``"warn"`` warns.
``exit_code(report)`` is what a command line exits with.

``on_missing`` governs every verdict, not only terms left out: a term counted
twice, counted too weakly, a replica loss not scaled for N and a regularizer
that never acts all raise under ``"raise"`` and warn under ``"warn"``. Only
terms left out can be fixed by ``"add"``; the others raise under it.
"""

import dataclasses
import os
import sys
import sysconfig
from typing import Callable, Dict, Optional, Sequence, Tuple, Type
import warnings

from absl import logging

from safetrain import _errors
from safetrain.rule import _report

__all__ = (
    "EXIT_BAD_INPUT",
    "EXIT_OK",
    "EXIT_PROBLEM",
    "apply",
    "exit_code",
)

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_BAD_INPUT = 2

Status = _report.Status


Verdict = _report.Verdict

_ERRORS: Dict[Verdict, Type[_errors.RegularizationError]] = {
    Verdict.MISSING: _errors.MissingRegularizationError,
    Verdict.DOUBLED: _errors.DoubleCountedRegularizationError,
    Verdict.TOO_WEAK: _errors.TooWeakRegularizationError,
    Verdict.MISSCALED: _errors.ReplicaScalingError,
    Verdict.INEFFECTIVE: _errors.IneffectiveRegularizerError,
    Verdict.UNMATCHED: _errors.UnmatchedExclusionError,
}
Finding = _report.FindingKind


def exit_code(report: Optional[_report.RegularizationReport]) -> int:
  """0 when the report is ok, 1 for any verdict, 2 when nothing was checked."""
  if report is None:
    return EXIT_BAD_INPUT
  return EXIT_PROBLEM if _report.verdicts(report) else EXIT_OK


def _addable(report: _report.RegularizationReport, found: Sequence[Verdict]
             ) -> Tuple[_report.RegularizationTerm, ...]:
  """The terms ``"add"`` adds: all left out, when that is all that is wrong.

  () when ``"add"`` cannot fix the update: another verdict, or a term that
  is blocked or unreachable rather than missing (adding it again would not
  reach the weights).
  """
  if tuple(found) != (Verdict.MISSING,) or not report.missing:
    return ()
  addable = tuple(t for t in report.missing if t.status is Status.MISSING)
  return addable if len(addable) == len(report.missing) else ()


def message(report: _report.RegularizationReport, found: Sequence[Verdict],
            caller: str, opt_out: _report.OptOut = _report.OPT_OUT,
            routes: Optional[Callable[[], str]] = None) -> str:
  """Every verdict's message, in order, as one text."""
  parts = []
  for verdict in found:
    if verdict is Verdict.MISSING:
      if report.missing:
        parts.append(report.missing_message(
            caller, opt_out, addable=bool(_addable(report, found))))
      else:
        parts.append(report.findings_message(
            caller, Finding.ALL_LEFT_OUT, opt_out))
    elif verdict is Verdict.DOUBLED:
      if report.overcounted:
        parts.append(report.overcounted_message(
            caller, opt_out, routes() if routes is not None else ""))
      if report.found(Finding.DECAYED_TWICE):
        parts.append(report.findings_message(
            caller, Finding.DECAYED_TWICE, opt_out))
    elif verdict is Verdict.TOO_WEAK:
      parts.append(report.undercounted_message(caller, opt_out))
    elif verdict is Verdict.MISSCALED:
      parts.append(report.replica_message(caller, opt_out))
    elif verdict is Verdict.UNMATCHED:
      parts.append(report.findings_message(caller, Finding.UNMATCHED,
                                           opt_out))
    else:
      parts.append(report.ineffective_message(caller, opt_out))
  return "\n\n".join(parts)


def apply(report: _report.RegularizationReport, on_missing: str, caller: str,
          *, opt_out: _report.OptOut = _report.OPT_OUT,
          routes: Optional[Callable[[], str]] = None
          ) -> Tuple[_report.RegularizationTerm, ...]:
  """Acts on ``report`` as ``on_missing`` says.

  Args:
    report: the update's report, with coefficients where they matter.
    on_missing: ``"raise"``, ``"add"`` or ``"warn"`` (see the module doc).
    caller: the function to name in messages.
    opt_out: how the caller's user changes the policy, for messages.
    routes: builds the text naming where each doubled term is added; called
      only for that message.

  Returns:
    The terms the caller must add (``"add"``, only terms left out); () when
    there is nothing to add.

  Raises:
    RegularizationError: the subclass of the first verdict, unless
      ``on_missing="warn"``.
  """
  found = _report.verdicts(report)
  if not found:
    return ()
  if on_missing == "add":
    addable = _addable(report, found)
    if addable:
      # A warning, so it shows by default: the caller asked for a change
      # to what trains, and should see that it happened. The first 3 terms.
      shown = ", ".join(repr(t.name) for t in addable[:3])
      more = len(addable) - 3
      logging.warning(
          "[safetrain] %s: added %d regularization loss%s that the loss %r "
          "left out (on_missing=\"add\"): %s%s", caller, len(addable),
          "" if len(addable) == 1 else "es", report.loss_name, shown,
          f" and {more} more" if more > 0 else "")
      return addable
  if on_missing == "warn":
    text = message(report, found, caller,
                   dataclasses.replace(opt_out, warned=True), routes)
    warnings.warn(text, _errors.MissingRegularizationWarning,
                  stacklevel=_user_stacklevel())
    return ()
  raise _ERRORS[found[0]](message(report, found, caller, opt_out, routes),
                          report, found)


# Where the libraries a training step passes through live: a warning names
# the first frame outside them, the user's line that built the update.
_LIBRARIES = ("safetrain", "tensorflow", "tf_slim", "keras", "tf_keras")


def _library_dirs() -> Tuple[str, ...]:
  dirs = [sysconfig.get_paths()["stdlib"]]
  for name in _LIBRARIES:
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if path:
      dirs.append(os.path.dirname(path))
  return tuple(os.path.join(d, "") for d in dirs)


def _user_stacklevel() -> int:
  """``warnings.warn``'s stacklevel, from ``apply``, of the user's frame.

  The first frame not in safetrain, TensorFlow, Keras, tf_slim or the
  standard library, nor code AutoGraph generated from a traced function
  (whose caller, the traced call, is named instead); the outermost frame if
  every one is.
  """
  dirs = _library_dirs()
  frame = sys._getframe(1)  # pylint: disable=protected-access (apply's)
  level = 1
  while frame.f_back is not None:
    name = frame.f_code.co_filename
    if not (name.startswith(dirs) or name.startswith("<frozen ") or
            "__autograph_generated_file" in name):
      break
    frame = frame.f_back
    level += 1
  return level
