"""Tests for safetrain.compat._on_import: an action once a module has loaded.

Small packages written for each test stand in for tf_slim and TensorFlow's
optimizer module, which ``import safetrain`` and ``safetrain run``'s hook
await this way (``lazy_import_test``, ``run_hook_test``).
"""

import importlib
import os
import shutil
import sys
import tempfile

from absl.testing import absltest

from safetrain.compat import _on_import


class AfterImportTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root)
    sys.path.insert(0, self.root)
    self.addCleanup(sys.path.remove, self.root)
    self.name = f"st_lazy_{os.getpid()}_{self._testMethodName}"
    package = os.path.join(self.root, self.name)
    os.makedirs(package)
    for path in (os.path.join(package, "__init__.py"),
                 os.path.join(package, "sub.py")):
      with open(path, "w") as f:
        f.write("LOADED = True\n")
    self.addCleanup(self._forget)
    self.seen = []

  def _forget(self):
    for name in list(sys.modules):
      if name == self.name or name.startswith(self.name + "."):
        del sys.modules[name]

  def _action(self, module):
    self.seen.append((module.__name__, module.LOADED))

  def test_runs_after_the_modules_code_and_steps_aside(self):
    _on_import.after_import(self.name + ".sub", self._action)
    self.assertEqual(_on_import.watching().get(self.name + ".sub"), 1)
    __import__(self.name)
    self.assertEqual(self.seen, [])  # Only the awaited module counts.
    __import__(self.name + ".sub")
    self.assertEqual(self.seen, [(self.name + ".sub", True)])
    self.assertNotIn(self.name + ".sub", _on_import.watching())

  def test_runs_at_once_when_already_imported(self):
    __import__(self.name)
    _on_import.after_import(self.name, self._action)
    self.assertEqual(self.seen, [(self.name, True)])
    self.assertNotIn(self.name, _on_import.watching())

  def test_keeps_waiting_for_a_module_not_there_yet(self):
    missing = self.name + "_later"
    _on_import.after_import(missing, self._action)
    with self.assertRaises(ImportError):
      __import__(missing)
    self.assertEqual(_on_import.watching().get(missing), 1)
    with open(os.path.join(self.root, missing + ".py"), "w") as f:
      f.write("LOADED = True\n")
    self.addCleanup(sys.modules.pop, missing, None)
    importlib.invalidate_caches()
    __import__(missing)
    self.assertEqual(self.seen, [(missing, True)])


if __name__ == "__main__":
  absltest.main()
