"""Tests for safetrain.compat._quiet: which process quiets TensorFlow."""

import os
from unittest import mock

from absl.testing import absltest

from safetrain.compat import _quiet


class TensorflowQuietedTest(absltest.TestCase):

  def _quieted(self, environ, enabled):
    with mock.patch.dict("os.environ", environ, clear=True), \
        mock.patch.object(_quiet, "_set_here", False), \
        mock.patch.object(_quiet, "_enabled", enabled):
      with _quiet.tensorflow_quieted():
        mine = dict(os.environ)
      return mine, _quiet.child_environ(os.environ)

  def test_the_command_quiets_info_and_its_child_gets_the_users_environ(self):
    mine, child = self._quieted({"HOME": "/h"}, enabled=True)
    self.assertEqual(mine, {"HOME": "/h", _quiet.ENV: "1"})
    self.assertEqual(child, {"HOME": "/h"})

  def test_a_users_setting_is_kept_for_both(self):
    for value in ("0", "1", "3"):
      mine, child = self._quieted({_quiet.ENV: value}, enabled=True)
      self.assertEqual(mine, {_quiet.ENV: value})
      self.assertEqual(child, {_quiet.ENV: value})

  def test_outside_the_command_nothing_changes(self):
    # A test calling cli.main, or a program that imports the cli.
    mine, child = self._quieted({"HOME": "/h"}, enabled=False)
    self.assertEqual(mine, {"HOME": "/h"})
    self.assertEqual(child, {"HOME": "/h"})


if __name__ == "__main__":
  absltest.main()
