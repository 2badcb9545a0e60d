"""``import safetrain`` is light; tf_slim is still fixed whenever it loads.

The public names load on first use (PEP 562), so importing safetrain loads
neither TensorFlow nor tf_slim, and the fixes of ``compat._compat`` apply
when tf_slim is imported (``compat._on_import``, tested in
``on_import_test``), or at once if it already is. Each claim about a
process runs in a fresh interpreter.
"""

import ast
import os
import subprocess
import sys
import textwrap

from absl.testing import absltest
import pytest

import safetrain

_INIT = os.path.join(os.path.dirname(safetrain.__file__), "__init__.py")


def _python(code: str) -> str:
  """Runs ``code`` in a fresh interpreter; its last stdout line."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300,
                          env=env, check=False)
  if result.returncode != 0:
    raise AssertionError(result.stderr[-3000:])
  return result.stdout.strip().splitlines()[-1]


class ImportTest(absltest.TestCase):

  def test_import_loads_neither_tensorflow_nor_tf_slim(self):
    self.assertEqual(_python("""
        import os, sys
        before = dict(os.environ)
        import safetrain
        heavy = [m for m in ("tensorflow", "tf_slim", "tf_keras", "numpy")
                 if m in sys.modules]
        print(heavy, dict(os.environ) == before, safetrain.__version__)
        """), f"[] True {safetrain.__version__}")

  def test_every_name_of_all_and_no_other(self):
    with open(_INIT, encoding="utf-8") as f:
      tree = ast.parse(f.read())
    typed, origins = {}, {}
    for node in ast.walk(tree):
      if isinstance(node, ast.If) and getattr(node.test, "id",
                                              "") == "TYPE_CHECKING":
        for imported in node.body:
          for alias in imported.names:
            typed[alias.name] = imported.module
      if (isinstance(node, ast.Assign) and
          getattr(node.targets[0], "id", "") == "_ORIGINS"):
        origins = ast.literal_eval(node.value)
    # What type checkers see, what loads, and what is public: the same.
    self.assertEqual(typed, origins)
    self.assertEqual(sorted(origins), list(safetrain.__all__))
    self.assertIn("__version__", dir(safetrain))
    self.assertContainsSubset(safetrain.__all__, dir(safetrain))
    with self.assertRaisesRegex(AttributeError, "no attribute 'nope'"):
      _ = safetrain.nope

  @pytest.mark.slow
  def test_tf_slim_is_fixed_when_imported_after_safetrain(self):
    self.assertEqual(_python("""
        import safetrain
        from safetrain.compat import _compat
        before = _compat._applied
        import tf_slim
        from tensorflow.python.ops import control_flow_ops
        print(before, _compat._applied, hasattr(control_flow_ops, "case"))
        """), "False True True")

  @pytest.mark.slow
  def test_tf_slim_is_fixed_at_once_when_imported_before(self):
    self.assertEqual(_python("""
        import tf_slim
        from tensorflow.python.ops import control_flow_ops
        before = hasattr(control_flow_ops, "case")
        import safetrain
        from safetrain.compat import _on_import
        print(before, hasattr(control_flow_ops, "case"),
              _on_import.watching())
        """), "False True {}")


if __name__ == "__main__":
  absltest.main()
