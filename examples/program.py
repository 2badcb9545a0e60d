"""What every example program does around its ``main``.

* ``import_tensorflow_quietly()``, called before anything imports
  TensorFlow: its C++ INFO and WARNING lines (CPU features, CUDA probing on
  a CPU machine, absl's notice that logging is not initialized) are dropped;
  errors still show.
* ``quiet_deprecations()``: the deprecation notices that TensorFlow, tf_keras
  and tf_slim print for their own TF1 layers (``layer.apply``,
  ``tf.layers.*``, ``_colocate_with``, ...) are dropped, by message and
  source; any other warning still shows.
* ``run(main)``: ``app.run`` with both, each log line printed once (absl's
  handler only, see ``_one_handler``), and a flag parser that turns a bad
  flag or flag combination into exit status 2 (bad usage) with one line,
  where absl's own parser exits 1.

These act only in the example programs' own processes, when run as
programs: importing an example module (as the tests do) changes nothing, and
the library never silences anything in a user's process.
"""

import logging
import os
import sys
import warnings
from typing import Callable, List, Sequence

from absl import app
from absl import flags

# Light: importing safetrain loads neither TensorFlow nor tf_slim.
from safetrain.compat import _quiet

EXIT_USAGE = 2

# Python warnings the TF1 layers raise on every model build.
_DEPRECATION_MESSAGES = (
    r"`layer\.apply` is deprecated",
    r"`tf\.layers\.\w+` is deprecated",
)
# TensorFlow logs its @deprecated notices from this module.
_DEPRECATION_MODULE = "deprecation"


def import_tensorflow_quietly() -> None:
  """Imports TensorFlow without its C++ INFO and WARNING startup lines.

  Sets TF_CPP_MIN_LOG_LEVEL=2 unless the user set it; lines that ignore it
  (absl's, CUDA probing; the ``safetrain`` command's list) are filtered out
  of the import's stderr.
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  with _quiet.filtered_stderr(_quiet.STARTUP_NOISE):
    import tensorflow  # pylint: disable=g-import-not-at-top
    tensorflow.config.list_physical_devices()  # The CUDA probe, now.


class _NoDeprecations(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    return record.module != _DEPRECATION_MODULE


def quiet_deprecations() -> None:
  """Drops the third-party deprecation notices listed above."""
  for message in _DEPRECATION_MESSAGES:
    warnings.filterwarnings("ignore", message=message, category=UserWarning)
  logging.getLogger("tensorflow").addFilter(_NoDeprecations())


def parse_flags(argv: Sequence[str]) -> List[str]:
  """absl's parsing; a bad flag or combination exits 2 with one line."""
  try:
    return flags.FLAGS(list(argv))
  except flags.Error as error:
    program = os.path.basename(argv[0]) if argv else "program"
    sys.stderr.write(f"{program}: {error}\nTry '{program} --help'.\n")
    sys.exit(EXIT_USAGE)


def _one_handler() -> None:
  """TensorFlow's log lines go out through absl's handler only.

  TensorFlow gives its logger a handler of its own when it first logs while
  the root logger has none, as when an example imports it before
  ``app.run`` installs absl's handler there. Each line then came out twice,
  ``INFO:tensorflow:Graph was finalized.`` and absl's ``I... Graph was
  finalized.``. Called inside ``app.run``, after absl's handler is on the
  root logger, so TensorFlow adds none later.
  """
  tensorflow_logger = logging.getLogger("tensorflow")
  for handler in list(tensorflow_logger.handlers):
    tensorflow_logger.removeHandler(handler)


def run(main: Callable[[List[str]], int]) -> None:
  """``app.run(main)``, quiet, each log line once, exit 2 on bad flags."""
  quiet_deprecations()

  def main_with_one_handler(argv: List[str]) -> int:
    _one_handler()
    return main(argv)

  app.run(main_with_one_handler, flags_parser=parse_flags)
