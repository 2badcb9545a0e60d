"""safetrain run: the guard and the tf_slim fixes in the command's process.

Python imports this module at start-up because ``safetrain run`` puts its
directory first on ``PYTHONPATH``. It imports nothing heavy: a finder on
``sys.meta_path`` waits for two modules, so a process that never uses
TensorFlow never loads it.

* ``tensorflow.python.training.optimizer``: once it has loaded, a small
  trampoline on ``Optimizer.compute_gradients`` installs the real guard
  (importing safetrain, by then safely after TensorFlow) on the first call.
* ``tf_slim``: once it has loaded, ``safetrain.compat._compat.apply()``
  puts back the TensorFlow names tf_slim 1.1.0 needs and fixes its bugs,
  before the script builds anything with it (``tfexample_decoder`` and the
  streaming metrics otherwise fail at graph build on TF 2.16 and later).

Then it runs the ``sitecustomize`` it shadows, if any. It tells
``safetrain run`` how far it got by creating marker files
(``loaded-PID``, ``guarded-PID``, ``slim-fixed-PID``) in the directory named
by ``MARKERS_ENV``.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

# Keep these equal to safetrain.tf1._guard.ON_MISSING_ENV and cli's markers
# variable; this module cannot import safetrain (that imports TensorFlow).
ON_MISSING_ENV = "SAFETRAIN_RUN_ON_MISSING"
MARKERS_ENV = "SAFETRAIN_RUN_MARKERS"
OPTIMIZER_MODULE = "tensorflow.python.training.optimizer"
SLIM_MODULE = "tf_slim"
_HERE = os.path.dirname(os.path.abspath(__file__))


def mark(event: str) -> None:
  """Tells safetrain run that this process got this far."""
  directory = os.environ.get(MARKERS_ENV)
  if not directory:
    return
  try:
    open(os.path.join(directory, f"{event}-{os.getpid()}"), "w").close()
  except OSError:
    pass


def _install(on_missing: str, restore) -> None:
  """Puts the trampolines' originals back and installs the real guard once."""
  for cls, name, original in restore:
    setattr(cls, name, original)
  try:
    from safetrain.guard import _install  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"safetrain run: cannot import safetrain in {sys.executable} ({e}); "
        "install it in the environment that runs the script.") from e
  if _install.installed() is None:
    _install.install(on_missing)


def patch(optimizer_class, on_missing: str) -> None:
  """Installs the real guard on the first guarded call.

  TF1 loops reach ``Optimizer.compute_gradients``; TF2 loops (Keras ``fit``
  and custom loops) enter a ``tf.GradientTape`` first. Whichever comes first
  installs the guard, which then covers both.
  """
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

  setattr(compute_gradients, "_safetrain_original", restore[0][2])  # noqa: B010
  setattr(enter, "_safetrain_original", restore[1][2])  # noqa: B010
  optimizer_class.compute_gradients = compute_gradients
  tape_class.__enter__ = enter


def fix_slim(unused_module) -> None:
  """Applies safetrain's tf_slim fixes once tf_slim has loaded."""
  try:
    from safetrain.compat import _compat  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    sys.stderr.write(f"safetrain run: tf_slim left unfixed: cannot import "
                     f"safetrain ({e}).\n")
    return
  _compat.apply()
  mark("slim-fixed")


class _Hook(importlib.abc.MetaPathFinder):
  """Runs an action after each watched module has loaded, then steps aside."""

  def __init__(self, on_missing: str):
    self._actions = {
        OPTIMIZER_MODULE: self._guard,
        SLIM_MODULE: fix_slim,
    }
    self._on_missing = on_missing

  def _guard(self, module) -> None:
    patch(module.Optimizer, self._on_missing)
    mark("guarded")

  def find_spec(self, name, path, target=None):
    del target
    action = self._actions.pop(name, None)
    if action is None:
      return None
    if not self._actions:
      sys.meta_path.remove(self)
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or spec.loader is None:
      sys.stderr.write(f"safetrain run: could not hook {name}\n")
      return spec
    exec_module = spec.loader.exec_module

    def exec_and_act(module):
      exec_module(module)
      action(module)

    spec.loader.exec_module = exec_and_act
    return spec


def _chain() -> None:
  """Runs the sitecustomize this one shadows."""
  for entry in sys.path:
    if os.path.abspath(entry or os.curdir) == _HERE:
      continue
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", [entry])
    if spec is not None and spec.loader is not None:
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      return


def main() -> None:
  on_missing = os.environ.get(ON_MISSING_ENV)
  if on_missing:
    sys.meta_path.insert(0, _Hook(on_missing))
    mark("loaded")
  _chain()


if __name__ == "sitecustomize":
  main()
