"""The ``safetrain`` command's own stderr: no TensorFlow start-up lines.

Loading TensorFlow prints INFO lines from C++ to stderr (the CPU features the
build does not use, oneDNN), before any Python logging exists. Only
``TF_CPP_MIN_LOG_LEVEL``, set before TensorFlow loads, turns them off. So
the command sets it, unless the user did, around the code that loads
TensorFlow (``tensorflow_quieted()``), and only in the command's own
process, after ``cli.run`` called ``enable()``: a library import changes
nothing, and ``child_environ()`` gives the command that ``safetrain run``
starts the environment the user had.
"""

import contextlib
import os
from typing import Dict, Iterator, Mapping

__all__ = ("ENV", "child_environ", "enable", "tensorflow_quieted")

ENV = "TF_CPP_MIN_LOG_LEVEL"
_WARNINGS_AND_ERRORS = "1"  # Leaves out INFO only.

_enabled = False
_set_here = False


def enable() -> None:
  """Marks this process as the ``safetrain`` command (``cli.run`` only)."""
  global _enabled
  _enabled = True


@contextlib.contextmanager
def tensorflow_quieted() -> Iterator[None]:
  """The block's TensorFlow INFO start-up lines left out, in the command only.

  Elsewhere (a test calling ``cli.main``, a library user) it does nothing.
  """
  global _set_here
  if not _enabled:
    yield
    return
  if ENV not in os.environ:
    os.environ[ENV] = _WARNINGS_AND_ERRORS
    _set_here = True
  yield


def child_environ(environ: Mapping[str, str]) -> Dict[str, str]:
  """``environ`` as the user had it: without the variable this module set."""
  env = dict(environ)
  if _set_here and env.get(ENV) == _WARNINGS_AND_ERRORS:
    del env[ENV]
  return env
