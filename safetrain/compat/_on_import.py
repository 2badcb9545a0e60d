"""Runs an action once a module has loaded, whoever imports it and when.

``after_import("tf_slim", action)`` calls ``action(module)`` right after
``tf_slim``'s own code has run, before the importer gets the module; if
``tf_slim`` is already imported, at once. A finder on ``sys.meta_path``
waits for the watched names and steps aside when none is left, so a
process that never imports them pays nothing, and nothing heavy is
imported here.

``import safetrain`` watches ``tf_slim`` this way (the tf_slim fixes of
``_compat``), and so does ``safetrain run``'s process hook, which also
watches TensorFlow's TF1 optimizer module (``guard/_run_hook``).
"""

import importlib.abc
import sys
import threading
import types
from typing import Callable, Dict, List, Optional

__all__ = ("after_import",)

Action = Callable[[types.ModuleType], None]


class _AfterImport(importlib.abc.MetaPathFinder):
  """Wraps the loader of each watched module so its actions run after it."""

  def __init__(self) -> None:
    self._actions: Dict[str, List[Action]] = {}
    self._lock = threading.Lock()

  def watch(self, name: str, action: Action) -> None:
    with self._lock:
      self._actions.setdefault(name, []).append(action)
      if self not in sys.meta_path:
        sys.meta_path.insert(0, self)

  def watching(self) -> Dict[str, int]:
    """How many actions wait for each name (for tests)."""
    with self._lock:
      return {name: len(actions) for name, actions in self._actions.items()}

  def _take(self, name: str) -> Optional[List[Action]]:
    with self._lock:
      actions = self._actions.pop(name, None)
      if not self._actions and self in sys.meta_path:
        sys.meta_path.remove(self)
      return actions

  def _give_back(self, name: str, actions: List[Action]) -> None:
    for action in actions:
      self.watch(name, action)

  def find_spec(self, fullname, path, target=None):
    actions = self._take(fullname)
    if actions is None:
      return None
    spec = self._find_elsewhere(fullname, path, target)
    if spec is None or spec.loader is None or not hasattr(
        spec.loader, "exec_module"):
      self._give_back(fullname, actions)  # Not here (yet): keep waiting.
      return spec
    exec_module = spec.loader.exec_module

    def exec_then_act(module):
      exec_module(module)
      for action in actions:
        action(module)

    spec.loader.exec_module = exec_then_act
    return spec

  def _find_elsewhere(self, fullname, path, target):
    """The spec the other finders would have given, in their order."""
    for finder in list(sys.meta_path):
      find_spec = getattr(finder, "find_spec", None)
      if finder is self or find_spec is None:
        continue
      spec = find_spec(fullname, path, target)
      if spec is not None:
        return spec
    return None


_FINDER = _AfterImport()


def after_import(name: str, action: Action) -> None:
  """Calls ``action(module)`` once ``name`` has loaded (now, if it has).

  Args:
    name: a module's full name, e.g. ``"tf_slim"`` or
      ``"tensorflow.python.training.optimizer"``.
    action: called with the module, once, right after the module's code has
      run, in the importing thread. An exception from it fails that import.
  """
  module = sys.modules.get(name)
  if module is not None:
    action(module)
  else:
    _FINDER.watch(name, action)


def watching() -> Dict[str, int]:
  """The names still awaited, with how many actions wait for each."""
  return _FINDER.watching()
