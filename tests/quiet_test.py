"""Tests for safetrain.compat._quiet: which process is the safetrain command."""

import os
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized

from safetrain.compat import _quiet

_PY = "/usr/bin/python3"


class IsTheCommandTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("console_script", "/venv/bin/safetrain", [_PY, "/venv/bin/safetrain"]),
      ("dash_m", "-m", [_PY, "-m", "safetrain", "audit", "x"]),
      ("dash_m_cli", "-m", [_PY, "-m", "safetrain.cli", "--help"]),
      ("joined_dash_m", "-m", [_PY, "-msafetrain"]),
      # -X and -W take a value ("dev", "error"), not a script's name.
      ("options_first", "-m", [_PY, "-X", "dev", "-W", "error", "-u", "-m",
                               "safetrain", "run", "--", "python", "t.py"]),
  )
  def test_the_command(self, argv0, orig_argv):
    self.assertTrue(_quiet.is_the_command(argv0, orig_argv))

  @parameterized.named_parameters(
      ("user_script", "train.py", [_PY, "train.py", "-m", "safetrain"]),
      ("script_named_like_us", "safetrain.py", [_PY, "safetrain.py"]),
      ("pytest", "-m", [_PY, "-m", "pytest", "tests", "-m", "safetrain"]),
      ("command_string", "-c", [_PY, "-c", "import safetrain", "-m",
                                "safetrain"]),
      ("other_module_of_ours", "-m", [_PY, "-m", "safetrain.slim"]),
      ("stdin", "-", [_PY, "-", "-m", "safetrain"]),
      ("interactive", "", [_PY]),
      ("no_orig_argv", "", None),
  )
  def test_not_the_command(self, argv0, orig_argv):
    self.assertFalse(_quiet.is_the_command(argv0, orig_argv))


class ApplyTest(absltest.TestCase):

  def _apply(self, environ, argv0, orig_argv):
    with mock.patch.dict("os.environ", environ, clear=True), \
        mock.patch.object(_quiet, "_set_here", False), \
        mock.patch("sys.argv", [argv0]), \
        mock.patch("sys.orig_argv", orig_argv, create=True):
      _quiet.apply()
      return dict(os.environ), _quiet.child_environ(os.environ)

  def test_the_command_quiets_info_and_its_child_gets_the_users_environ(self):
    mine, child = self._apply({"HOME": "/h"}, "/venv/bin/safetrain",
                              [_PY, "/venv/bin/safetrain"])
    self.assertEqual(mine, {"HOME": "/h", _quiet.ENV: "1"})
    self.assertEqual(child, {"HOME": "/h"})

  def test_a_users_setting_is_kept_for_both(self):
    for value in ("0", "1", "3"):
      mine, child = self._apply({_quiet.ENV: value}, "/venv/bin/safetrain",
                                [_PY, "/venv/bin/safetrain"])
      self.assertEqual(mine, {_quiet.ENV: value})
      self.assertEqual(child, {_quiet.ENV: value})

  def test_a_library_import_changes_nothing(self):
    mine, child = self._apply({"HOME": "/h"}, "train.py", [_PY, "train.py"])
    self.assertEqual(mine, {"HOME": "/h"})
    self.assertEqual(child, {"HOME": "/h"})


if __name__ == "__main__":
  absltest.main()
