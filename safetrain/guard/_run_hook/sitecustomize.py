"""safetrain run: the guard and the tf_slim fixes in the command's process.

Python imports this module at start-up because ``safetrain run`` puts its
directory first on ``PYTHONPATH``. It imports nothing heavy: ``import
safetrain`` loads neither TensorFlow nor tf_slim, and two modules are
awaited with ``safetrain.compat._on_import``, so a process that never uses
TensorFlow never loads it.

* ``tensorflow.python.training.optimizer``: once it has loaded, a small
  trampoline on ``Optimizer.compute_gradients`` installs the real guard
  (importing safetrain's guard, by then safely after TensorFlow) on the
  first call.
* ``tf_slim``: once it has loaded, ``safetrain.compat._compat.apply()``
  puts back the TensorFlow names tf_slim 1.1.0 needs and fixes its bugs,
  before the script builds anything with it (``tfexample_decoder`` and the
  streaming metrics otherwise fail at graph build on TF 2.16 and later).
  ``import safetrain`` itself arranges that; this hook marks it.

Then it runs the ``sitecustomize`` it shadows, if any. It tells
``safetrain run`` how far it got by creating marker files
(``loaded-PID``, ``guarded-PID``, ``slim-fixed-PID``) in the directory named
by ``MARKERS_ENV``. A Python that cannot import safetrain says so on its
stderr and runs unchecked; ``safetrain run`` then warns that nothing was
checked.
"""

import importlib.machinery
import importlib.util
import os
import sys

# Keep this equal to safetrain.guard._install.ON_MISSING_ENV (a test does):
# importing that module would import TensorFlow.
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
  from safetrain.compat import _compat  # pylint: disable=g-import-not-at-top
  _compat.apply()  # Done already if safetrain's own hook ran first.
  mark("slim-fixed")


def watch(on_missing: str) -> None:
  """Awaits the TF1 optimizer module and tf_slim in this process."""
  from safetrain.compat import _on_import  # pylint: disable=g-import-not-at-top

  def guard(module) -> None:
    patch(module.Optimizer, on_missing)
    mark("guarded")

  _on_import.after_import(OPTIMIZER_MODULE, guard)
  _on_import.after_import(SLIM_MODULE, fix_slim)


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
    try:
      watch(on_missing)
    except ImportError as e:
      sys.stderr.write(f"safetrain run: {sys.executable} cannot import "
                       f"safetrain ({e}); this process runs unchecked. "
                       "Install safetrain where the script runs.\n")
    else:
      mark("loaded")
  _chain()


if __name__ == "sitecustomize":
  main()
