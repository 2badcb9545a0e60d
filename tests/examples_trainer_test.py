"""Tests for examples/train_image_classifier.py and eval_image_classifier.py.

Graph pieces through their functions, the loop in-process on tiny LeNets,
and the real program twice: one plain run, and a run killed with SIGKILL and
started again.
"""

import contextlib
import dataclasses
import io
import os
import re
import signal
import subprocess
import sys
import time
from unittest import mock

from absl import flags
from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import safetrain
from examples import convert_image_folders
from examples import datasets
from examples import eval_image_classifier
from examples import program
from examples import train_image_classifier as trainer

import helpers

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TRAINER = os.path.join(_REPO, "examples", "train_image_classifier.py")


def tiny_config(train_dir: str, **overrides) -> trainer.TrainConfig:
  """A LeNet small enough to train a few steps in well under a second."""
  values = dict(train_dir=train_dir, model_name="lenet", depth_multiplier=0.25,
                weight_decay=1e-3, batch_size=8, max_number_of_steps=4,
                log_every_n_steps=2, save_summaries_secs=1,
                save_interval_secs=600, learning_rate=0.05, seed=0)
  values.update(overrides)
  return trainer.TrainConfig(**values)


def make_tempdir(test: absltest.TestCase) -> str:
  return helpers.make_tempdir(test, prefix="safetrain_trainer_")


parse_flags = helpers.parse_flags


def weights(checkpoint: str, name: str) -> np.ndarray:
  return tf.train.load_checkpoint(checkpoint).get_tensor(name)


