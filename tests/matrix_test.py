"""The lanes' requirements files, CI's subset and CONTRIBUTING's table agree."""

import glob
import importlib.util
import os

from absl.testing import absltest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _matrix():
  spec = importlib.util.spec_from_file_location(
      "matrix", os.path.join(_ROOT, ".ci", "matrix.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


matrix = _matrix()


class LanesTest(absltest.TestCase):

  def test_one_requirements_file_per_lane(self):
    files = sorted(os.path.basename(p)[:-len(".txt")] for p in glob.glob(
        os.path.join(_ROOT, "requirements", "lanes", "*.txt")))
    self.assertEqual(files, sorted(matrix.all_lanes()))

  def test_each_lane_installs_one_tensorflow_package(self):
    for lane in matrix.all_lanes():
      pins = matrix.pins(lane)
      minor, _ = matrix.parse_lane(lane)
      tf_version, keras_version, _ = matrix.RELEASES[minor]
      self.assertNotIn("tensorflow", pins, lane)  # The GPU build.
      self.assertEqual(pins["tensorflow-cpu"], tf_version, lane)
      self.assertEqual(pins["tf-keras"], keras_version, lane)
      self.assertEqual(pins["tf-slim"], "1.1.0", lane)
      self.assertTrue(pins["tf-keras"].startswith(minor + "."), lane)

  def test_ci_covers_every_tensorflow_minor_and_python(self):
    ci = [matrix.parse_lane(l) for l in matrix.FULL + matrix.CI_LIBRARY]
    self.assertEqual({m for m, _ in ci}, set(matrix.RELEASES))
    pythons = {p for _, _, ps in matrix.RELEASES.values() for p in ps}
    self.assertEqual({p for _, p in ci}, pythons)
    for lane in matrix.FULL + matrix.CI_LIBRARY:
      self.assertIn(lane, matrix.all_lanes())

  def test_recorded_results_match_their_lanes_pins(self):
    for lane in matrix.all_lanes():
      result = matrix.read_result(lane)
      if result is None:
        continue
      pins = matrix.pins(lane)
      _, python = matrix.parse_lane(lane)
      self.assertTrue(result["python"].startswith(python + "."), lane)
      for package in ("tensorflow-cpu", "tf-keras", "numpy"):
        self.assertEqual(result[package], pins[package], (lane, package))

  def test_contributing_table_is_what_the_matrix_ran(self):
    self.assertEqual(os.path.basename(matrix.TABLE_DOC), "CONTRIBUTING.md")
    text, start, end = matrix.doc_table()
    self.assertEqual(text[start:end].strip(),
                     matrix.table().strip(),
                     "run: python3 .ci/matrix.py write-readme")


if __name__ == "__main__":
  absltest.main()
