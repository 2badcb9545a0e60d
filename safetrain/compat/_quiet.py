"""The ``safetrain`` command's own stderr: no TensorFlow start-up lines.

Loading TensorFlow writes lines from C++ to file descriptor 2, before any
Python logging exists. Measured on TensorFlow 2.21 (``python -c "import
tensorflow as tf; tf.config.list_physical_devices()"``):

* ``tensorflow-cpu``: INFO lines (``cpu_feature_guard.cc``: CPU features the
  build does not use). ``TF_CPP_MIN_LOG_LEVEL=1`` turns them off.
* ``tensorflow`` (the CUDA build) on a machine without a GPU, whatever
  ``TF_CPP_MIN_LOG_LEVEL`` says (0 to 3): absl's ``WARNING: All log
  messages before absl::InitializeLog() is called are written to STDERR``
  and ``I... cudart_stub.cc:31] Could not find cuda drivers on your machine,
  GPU will not be used.``, each twice while TensorFlow loads; then, when
  TensorFlow first looks for devices, ``E... cuda_platform.cc:52] failed
  call to cuInit: ...``, which only ``TF_CPP_MIN_LOG_LEVEL=3`` drops, with
  every other error. No environment variable drops the first two.
* ``tensorflow`` 2.15 on the same machine, with ``TF_CPP_MIN_LOG_LEVEL=1``:
  ``E... cuda_dnn.cc:9261] Unable to register cuDNN factory: Attempting to
  register factory for plugin cuDNN when one has already been registered``,
  the same for cuFFT and cuBLAS, and ``W... py_utils.cc:38] TF-TRT Warning:
  Could not find TensorRT``.

So the command sets ``TF_CPP_MIN_LOG_LEVEL=1`` unless the user set it, and
captures file descriptor 2 while it uses TensorFlow, passing on every line
except those start-up lines (``STARTUP_NOISE``). Both happen only in the
command's own process, only after ``cli.run`` called ``enable()``: a
library import changes nothing, and ``child_environ()`` gives the command
that ``safetrain run`` starts the environment the user had (``safetrain
run`` never captures: the command's output is its own).
"""

import contextlib
import os
import re
import sys
import tempfile
from typing import Dict, Iterator, Mapping

__all__ = ("ENV", "STARTUP_NOISE", "child_environ", "enable",
           "filtered_stderr", "tensorflow_quieted")

ENV = "TF_CPP_MIN_LOG_LEVEL"
_WARNINGS_AND_ERRORS = "1"  # Leaves out INFO only.

# The start of a C++ log line, as TensorFlow 2.16 and later (absl) and 2.15
# (its own logger) write it, up to the source file's name.
_PREFIX = (r"(?:[IWEF]\d{4} [\d:.]+ +\d+ "
           r"|\d{4}-\d\d-\d\d [\d:.]+: [IWEF] )(?:\S*/)?")
STARTUP_NOISE = re.compile(
    r"^(?:WARNING: All log messages before absl::InitializeLog\(\) is "
    r"called are written to STDERR$"
    rf"|{_PREFIX}cudart_stub\.cc:\d+\] Could not find cuda drivers on your "
    r"machine, GPU will not be used\."
    rf"|{_PREFIX}cuda_\w+\.cc:\d+\] failed call to cuInit: "
    rf"|{_PREFIX}cuda_\w+\.cc:\d+\] Unable to register cu\w+ factory: "
    r"Attempting to register factory for plugin cu\w+ when one has already "
    r"been registered$"
    rf"|{_PREFIX}py_utils\.cc:\d+\] TF-TRT Warning: Could not find "
    r"TensorRT$)")

_enabled = False
_set_here = False


def enable() -> None:
  """Marks this process as the ``safetrain`` command (``cli.run`` only)."""
  global _enabled
  _enabled = True


@contextlib.contextmanager
def filtered_stderr(noise: "re.Pattern[str]") -> Iterator[None]:
  """Captures file descriptor 2 and passes on the lines ``noise`` misses.

  C++ writes to the descriptor itself, so ``sys.stderr`` cannot filter it.
  What the block writes to stderr comes out when the block ends, in order.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with tempfile.TemporaryFile() as capture:
      os.dup2(capture.fileno(), 2)
      try:
        yield
      finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        capture.seek(0)
        text = capture.read().decode("utf-8", errors="replace")
        kept = "".join(line for line in text.splitlines(True)
                       if not noise.match(line))
        if kept:
          sys.stderr.write(kept)
          sys.stderr.flush()
  finally:
    os.close(saved)


@contextlib.contextmanager
def tensorflow_quieted() -> Iterator[None]:
  """The block's TensorFlow start-up lines left out, in the command only.

  Elsewhere (a test calling ``cli.main``, a library user) it does nothing.
  """
  global _set_here
  if not _enabled:
    yield
    return
  if ENV not in os.environ:
    os.environ[ENV] = _WARNINGS_AND_ERRORS
    _set_here = True
  with filtered_stderr(STARTUP_NOISE):
    yield


def child_environ(environ: Mapping[str, str]) -> Dict[str, str]:
  """``environ`` as the user had it: without the variable this module set."""
  env = dict(environ)
  if _set_here and env.get(ENV) == _WARNINGS_AND_ERRORS:
    del env[ENV]
  return env