def summary_tags(train_dir: str) -> set:
  tags = set()
  for path in tf.io.gfile.glob(os.path.join(train_dir, "events.out.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(value.tag for value in event.summary.value)
  return tags


class GraphTest(parameterized.TestCase):
  """build_train_op and its helpers, one graph per test, no training loop."""

  def _build(self, config: trainer.TrainConfig) -> trainer.TrainPieces:
    images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3])
    labels = tf.compat.v1.placeholder(tf.int64, [None])
    return trainer.build_train_op(config, images, labels, num_classes=10)

  @parameterized.parameters(
      ("sgd", tf.compat.v1.train.GradientDescentOptimizer),
      ("momentum", tf.compat.v1.train.MomentumOptimizer),
      ("rmsprop", tf.compat.v1.train.RMSPropOptimizer),
      ("adam", tf.compat.v1.train.AdamOptimizer))
  def test_optimizers(self, name, cls):
    self.assertIsInstance(trainer.configure_optimizer(name, 0.1), cls)

  def test_unknown_optimizer(self):
    with self.assertRaisesRegex(ValueError, "Unknown optimizer 'lbfgs'"):
      trainer.configure_optimizer("lbfgs", 0.1)

  @parameterized.parameters(
      ("LeNet/fc4/weights", ["LeNet/fc4"], True),
      ("LeNet/fc4/weights:0", ["LeNet/fc4/"], True),
      ("LeNet/fc4", ["LeNet/fc4"], True),
      ("LeNet/fc4/weights", ["LeNet/fc"], False),  # '/' boundary.
      ("LeNet/fc4/weights", ["conv1", " LeNet/fc4 "], True),
      ("LeNet/fc4/weights", ["", " "], False))
  def test_in_scopes(self, name, scopes, expected):
    self.assertEqual(trainer.in_scopes(name, scopes), expected)

  def test_add_includes_every_term(self):
    with tf.Graph().as_default():
      pieces = self._build(tiny_config("/unused", on_missing="add"))
      self.assertTrue(pieces.report.ok)
      self.assertEqual(pieces.report.count(safetrain.Status.INCLUDED), 4)
      self.assertEqual(pieces.train_op.dtype, tf.float32)

  def test_raise_names_what_is_left_out(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(safetrain.MissingRegularizationError,
                                  "leaves out 4 of 4 regularization") as e:
        self._build(tiny_config("/unused", on_missing="raise"))
    self.assertLen(e.exception.report.missing, 4)

  def test_warn_trains_without_weight_decay(self):
    with tf.Graph().as_default():
      with self.assertWarns(safetrain.MissingRegularizationWarning):
        pieces = self._build(tiny_config("/unused", on_missing="warn"))
      self.assertLen(pieces.report.missing, 4)

  def test_no_weight_decay_nothing_to_raise(self):
    with tf.Graph().as_default():
      pieces = self._build(tiny_config("/unused", weight_decay=0.0,
                                       on_missing="raise"))
      self.assertEmpty(pieces.report.terms)

  def test_frozen_layers_regularization_not_required(self):
    with tf.Graph().as_default():
      # Only the head is trained: only its term is required.
      with self.assertRaisesRegex(safetrain.MissingRegularizationError,
                                  "leaves out 1 of 4") as e:
        self._build(tiny_config("/unused", trainable_scopes=("LeNet/fc4",),
                                on_missing="raise"))
      self.assertEqual([t.variables for t in e.exception.report.missing],
                       [("LeNet/fc4/weights",)])
    with tf.Graph().as_default():
      pieces = self._build(tiny_config("/unused",
                                       trainable_scopes=("LeNet/fc4",)))
      self.assertTrue(pieces.report.ok)
      status = {t.variables[0]: t.status for t in pieces.report.terms}
      self.assertEqual(status["LeNet/fc4/weights"], safetrain.Status.INCLUDED)
      self.assertEqual(status["LeNet/conv1/weights"], safetrain.Status.FROZEN)

  def test_trainable_scopes_must_match(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(ValueError, "matches no trainable"):
        self._build(tiny_config("/unused", trainable_scopes=("Nope",)))


class TrainLoopTest(absltest.TestCase):
  """train() and evaluate() in-process, on tiny LeNets."""

  def test_trains_logs_summarizes_saves_and_resumes(self):
    train_dir = os.path.join(make_tempdir(self), "train")
    with self.assertLogs("absl", level="INFO") as logs:
      self.assertEqual(trainer.train(tiny_config(train_dir)), 4)
    text = "\n".join(logs.output)
    self.assertRegex(
        text, r"step 4/4: task loss \d+\.\d+, regularization loss \d+\.\d+, "
        r"total loss \d+\.\d+ \(\d+\.\d steps/sec, \d\d:\d\d:\d\d left\)")
    self.assertIn("includes 4 of 4 regularization losses", text)
    self.assertNotIn("Resuming", text)
    self.assertEqual(trainer.checkpoint_step(
        tf.train.latest_checkpoint(train_dir)), 4)
    self.assertContainsSubset(
        ["losses/task_loss", "losses/regularization_loss",
         "losses/total_loss", "learning_rate"], summary_tags(train_dir))
    # Started again with a higher limit, it continues from step 4.
    with self.assertLogs("absl", level="INFO") as logs:
      self.assertEqual(trainer.train(tiny_config(train_dir,
                                                 max_number_of_steps=6)), 6)
    self.assertRegex("\n".join(logs.output),
                     r"Resuming from .*model\.ckpt-4 at global step 4")
    # Total loss = task loss + regularization loss (on_missing="add").
    match = re.search(r"task loss ([\d.]+), regularization loss ([\d.]+), "
                      r"total loss ([\d.]+)", "\n".join(logs.output))
    task, regularization, total = map(float, match.groups())
    self.assertGreater(regularization, 0)
    self.assertAlmostEqual(task + regularization, total, places=3)

  def test_warm_start_fine_tunes_the_head_only(self):
    root = make_tempdir(self)
    first = os.path.join(root, "first")
    trainer.train(tiny_config(first, max_number_of_steps=3))
    second = os.path.join(root, "second")
    trainer.train(tiny_config(
        second, max_number_of_steps=2, checkpoint_path=first,
        checkpoint_exclude_scopes=("LeNet/fc4",),
        trainable_scopes=("LeNet/fc4",)))
    a = tf.train.latest_checkpoint(first)
    b = tf.train.latest_checkpoint(second)
    np.testing.assert_array_equal(weights(a, "LeNet/conv1/weights"),
                                  weights(b, "LeNet/conv1/weights"))
    np.testing.assert_array_equal(weights(a, "LeNet/fc3/biases"),
                                  weights(b, "LeNet/fc3/biases"))
    self.assertFalse(np.array_equal(weights(a, "LeNet/fc4/weights"),
                                    weights(b, "LeNet/fc4/weights")))
    self.assertEqual(trainer.checkpoint_step(b), 2)

    result = eval_image_classifier.evaluate(
        first, model_name="lenet", depth_multiplier=0.25)
    self.assertEqual((result.total, result.global_step), (360, 3))
    self.assertBetween(result.accuracy, 0.0, 1.0)
    self.assertEqual(result.correct, round(result.accuracy * 360))
    self.assertRegex(result.to_text(), r"accuracy \d\.\d{4} \(\d+/360\) on "
                     r"digits/validation, global step 3")

  def test_missing_checkpoint_path(self):
    root = make_tempdir(self)
    with self.assertRaisesRegex(datasets.DataError, "--checkpoint_path "
                                ".* is a directory with no checkpoint"):
      trainer.train(tiny_config(os.path.join(root, "train"),
                                checkpoint_path=root))
    with self.assertRaisesRegex(datasets.DataError, "No checkpoint in"):
      eval_image_classifier.evaluate(root, model_name="lenet")

  def test_tfrecords_and_bad_labels(self):
    root = make_tempdir(self)
    images = os.path.join(root, "images")
    for label, name in enumerate(("a", "b", "c")):
      os.makedirs(os.path.join(images, name))
      for i in range(3):
        pixels = np.full((20, 24, 3), 60 * label + i, np.uint8)
        Image.fromarray(pixels).save(os.path.join(images, name, f"{i}.png"))
    records = os.path.join(root, "records")
    convert_image_folders.convert(images, records, validation_fraction=0.0)
    train_dir = os.path.join(root, "train")
    self.assertEqual(trainer.train(tiny_config(
        train_dir, dataset_dir=records, max_number_of_steps=2,
        train_image_size=16)), 2)
    result = eval_image_classifier.evaluate(
        train_dir, model_name="lenet", depth_multiplier=0.25,
        dataset_dir=records, split="train", image_size=16, batch_size=4)
    self.assertEqual((result.total, result.dataset), (9, "tfrecord/train"))
    # Labels 0..2 with --num_classes=2: refused before anything is built.
    bad_dir = os.path.join(root, "bad")
    with self.assertRaisesRegex(datasets.DataError,
                                r"Label 2 out of range .*--num_classes is 2"):
      trainer.train(tiny_config(bad_dir, dataset_dir=records, num_classes=2))
    self.assertFalse(os.path.exists(bad_dir))

  def test_missing_dataset_dir_fails_before_training(self):
    root = make_tempdir(self)
    train_dir = os.path.join(root, "train")
    with self.assertRaisesRegex(datasets.DataError, "does not exist"):
      trainer.train(tiny_config(train_dir,
                                dataset_dir=os.path.join(root, "none")))
    self.assertFalse(os.path.exists(train_dir))


class MainTest(parameterized.TestCase):
  """main(argv) on parsed flags: exit codes."""

  def _main(self, *args: str) -> int:
    argv = ["train_image_classifier.py", *args]
    parse_flags(self, argv)
    return trainer.main(argv[:1])

  def test_config_from_flags(self):
    parse_flags(self, ["prog", "--train_dir=/x", "--model_name=lenet",
                       "--trainable_scopes=LeNet/fc4,LeNet/fc3",
                       "--on_missing=warn", "--optimizer=adam",
                       "--max_number_of_steps=7"])
    config = trainer.config_from_flags()
    self.assertEqual(
        (config.train_dir, config.model_name, config.trainable_scopes,
         config.on_missing, config.optimizer,
         config.max_number_of_steps, config.dataset_split_name),
        ("/x", "lenet", ("LeNet/fc4", "LeNet/fc3"), "warn", "adam", 7,
         "train"))
    self.assertEqual(dataclasses.replace(config, train_dir="/y").train_dir,
                     "/y")

  def test_exit_codes(self):
    root = make_tempdir(self)
    self.assertEqual(self._main(f"--train_dir={root}/a",
                                f"--dataset_dir={root}/missing"), 2)
    self.assertEqual(self._main(f"--train_dir={root}/b", "--model_name=lenet",
                                "--depth_multiplier=0.25",
                                "--weight_decay=0.01",
                                "--on_missing=raise"), 1)


  def test_counted_twice_exits_1(self):
    build = trainer.build_model_loss

    def doubled(*args):  # The task loss plus the regularization, twice.
      model = build(*args)
      twice = 2.0 * tf.add_n(tf.compat.v1.losses.get_regularization_losses())
      return model._replace(task_loss=model.task_loss + twice)

    root = make_tempdir(self)
    with mock.patch.object(trainer, "build_model_loss", doubled):
      with self.assertLogs("absl", level="ERROR") as logs:
        self.assertEqual(self._main(f"--train_dir={root}/c",
                                    "--model_name=lenet",
                                    "--depth_multiplier=0.25"), 1)
    self.assertIn("more often than once", logs.output[0])

  def test_help_shows_every_flag_the_trainer_reads(self):
    key_flags = {f.name for f in flags.FLAGS.get_key_flags_for_module(
        trainer.__name__)}
    self.assertContainsSubset(
        {"train_dir", "model_name", "batch_size", "optimizer", "seed",
         "num_clones", "ps_hosts", "sync_replicas", "weight_decay",
         "on_missing"}, key_flags)
    self.assertNotIn("steps_per_run", key_flags)  # The experiment's.


class ParseTimeTest(parameterized.TestCase):
  """Flag combinations that cannot work: exit 2 when parsed, one line."""

  @parameterized.named_parameters(
      ("aggregate_without_sync", ["--replicas_to_aggregate=2"],
       r"--replicas_to_aggregate needs --sync_replicas"),
      ("sync_without_cluster", ["--sync_replicas"],
       r"--sync_replicas needs a cluster"),
      ("job_without_cluster", ["--job_name=worker"],
       r"--job_name=worker needs a cluster"),
      ("no_ps", ["--worker_hosts=127.0.0.1:2", "--job_name=worker"],
       r"no parameter servers"),
      ("task_out_of_range", ["--ps_hosts=127.0.0.1:1",
                             "--worker_hosts=127.0.0.1:2",
                             "--job_name=worker", "--task_index=1"],
       r"task index 1 is out of range"),
      ("tfrecord_without_dir", ["--dataset_name=tfrecord"],
       r"--dataset_name=tfrecord needs --dataset_dir"),
      ("digits_with_dir", ["--dataset_name=digits", "--dataset_dir=/x"],
       r"--dataset_dir is for --dataset_name=tfrecord"),
      ("digits_classes", ["--num_classes=5"],
       r"the digits have 10 classes"),
      ("zero_clones", ["--num_clones=0"], r"num_clones"),
  )
  def test_bad_combination_exits_2(self, args, pattern):
    parse_flags(self, ["prog"])  # Restores the flags after the test.
    flags.FLAGS.unparse_flags()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
      with self.assertRaises(SystemExit) as exit_:
        program.parse_flags(["train_image_classifier.py", *args])
    self.assertEqual(exit_.exception.code, 2)
    self.assertRegex(err.getvalue(), r"^train_image_classifier\.py: .*" +
                     pattern)
    self.assertRegex(err.getvalue(),
                     r"\nTry 'train_image_classifier\.py --help'\.\n$")

  def test_good_combination_parses(self):
    parse_flags(self, ["prog"])
    flags.FLAGS.unparse_flags()
    argv = program.parse_flags([
        "prog", "--ps_hosts=127.0.0.1:1", "--worker_hosts=127.0.0.1:2",
        "--job_name=worker", "--sync_replicas", "--replicas_to_aggregate=1",
        "--num_clones=2", "--batch_size=3"])
    self.assertEqual(argv, ["prog"])
    self.assertEqual(trainer.config_from_flags().batch_size, 3)


class FlagStateTest(absltest.TestCase):

  def test_parse_flags_restores_the_global_state(self):
    was_parsed = flags.FLAGS.is_parsed()
    inner = absltest.TestCase("run")  # Its cleanups run when we say.
    parse_flags(inner, ["prog", "--model_name=vgg_16"])
    self.assertEqual(flags.FLAGS.model_name, "vgg_16")
    inner.doCleanups()
    self.assertEqual(flags.FLAGS.is_parsed(), was_parsed)
    self.assertEqual(flags.FLAGS["model_name"].value, "mobilenet_v2")


class EvalMainTest(absltest.TestCase):

  def test_no_checkpoint_exit_code(self):
    argv = ["eval_image_classifier.py", f"--train_dir={make_tempdir(self)}"]
    parse_flags(self, argv)
    with self.assertLogs("absl", level="ERROR") as logs:
      self.assertEqual(eval_image_classifier.main(argv[:1]), 2)
    self.assertRegex(logs.output[0], "No checkpoint in")


def run_until(process, condition, timeout: float, what: str):
  """Polls condition() until true; fails if the process ends or times out."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    value = condition()
    if value:
      return value
    if process.poll() is not None:
      raise AssertionError(f"trainer exited ({process.returncode}) before "
                           f"{what}")
    time.sleep(0.1)
  raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.slow
class SubprocessTest(absltest.TestCase):
  """The real program, as a user runs it."""

  def _args(self, train_dir: str, *extra: str):
    return [sys.executable, _TRAINER, f"--train_dir={train_dir}",
            "--model_name=lenet", "--depth_multiplier=0.25", "--batch_size=8",
            "--seed=0", *extra]

  def test_real_run(self):
    train_dir = os.path.join(make_tempdir(self), "train")
    result = subprocess.run(
        self._args(train_dir, "--max_number_of_steps=5",
                   "--log_every_n_steps=5", "--weight_decay=1e-3"),
        capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertRegex(result.stderr, r"step 5/5: task loss .* regularization "
                     r"loss .* total loss .* steps/sec, .* left\)")
    self.assertEqual(result.stdout, "")  # Logs go to stderr.
    self.assertNotRegex(result.stderr, r"(?i)deprecat")
    self.assertNotIn("cpu_feature_guard", result.stderr)
    # Each log line once: through absl's handler, not TensorFlow's own too.
    self.assertEqual(result.stderr.count("Graph was finalized."), 1)
    self.assertNotIn("INFO:tensorflow:", result.stderr)
    self.assertEqual(trainer.checkpoint_step(
        tf.train.latest_checkpoint(train_dir)), 5)

  def test_sigkill_then_restart_resumes(self):
    root = make_tempdir(self)
    train_dir = os.path.join(root, "train")
    # Unbounded, so the test, not the machine's speed, decides when it stops.
    args = self._args(train_dir, "--max_number_of_steps=100000000",
                      "--save_interval_secs=1", "--log_every_n_steps=1")

    def saved_step():
      latest = tf.train.latest_checkpoint(train_dir)
      return latest and trainer.checkpoint_step(latest)

    with open(os.path.join(root, "first.log"), "w") as log:
      first = subprocess.Popen(args, stdout=log, stderr=log)
    try:
      run_until(first, saved_step, 240, "a checkpoint after step 0")
    finally:
      first.send_signal(signal.SIGKILL)
      first.wait()
    self.assertEqual(first.returncode, -signal.SIGKILL)
    state = tf.train.get_checkpoint_state(train_dir)
    for path in state.all_model_checkpoint_paths:  # Every one readable.
      trainer.checkpoint_step(path)
    killed_at = saved_step()
    self.assertGreater(killed_at, 0)

    second_log = os.path.join(root, "second.log")
    with open(second_log, "w") as log:
      second = subprocess.Popen(args, stdout=log, stderr=log)

    def first_step():
      with open(second_log) as f:
        match = re.search(r"\] step (\d+)/", f.read())
      return match and int(match.group(1))

    try:
      step = run_until(second, first_step, 240, "the restarted trainer's "
                       "first step")
      run_until(second, lambda: saved_step() > killed_at, 60,
                "a checkpoint after the resumed step")
    finally:
      second.send_signal(signal.SIGKILL)
      second.wait()
    with open(second_log) as f:
      text = f.read()
    self.assertRegex(text, rf"Resuming from .*model\.ckpt-{killed_at} at "
                     rf"global step {killed_at}\.")
    self.assertEqual(step, killed_at + 1)
    self.assertGreater(saved_step(), killed_at)


if __name__ == "__main__":
  absltest.main()
