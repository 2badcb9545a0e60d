"""The ``safetrain`` command's own process: no TensorFlow C++ start-up lines.

Loading TensorFlow prints INFO lines from C++ to stderr (the CPU features the
build does not use, oneDNN), before any Python logging exists. Only
``TF_CPP_MIN_LOG_LEVEL``, set before TensorFlow loads, turns them off, and
``safetrain/__init__.py`` loads TensorFlow, so ``apply()`` runs first thing
there. A library must not change its user's environment: ``apply()`` sets the
variable only when this process is the ``safetrain`` command itself (the
console script, ``python -m safetrain`` or ``python -m safetrain.cli``) and
the variable is unset, and ``child_environ()`` gives the command that
``safetrain run`` starts the environment the user had.
"""

import os
import sys
from typing import Dict, Mapping, Optional, Sequence

ENV = "TF_CPP_MIN_LOG_LEVEL"
_WARNINGS_AND_ERRORS = "1"  # Leaves out INFO only.
_MODULES = frozenset({"safetrain", "safetrain.cli", "safetrain.__main__"})

_set_here = False


def is_the_command(argv0: str, orig_argv: Optional[Sequence[str]]) -> bool:
  """Whether a process with these ``sys.argv[0]``/``sys.orig_argv`` is ours.

  Args:
    argv0: ``sys.argv[0]``: the console script's path when it runs; "-m"
      while ``python -m`` imports the package, before the module runs.
    orig_argv: the interpreter's own command line (``sys.orig_argv``).

  Returns:
    True for the ``safetrain`` console script and for ``python [OPTIONS] -m
    safetrain[.cli]``; False for anything else (a user's script, pytest, an
    interpreter that imports safetrain).
  """
  if os.path.basename(argv0) == "safetrain":
    return True
  args = list(orig_argv or ())[1:]
  i = 0
  while i < len(args):
    arg = args[i]
    if arg == "-m":
      return i + 1 < len(args) and args[i + 1] in _MODULES
    if arg.startswith("-m"):
      return arg[2:] in _MODULES
    if arg.startswith("-c") or not arg.startswith("-") or arg == "-":
      return False  # A command string, a script or stdin: not our module.
    i += 2 if arg in ("-X", "-W") else 1  # These two take a value.
  return False


def apply() -> None:
  """Quiets TensorFlow's C++ INFO lines in the ``safetrain`` command only."""
  global _set_here
  if ENV not in os.environ and is_the_command(
      sys.argv[0] if sys.argv else "", getattr(sys, "orig_argv", None)):
    os.environ[ENV] = _WARNINGS_AND_ERRORS
    _set_here = True


def child_environ(environ: Mapping[str, str]) -> Dict[str, str]:
  """``environ`` as the user had it: without the variable ``apply`` set."""
  env = dict(environ)
  if _set_here and env.get(ENV) == _WARNINGS_AND_ERRORS:
    del env[ENV]
  return env
