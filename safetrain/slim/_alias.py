"""Every ``tf_slim.X`` module imports as ``safetrain.slim.X``.

A user migrates by text substitution, ``tf_slim`` -> ``safetrain.slim``, so
``import safetrain.slim.nets`` and ``from safetrain.slim.training import
evaluation`` must work. safetrain has its own files only for the modules
whose functions it replaces (``OWN``); for every other name under
``safetrain.slim`` a finder on ``sys.meta_path`` hands out tf_slim's module
itself, the same object, so ``safetrain.slim.nets is tf_slim.nets``.
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

PREFIX = "safetrain.slim."
# The modules with files of their own: they hold the replaced functions.
OWN = frozenset({
    "safetrain.slim.learning",
    "safetrain.slim.losses",
    "safetrain.slim.losses.loss_ops",
    "safetrain.slim.training",
    "safetrain.slim.training.training",
    "safetrain.slim._alias",
})


def target(name: str) -> str:
  """``safetrain.slim.X`` -> ``tf_slim.X``."""
  return "tf_slim." + name[len(PREFIX):]


class _Loader(importlib.abc.Loader):
  """Loads tf_slim's module and leaves it exactly as it was."""

  def __init__(self, target_name: str):
    self._target = target_name
    self._spec = None

  def create_module(self, spec):
    module = importlib.import_module(self._target)
    self._spec = module.__spec__
    return module

  def exec_module(self, module):
    # The import system set __spec__ to the alias's spec: give tf_slim's back.
    module.__spec__ = self._spec


class _Finder(importlib.abc.MetaPathFinder):

  def find_spec(self, fullname, path, target_module=None):
    del path, target_module
    if not fullname.startswith(PREFIX) or fullname in OWN:
      return None
    try:
      spec = importlib.util.find_spec(target(fullname))
    except (ImportError, ValueError):
      return None
    if spec is None:
      return None
    return importlib.machinery.ModuleSpec(
        fullname, _Loader(spec.name),
        is_package=spec.submodule_search_locations is not None)


def install() -> None:
  """Puts the finder first on ``sys.meta_path``, once."""
  if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
