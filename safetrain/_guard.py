"""The guard: the regularization check on every TF1 optimizer's gradients.

Every TF1 training path computes gradients through
``tf.compat.v1.train.Optimizer.compute_gradients``: slim's
``create_train_op``, ``optimizer.minimize``, ``SyncReplicasOptimizer`` (which
calls its inner optimizer's) and hand-written loops. The guard replaces that
method with one that first passes the loss to ``_train.enforce``, the same
policy ``create_train_op_safe`` applies, and then computes the gradients of
the loss ``enforce`` returns (with ``on_missing="add"``, the loss plus the
regularization it left out).

Three ways in:

* ``guard_optimizers(on_missing=...)``, a context manager;
* ``SafeOptimizer(optimizer, on_missing=...)``, a wrapper for code that
  builds its optimizer itself;
* ``safetrain run -- python train.py ...``, which installs the guard in the
  script's process through ``SITECUSTOMIZE`` (see ``cli``).

A check in progress turns further checks off for the same thread, so an
optimizer wrapping another (``SafeOptimizer`` around a guarded one,
``SyncReplicasOptimizer``) is checked once.
"""

import contextlib
import threading
from typing import Any, Iterator, List, Optional

from absl import logging
import tensorflow as tf

from safetrain import _args
from safetrain import _errors
from safetrain import _tape
from safetrain import _train

__all__ = (
    "ON_MISSING_ENV",
    "SITECUSTOMIZE",
    "SafeOptimizer",
    "guard_optimizers",
    "install",
    "installed",
)

# The environment variable through which ``safetrain run`` tells the
# script's process which policy to install.
ON_MISSING_ENV = "SAFETRAIN_RUN_ON_MISSING"

_Optimizer = tf.compat.v1.train.Optimizer
_ORIGINAL = "_safetrain_original"

_lock = threading.Lock()
_policies: List[str] = []  # Innermost last; empty when not installed.
_local = threading.local()


def _checking() -> bool:
  return getattr(_local, "depth", 0) > 0


@contextlib.contextmanager
def _check_scope() -> Iterator[None]:
  _local.depth = getattr(_local, "depth", 0) + 1
  try:
    yield
  finally:
    _local.depth -= 1


def _flat_var_list(var_list) -> Optional[List[Any]]:
  if var_list is None:
    return None
  return list(tf.nest.flatten(var_list))


def _checked_loss(loss, var_list, on_missing: str, caller: str):
  """``enforce``'s loss, or ``loss`` itself when it cannot be checked.

  A loss TensorFlow accepts but the check does not (a vector loss, which TF1
  optimizers sum) must still train as before: the guard logs that it could
  not check it instead of failing a working script.
  """
  if callable(loss) or tf.executing_eagerly():
    return loss  # Eager TF1 optimizers take a callable; nothing to check.
  try:
    return _train.enforce(loss, var_list, on_missing, caller)
  except (_errors.InvalidArgumentError, _errors.InvalidArgumentTypeError,
          _errors.EagerModeError) as e:
    logging.warning("safetrain guard: regularization not checked: %s", e)
    return loss


def _guarded_compute_gradients(self, loss, var_list=None, *args, **kwargs):
  """``Optimizer.compute_gradients``, after the regularization check."""
  original = _Optimizer.__dict__["compute_gradients"]
  original = getattr(original, _ORIGINAL, original)
  if not _policies or _checking():
    return original(self, loss, var_list, *args, **kwargs)
  with _check_scope():
    var_list = _flat_var_list(var_list)
    loss = _checked_loss(loss, var_list, _policies[-1],
                         f"{type(self).__name__}.compute_gradients")
    return original(self, loss, var_list, *args, **kwargs)


def _patch() -> None:
  current = _Optimizer.__dict__["compute_gradients"]
  if getattr(current, "_safetrain_guard", False):
    return
  guard = _make_guard(getattr(current, _ORIGINAL, current))
  _Optimizer.compute_gradients = guard
  _tape.patch()  # TF2: tf.GradientTape and Keras optimizers (see _tape).


def _make_guard(original):
  def compute_gradients(self, loss, var_list=None, *args, **kwargs):
    return _guarded_compute_gradients(self, loss, var_list, *args, **kwargs)
  compute_gradients.__doc__ = original.__doc__
  compute_gradients.__wrapped__ = original
  setattr(compute_gradients, _ORIGINAL, original)
  compute_gradients._safetrain_guard = True  # pylint: disable=protected-access
  return compute_gradients


def _unpatch() -> None:
  current = _Optimizer.__dict__["compute_gradients"]
  _Optimizer.compute_gradients = getattr(current, _ORIGINAL, current)
  _tape.unpatch()


def install(on_missing: str = "raise") -> None:
  """Guards every optimizer for the rest of the process (``safetrain run``)."""
  _args.on_missing(on_missing, "safetrain.install_guard")
  with _lock:
    _policies.insert(0, on_missing)
    _patch()


def installed() -> Optional[str]:
  """The policy the guard applies now, or None when it is not installed."""
  return _policies[-1] if _policies else None


