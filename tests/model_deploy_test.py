"""research/slim's model_deploy layout: per-clone gradients, one update.

model_deploy builds one loss per clone (its data loss / N), adds the
regularization to the first clone's loss only, calls
``optimizer.compute_gradients`` separately for each clone, sums the clone
gradients variable by variable and applies the sum once. The sum of the
gradients is the gradient of the sum, so decay counts exactly once: correct
code, which every entry point must accept. Regularization in every clone's
loss (doubled) and in none (missing) must be refused by each of them.

The deployment below is written here after model_deploy's documented
behaviour (``optimize_clones``, ``_gather_clone_loss``,
``_sum_clones_gradients``), not copied.
"""

import os
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import safetrain
import safetrain.slim as safe_slim
from safetrain.tf1 import _train

import deploy_test

# The model, data and constants of the in-graph clone tests.
BATCH = deploy_test.BATCH
LEARNING_RATE = deploy_test.LEARNING_RATE
_data = deploy_test._data  # pylint: disable=protected-access
_model = deploy_test._model  # pylint: disable=protected-access
_FIRST, _EVERY, _NONE = "first", "every", "none"


def _deploy(num_clones: int, regularization: str):
  """model_deploy's layout; returns its train tensor (as train_image_classifier)."""
  images, labels = _data()
  shard = BATCH // num_clones
  optimizer = tf.compat.v1.train.GradientDescentOptimizer(LEARNING_RATE)
  global_step = tf.compat.v1.train.get_or_create_global_step()
  clone_grads, clone_losses = [], []
  for i in range(num_clones):
    scope = f"clone_{i}" if num_clones > 1 else ""
    with tf.compat.v1.name_scope(scope or None):
      with tf.compat.v1.variable_scope(tf.compat.v1.get_variable_scope(),
                                       reuse=True if i else None):
        _model(images[i * shard:(i + 1) * shard],
               labels[i * shard:(i + 1) * shard])
      losses = [t for t in tf.compat.v1.get_collection(
          tf.compat.v1.GraphKeys.LOSSES) if t.name.startswith(scope)]
      loss = tf.add_n(losses, name="clone_loss")
      if num_clones > 1:
        loss = tf.math.divide(loss, 1.0 * num_clones, name="scaled_clone_loss")
      if regularization == _EVERY or (regularization == _FIRST and i == 0):
        loss = tf.add_n([loss, tf.add_n(
            tf.compat.v1.losses.get_regularization_losses(),
            name="regularization_loss")])
      clone_losses.append(loss)
      clone_grads.append(optimizer.compute_gradients(loss))
  summed = []
  for grads_and_vars in zip(*clone_grads):
    variable = grads_and_vars[0][1]
    grads = [g for g, _ in grads_and_vars if g is not None]
    summed.append((tf.add_n(grads, name=variable.op.name + "/sum_grads"),
                   variable))
  apply_op = optimizer.apply_gradients(summed, global_step=global_step)
  total_loss = tf.add_n(clone_losses, name="total_loss")
  with tf.control_dependencies([tf.group(apply_op)]):
    return tf.identity(total_loss, name="train_op")


def _single_device():
  """The reference: one device, the whole batch, regularization once."""
  loss = _model(*_data())
  return safetrain.create_train_op_safe(
      safetrain.total_loss_from(loss),
      tf.compat.v1.train.GradientDescentOptimizer(LEARNING_RATE))


# Trainable variables after one step of the train op built in a graph.
_weights_after_one_step = deploy_test._step  # pylint: disable=protected-access


def _verdict(function):
  try:
    function()
  except safetrain.RegularizationError as e:
    return e.verdicts
  return ()


_EXPECTED = {_FIRST: (), _EVERY: (safetrain.Verdict.DOUBLED,),
             _NONE: (safetrain.Verdict.MISSING,)}


class ModelDeployTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.directory)

  @parameterized.product(num_clones=(1, 2, 4),
                         regularization=(_FIRST, _EVERY, _NONE))
  def test_every_entry_point_judges_the_update(self, num_clones,
                                                regularization):
    if num_clones == 1 and regularization == _EVERY:
      regularization = _FIRST  # With one clone the two are the same graph.
    expected = _EXPECTED[regularization]
    path = os.path.join(self.directory, "model.meta")
    with tf.Graph().as_default():
      train_op = _deploy(num_clones, regularization)
      found = {
          # What safetrain.slim.learning.train checks before its first step.
          "slim.learning.train": _verdict(lambda: _train.check_train_op(
              train_op, "raise", "slim.learning.train")),
      }
      tf.compat.v1.train.export_meta_graph(filename=path)
    with tf.Graph().as_default():
      def guarded():
        with safetrain.guard_optimizers():
          _deploy(num_clones, regularization)
      found["guard"] = _verdict(guarded)
    found["audit"] = safetrain.audit_meta_graph(path).verdicts
    self.assertEqual(found, {name: expected for name in found})

  @parameterized.parameters(1, 2, 4)
  def test_per_clone_gradients_update_as_one_device(self, num_clones):
    expected = _weights_after_one_step(_single_device)

    def guarded_deploy():
      with safetrain.guard_optimizers():
        return _deploy(num_clones, _FIRST)

    deployed = _weights_after_one_step(guarded_deploy)
    self.assertEqual(sorted(deployed), sorted(expected))
    for name in expected:
      np.testing.assert_allclose(deployed[name], expected[name], rtol=1e-5,
                                 atol=1e-6, err_msg=name)
    if num_clones > 1:
      # The wrong layouts train differently, so this comparison can fail.
      for wrong in (_EVERY, _NONE):
        weights = _weights_after_one_step(
            lambda w=wrong: _deploy(num_clones, w))
        self.assertFalse(np.allclose(weights["conv1/weights"],
                                     expected["conv1/weights"], rtol=1e-5,
                                     atol=1e-6), wrong)

  def test_add_under_the_guard_fixes_a_layout_without_regularization(self):
    expected = _weights_after_one_step(_single_device)

    def added():
      with safetrain.guard_optimizers(on_missing="add"):
        return _deploy(2, _NONE)

    weights = _weights_after_one_step(added)
    for name in expected:
      np.testing.assert_allclose(weights[name], expected[name], rtol=1e-5,
                                 atol=1e-6, err_msg=name)

  def test_drop_in_train_runs_the_correct_layout(self):
    logdir = os.path.join(self.directory, "logdir")
    with tf.Graph().as_default():
      train_op = _deploy(2, _FIRST)
      loss = safe_slim.learning.train(
          train_op, logdir, number_of_steps=1, save_summaries_secs=0,
          save_interval_secs=0)
    self.assertTrue(np.isfinite(loss))


if __name__ == "__main__":
  absltest.main()
