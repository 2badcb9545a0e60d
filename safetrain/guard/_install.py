"""Installs the guard: every optimizer update and tape gradient checked.

``install`` (``safetrain run``, for the rest of the process) and
``guard_optimizers`` (for a block) record the policy in
``rule._installed`` and put the checks on TensorFlow's classes: the TF1
optimizer (``tf1._guard``), ``tf.GradientTape`` and Keras optimizers'
decoupled decay (``tf2._tape``, which also patches ``tf2._keras_decay``).
Each check reads the policy from ``rule._installed`` on every call; this
module is the only one that changes it.
"""

import contextlib
from typing import Iterator

from safetrain.rule import _args
from safetrain.rule import _installed
from safetrain.rule import _report
from safetrain.tf1 import _guard
from safetrain.tf2 import _tape

__all__ = ("ON_MISSING_ENV", "guard_optimizers", "install", "installed")

# The environment variable through which ``safetrain run`` tells the
# script's process which policy to install.
ON_MISSING_ENV = "SAFETRAIN_RUN_ON_MISSING"

# How the user of each way in changes the policy, for messages.
_OPT_OUT_RUN = _report.OptOut(
    "run the command as `safetrain run --on_missing={mode} -- ...`")
_OPT_OUT_BLOCK = _report.OptOut('pass on_missing="{mode}" to guard_optimizers')

installed = _installed.installed


def _patch() -> None:
  _guard.patch()  # TF1: tf.compat.v1.train.Optimizer.
  _tape.patch()  # TF2: tf.GradientTape and Keras optimizers.


def _unpatch() -> None:
  _guard.unpatch()
  _tape.unpatch()


def install(on_missing: str = "raise") -> None:
  """Guards every optimizer for the rest of the process (``safetrain run``)."""
  _args.on_missing(on_missing, "safetrain run")
  with _installed.lock:
    _installed.push_first((on_missing, _OPT_OUT_RUN))
    _patch()


@contextlib.contextmanager
def guard_optimizers(on_missing: str = "raise") -> Iterator[None]:
  """Checks every TF1 optimizer's updates inside the block.

  Inside the block, ``tf.compat.v1.train.Optimizer``'s ``apply_gradients``
  (and so ``minimize``, slim's ``create_train_op`` and
  ``SyncReplicasOptimizer``) first checks that the losses whose gradients it
  applies include the regularization of the variables it updates, each
  once, as ``create_train_op_safe`` does:

      with safetrain.guard_optimizers():
        train_op = tf_slim.learning.create_train_op(loss, optimizer)

  Args:
    on_missing: ``"raise"`` raises the ``RegularizationError`` of the
      verdict; ``"add"`` applies the gradients of the loss plus the left-out
      terms; ``"warn"`` warns (``MissingRegularizationWarning``) and applies
      the gradients as given. It governs every verdict (see ``_policy``).

  Yields:
    None. Blocks nest; the innermost policy applies.
  """
  _args.on_missing(on_missing, "guard_optimizers")
  entry = (on_missing, _OPT_OUT_BLOCK)
  with _installed.lock:
    _installed.push(entry)
    _patch()
  try:
    yield
  finally:
    with _installed.lock:
      if _installed.remove(entry):
        _unpatch()