@contextlib.contextmanager
def guard_optimizers(on_missing: str = "raise") -> Iterator[None]:
  """Checks the loss of every TF1 optimizer's gradients inside the block.

  Inside the block, ``tf.compat.v1.train.Optimizer.compute_gradients`` (and
  so ``minimize``, slim's ``create_train_op`` and ``SyncReplicasOptimizer``)
  first checks that the loss includes the regularization of the variables
  it differentiates, as ``create_train_op_safe`` does:

      with safetrain.guard_optimizers():
        train_op = tf_slim.learning.create_train_op(loss, optimizer)

  Args:
    on_missing: ``"raise"`` raises ``MissingRegularizationError``; ``"add"``
      computes the gradients of the loss plus the left-out terms; ``"warn"``
      warns (``MissingRegularizationWarning``) and leaves the loss as is.

  Yields:
    None. Blocks nest; the innermost policy applies.
  """
  _args.on_missing(on_missing, "guard_optimizers")
  with _lock:
    _policies.append(on_missing)
    _patch()
  try:
    yield
  finally:
    with _lock:
      # Remove this block's entry, the last one equal to it.
      for i in range(len(_policies) - 1, -1, -1):
        if _policies[i] == on_missing:
          del _policies[i]
          break
      if not _policies:
        _unpatch()


class SafeOptimizer(_Optimizer):
  """A TF1 optimizer that checks the loss before computing gradients.

      optimizer = safetrain.SafeOptimizer(
          tf.compat.v1.train.MomentumOptimizer(0.01, 0.9))
      train_op = optimizer.minimize(loss)   # raises if loss drops decay

  Everything else (``apply_gradients``, slots, variables) is the wrapped
  optimizer's.
  """

  def __init__(self, optimizer: Any, *, on_missing: str = "raise"):
    caller = "SafeOptimizer"
    _args.optimizer(optimizer, caller)
    _args.on_missing(on_missing, caller)
    super().__init__(use_locking=False,
                     name=getattr(optimizer, "get_name", lambda: "Safe")())
    self._optimizer = optimizer
    self._on_missing = on_missing

  @property
  def optimizer(self) -> Any:
    """The wrapped optimizer."""
    return self._optimizer

  def compute_gradients(self, loss, var_list=None, *args, **kwargs):
    if _checking():
      return self._optimizer.compute_gradients(loss, var_list, *args,
                                               **kwargs)
    with _check_scope():
      var_list = _flat_var_list(var_list)
      loss = _checked_loss(loss, var_list, self._on_missing,
                           "SafeOptimizer.compute_gradients")
      return self._optimizer.compute_gradients(loss, var_list, *args,
                                               **kwargs)

  def apply_gradients(self, grads_and_vars, global_step=None, name=None):
    return self._optimizer.apply_gradients(grads_and_vars,
                                           global_step=global_step, name=name)

  def get_slot(self, var, name):
    return self._optimizer.get_slot(var, name)

  def get_slot_names(self):
    return self._optimizer.get_slot_names()

  def variables(self):
    return self._optimizer.variables()


# Written by ``safetrain run`` as sitecustomize.py into a directory put first
# on the script's PYTHONPATH. It imports nothing heavy: it waits for
# TensorFlow's optimizer module to load, then puts a small trampoline on
# ``Optimizer.compute_gradients`` that installs the real guard (importing
# safetrain, by then safely after TensorFlow) on the first call. Then it runs
# the sitecustomize it shadows, if any.
SITECUSTOMIZE = r'''"""safetrain run: guards Optimizer.compute_gradients in this process."""
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

_TARGET = "tensorflow.python.training.optimizer"
_HERE = os.path.dirname(os.path.abspath(__file__))


def _mark(event):
  """Tells safetrain run that this process got this far."""
  try:
    open(os.path.join(_HERE, "%s-%d" % (event, os.getpid())), "w").close()
  except OSError:
    pass


def _install(on_missing, restore):
  """Installs the real guard, once, on the first guarded call."""
  for cls, name, original in restore:
    setattr(cls, name, original)
  try:
    from safetrain import _guard
  except ImportError as e:
    raise ImportError(
        "safetrain run: cannot import safetrain in %s (%s); install it in "
        "the environment that runs the script." % (sys.executable, e))
  if _guard.installed() is None:
    _guard.install(on_missing)


def _patch(optimizer_class, on_missing):
  # TF1 optimizers' compute_gradients; TF2 loops enter a tf.GradientTape.
  tape_class = sys.modules["tensorflow.python.eager.backprop"].GradientTape
  restore = [(optimizer_class, "compute_gradients",
              optimizer_class.__dict__["compute_gradients"]),
             (tape_class, "__enter__", tape_class.__dict__["__enter__"])]

  def compute_gradients(self, *args, **kwargs):
    _install(on_missing, restore)
    return optimizer_class.compute_gradients(self, *args, **kwargs)

  def enter(self):
    _install(on_missing, restore)
    return tape_class.__enter__(self)

  compute_gradients._safetrain_original = restore[0][2]
  enter._safetrain_original = restore[1][2]
  optimizer_class.compute_gradients = compute_gradients
  tape_class.__enter__ = enter


class _Hook(importlib.abc.MetaPathFinder):

  def __init__(self, on_missing):
    self.on_missing = on_missing

  def find_spec(self, name, path, target=None):
    if name != _TARGET:
      return None
    sys.meta_path.remove(self)
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or spec.loader is None:
      sys.stderr.write("safetrain run: could not guard %s\n" % name)
      return spec
    exec_module = spec.loader.exec_module
    on_missing = self.on_missing

    def exec_and_guard(module):
      exec_module(module)
      _patch(module.Optimizer, on_missing)
      _mark("guarded")

    spec.loader.exec_module = exec_and_guard
    return spec


def _chain():
  """Runs the sitecustomize this one shadows."""
  for entry in sys.path:
    if os.path.abspath(entry or os.curdir) == _HERE:
      continue
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", [entry])
    if spec is not None and spec.loader is not None:
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      return


_ON_MISSING = os.environ.get("@ENV@")
if _ON_MISSING:
  sys.meta_path.insert(0, _Hook(_ON_MISSING))
  _mark("loaded")
_chain()
'''.replace("@ENV@", ON_MISSING_ENV)
