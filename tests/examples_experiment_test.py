"""Tests for examples/weight_decay_experiment.py: the seed's bug, measured.

On a tiny LeNet: with plain tf_slim every weight decay trains the very same
weights; with safetrain weight decay acts.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
import pytest

from examples import weight_decay_experiment as experiment

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TINY = experiment.ExperimentConfig(
    model_name="lenet", depth_multiplier=0.25, weight_decays=(0.0, 1e-2, 1e-1),
    train_steps=10, batch_size=16, learning_rate=0.05)


def make_tempdir(test: absltest.TestCase) -> str:
  path = tempfile.mkdtemp(prefix="safetrain_experiment_")
  test.addCleanup(shutil.rmtree, path, ignore_errors=True)
  return path


class ExperimentTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # One tiny experiment (6 runs) shared by the assertions below.
    cls.rows = experiment.run_experiment(_TINY)
    cls.by_key = {(r.mode, r.weight_decay): r for r in cls.rows}

  def assert_same_weights(self, a, b):
    self.assertEqual(sorted(a.weights), sorted(b.weights))
    for name in a.weights:
      np.testing.assert_array_equal(a.weights[name], b.weights[name],
                                    err_msg=name)

  def test_every_mode_and_weight_decay(self):
    self.assertEqual([(r.mode, r.weight_decay) for r in self.rows],
                     [(m, w) for m in ("plain", "safetrain")
                      for w in (0.0, 1e-2, 1e-1)])

  def test_plain_runs_are_identical_across_weight_decays(self):
    """The seed's bug: weight decay has no effect at all."""
    plain = [self.by_key[("plain", w)] for w in _TINY.weight_decays]
    for row in plain[1:]:
      self.assert_same_weights(plain[0], row)
      self.assertEqual(
          (row.train_accuracy, row.validation_accuracy, row.l2_norm,
           row.weights_digest),
          (plain[0].train_accuracy, plain[0].validation_accuracy,
           plain[0].l2_norm, plain[0].weights_digest))
    # The regularization losses exist (and scale with weight decay); they
    # are just never optimized.
    self.assertEqual(plain[0].regularization_loss, 0.0)
    self.assertGreater(plain[1].regularization_loss, 0.0)
    self.assertAlmostEqual(
        plain[2].regularization_loss / plain[1].regularization_loss, 10.0,
        places=4)

  def test_safetrain_runs_differ_and_shrink_weights(self):
    safe = [self.by_key[("safetrain", w)] for w in _TINY.weight_decays]
    # No weight decay, no regularization: the same run as plain.
    self.assert_same_weights(safe[0], self.by_key[("plain", 0.0)])
    self.assertLen({r.weights_digest for r in safe}, 3)
    self.assertGreater(safe[0].l2_norm, safe[1].l2_norm)
    self.assertGreater(safe[1].l2_norm, safe[2].l2_norm)
    # At weight decay 0.1 the weights shrink by over 10% within 10 steps.
    self.assertLess(safe[2].l2_norm, 0.9 * safe[0].l2_norm)
    # And the loss optimized is smaller than plain's unoptimized one.
    self.assertLess(safe[2].regularization_loss,
                    self.by_key[("plain", 1e-1)].regularization_loss)

  def test_regularized_weights_are_the_kernels(self):
    self.assertEqual(experiment.regularized_variable_names(_TINY),
                     ["LeNet/conv1/weights", "LeNet/conv2/weights",
                      "LeNet/fc3/weights", "LeNet/fc4/weights"])
    row = self.by_key[("plain", 0.0)]
    expected = np.sqrt(sum(np.sum(np.square(row.weights[name],
                                            dtype=np.float64))
                           for name in row.weights
                           if name.endswith("/weights")))
    self.assertAlmostEqual(row.l2_norm, expected, places=6)

  def test_table_and_plot(self):
    table = experiment.markdown_table(self.rows).splitlines()
    self.assertLen(table, 2 + 6)
    self.assertRegex(table[0], r"^\| mode \| weight decay \| train accuracy "
                     r"\| validation accuracy \| L2 norm")
    self.assertRegex(table[3], r"^\| plain \| 0\.01 \| \d\.\d{4} \| ")
    output_dir = make_tempdir(self)
    paths = experiment.write_outputs(_TINY, self.rows, output_dir)
    with open(paths["plot"], "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
    with open(paths["table"]) as f:
      self.assertIn("\n".join(table), f.read())


@pytest.mark.slow
class ExperimentProgramTest(absltest.TestCase):

  def test_real_run(self):
    output_dir = os.path.join(make_tempdir(self), "out")
    result = subprocess.run(
        [sys.executable,
         os.path.join(_REPO, "examples", "weight_decay_experiment.py"),
         "--model_name=lenet", "--depth_multiplier=0.25", "--steps_per_run=3",
         "--batch_size=8", "--weight_decays=0,0.1",
         f"--output_dir={output_dir}"],
        capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    rows = [line for line in result.stdout.splitlines()
            if line.startswith("| plain") or line.startswith("| safetrain")]
    self.assertLen(rows, 4)
    digests = [row.split("|")[-2].strip() for row in rows]
    self.assertEqual(digests[0], digests[1])  # plain 0 == plain 0.1
    self.assertNotEqual(digests[2], digests[3])  # safetrain 0 != 0.1
    self.assertIn(f"plot:  {output_dir}/weight_decay_experiment.png",
                  result.stdout)
    self.assertTrue(os.path.exists(
        os.path.join(output_dir, "weight_decay_experiment.png")))
    # The console: one progress bar per run, and no third-party noise.
    stderr = result.stderr.replace("\r", "\n")
    for run in ("plain weight decay 0 ", "plain weight decay 0.1",
                "safetrain weight decay 0 ", "safetrain weight decay 0.1"):
      self.assertRegex(stderr, re.escape(run) + r".*100%\|.*3/3 .*loss "
                       r"\d+\.\d+, train \d\.\d{4}, validation \d\.\d{4}")
    self.assertNotRegex(stderr, r"(?i)deprecat")
    self.assertNotRegex(stderr, r"cpu_feature_guard|absl::InitializeLog")


if __name__ == "__main__":
  absltest.main()
