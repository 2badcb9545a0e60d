"""The public surface: explicit, sorted, and free of absl flags."""

import os
import subprocess
import sys

from absl.testing import absltest
import pytest

import api_surface
import safetrain

_RECORD = os.path.join(os.path.dirname(__file__), "testdata",
                       "public_api.txt")


class ApiTest(absltest.TestCase):

  def test_all_is_sorted_and_resolves(self):
    self.assertEqual(list(safetrain.__all__), sorted(safetrain.__all__))
    for name in safetrain.__all__:
      self.assertTrue(hasattr(safetrain, name), name)

  def test_surface_matches_the_record(self):
    # Every public name's kind, signature, bases and members, as recorded in
    # testdata/public_api.txt. A change to the surface changes the record in
    # the same commit; a move of the private modules behind it changes
    # nothing here.
    with open(_RECORD, encoding="utf-8") as f:
      recorded = f.read().splitlines()
    self.assertEqual(api_surface.describe(safetrain), recorded)

  def test_errors_subclass_the_builtins_callers_catch(self):
    self.assertTrue(issubclass(safetrain.MissingRegularizationError,
                               ValueError))
    self.assertTrue(issubclass(safetrain.InvalidArgumentTypeError, TypeError))
    self.assertTrue(issubclass(safetrain.EagerModeError, RuntimeError))
    for name in safetrain.__all__:
      value = getattr(safetrain, name)
      if (isinstance(value, type) and issubclass(value, Exception) and
          not issubclass(value, Warning)):
        self.assertTrue(issubclass(value, safetrain.Error), name)

  def test_version_is_a_literal(self):
    self.assertRegex(safetrain.__version__, r"^\d+\.\d+\.\d+$")

  @pytest.mark.slow
  def test_import_defines_no_absl_flags(self):
    code = ("import tensorflow, tf_slim; "  # TensorFlow defines its own.
            "from absl import flags; before = set(flags.FLAGS); "
            "import safetrain, safetrain.slim; "
            "print(sorted(set(flags.FLAGS) - before))")
    result = subprocess.run([sys.executable, "-c", code], check=True,
                            capture_output=True, text=True, timeout=300)
    self.assertEqual(result.stdout.strip().splitlines()[-1], "[]")


if __name__ == "__main__":
  absltest.main()
