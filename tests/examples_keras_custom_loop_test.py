"""examples/keras_custom_loop.py: its functions on tiny data, real runs.

The functions run in this process (default strategy); one real subprocess
run uses ``--strategy=mirrored`` (2 logical CPUs), and one is killed with
SIGKILL after its first checkpoint and restarted: it resumes from there.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings

from absl.testing import absltest
import numpy as np

import safetrain
from examples import keras_custom_loop
from safetrain.tf2 import _tape

SCRIPT = keras_custom_loop.__file__


def _tiny():
  rng = np.random.RandomState(0)
  return rng.randint(0, 17, size=(16, 8, 8)), np.arange(16) % 10


def _run(train_dir, *flags_, **kwargs):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = os.pathsep.join(
      [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
  return subprocess.Popen(
      [sys.executable, SCRIPT, f"--train_dir={train_dir}", *flags_],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      **kwargs)


class KerasCustomLoopTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    _tape.clear_cache()
    self.dir = tempfile.mkdtemp()

  def _train(self, **kwargs):
    images, labels = _tiny()
    args = dict(steps=4, batch_size=8, learning_rate=0.1, weight_decay=0.01,
                strategy_name="default", loop="fixed", on_missing="raise",
                checkpoint_every=2, images=images, labels=labels,
                progress=False)
    args.update(kwargs)
    return keras_custom_loop.train(self.dir, **args)

  def test_fixed_trains_checkpoints_and_logs(self):
    result = self._train()
    self.assertEqual(result["step"], 4)
    self.assertGreater(result["regularization"], 0)
    self.assertAlmostEqual(result["total"],
                           result["data"] + result["regularization"],
                           delta=0.05)
    files = os.listdir(self.dir)
    self.assertIn("ckpt-4.index", files)
    self.assertTrue(os.listdir(os.path.join(self.dir, "train")))
    again = self._train(steps=6)  # Resumes from step 4.
    self.assertEqual((again["start"], again["step"]), (4, 6))

  def test_broken_loop_is_stopped(self):
    with self.assertRaises(safetrain.MissingRegularizationError) as ctx:
      self._train(loop="broken")
    self.assertLen(ctx.exception.missing, 2)  # conv and dense kernels

  def test_broken_loop_with_add_trains_like_fixed(self):
    fixed = self._train()
    self.dir = tempfile.mkdtemp()
    added = self._train(loop="broken", on_missing="add")
    self.assertAlmostEqual(fixed["data"], added["data"], places=4)
    self.assertAlmostEqual(fixed["regularization"], added["regularization"],
                           places=6)
    # The control: the same loop left to train without its decay ends
    # elsewhere, so the comparison above can tell.
    self.dir = tempfile.mkdtemp()
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", safetrain.MissingRegularizationWarning)
      dropped = self._train(loop="broken", on_missing="warn")
    self.assertNotAlmostEqual(fixed["regularization"],
                              dropped["regularization"], places=6)

  def test_mirrored_subprocess_and_broken_exit_status(self):
    proc = _run(self.dir, "--steps=6", "--batch_size=16",
                "--strategy=mirrored", "--checkpoint_every=3")
    out, err = proc.communicate(timeout=300)
    self.assertEqual(proc.returncode, 0, err[-3000:])
    self.assertRegex(out, r"step 6: data [\d.]+ regularization [\d.]+")
    self.assertIn("6/6", err)  # tqdm progress
    broken = _run(tempfile.mkdtemp(), "--steps=2", "--loop=broken")
    _, err = broken.communicate(timeout=300)
    self.assertEqual(broken.returncode, 1, err[-3000:])
    self.assertIn("leaves out 2 of 2 regularization losses", err)
    self.assertIn("In this program: --on_missing=add adds them.", err)

  def test_resume_after_sigkill(self):
    proc = _run(self.dir, "--steps=400", "--checkpoint_every=5",
                "--seconds_per_step=0.05")
    deadline = time.time() + 240
    state = os.path.join(self.dir, "checkpoint")  # Written after a save.
    while time.time() < deadline and not os.path.exists(state):
      time.sleep(0.2)
    self.assertTrue(os.path.exists(state))
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    self.assertEqual(proc.returncode, -signal.SIGKILL)
    restarted = _run(self.dir, "--steps=12", "--checkpoint_every=5")
    out, err = restarted.communicate(timeout=300)
    self.assertEqual(restarted.returncode, 0, err[-3000:])
    self.assertRegex(err, r"resumed from step [1-9]\d*")
    self.assertIn("step 12:", out)


if __name__ == "__main__":
  absltest.main()
