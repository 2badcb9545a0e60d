"""MirroredStrategy in graph mode: regularization counted once, by update.

Two logical CPU devices must be configured before TensorFlow initializes its
context, which pytest's process has long done; so the graphs are built and
run in a child process (this file, run with ``--child``) that writes what it
measured as JSON, and the tests here judge it.

The child trains one step from the same start with each construction of the
per-replica loss that users write, with a ``tf.compat.v1.train`` optimizer
(which sums the replicas' gradients) and the slim train op built per
replica, and one single-device step on the whole batch as the reference.
"""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
import pytest

BATCH = 8
REPLICAS = 2
WEIGHT_DECAY = 0.1
LEARNING_RATE = 0.5
CHILD_TIMEOUT_S = 150

# Each construction: how a replica builds the loss its train op minimizes.
#   safe: safetrain.replica_total_loss(data) with create_train_op_safe.
#   total_per_replica: data + regularization, unscaled (gradients summed, so
#     the data counts N times and weight decay is N times too weak).
#   scaled_total: (data + regularization) / N, as Keras scales losses
#     (regularization reaches the weights from the first replica only, so
#     it counts 1/N).
#   left_out: data / N.
CONSTRUCTIONS = ("safe", "total_per_replica", "scaled_total", "left_out")


def _child(out_path):
  """Runs in a fresh process: builds, trains one step, writes JSON."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  cpu, = tf.config.list_physical_devices("CPU")
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS)
  tf.compat.v1.disable_eager_execution()
  import tf_slim  # pylint: disable=g-import-not-at-top
  import safetrain  # pylint: disable=g-import-not-at-top
  import safetrain.slim as slim  # pylint: disable=g-import-not-at-top

  rng = np.random.RandomState(0)
  images = rng.rand(BATCH, 6, 6, 1).astype(np.float32)
  labels = np.arange(BATCH) % 3

  def model(images, labels):
    with slim.arg_scope(
        [slim.conv2d, slim.fully_connected],
        weights_regularizer=slim.l2_regularizer(WEIGHT_DECAY),
        weights_initializer=tf.compat.v1.glorot_uniform_initializer(seed=1)):
      net = slim.conv2d(images, 3, [3, 3], scope="conv1")
      net = slim.flatten(net)
      logits = slim.fully_connected(net, 3, activation_fn=None,
                                    scope="logits")
    return tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)

  def sgd():
    return tf.compat.v1.train.GradientDescentOptimizer(LEARNING_RATE)

  def regularization():
    return tf.add_n(tf.compat.v1.losses.get_regularization_losses())

  def replica_train_op(construction, data, record):
    n = tf.distribute.get_replica_context().num_replicas_in_sync
    if construction == "safe":
      loss = safetrain.replica_total_loss(data)
    elif construction == "total_per_replica":
      loss = data + regularization()
    elif construction == "scaled_total":
      loss = (data + regularization()) / n
    else:
      loss = data / n
    try:
      safetrain.assert_counted_once(loss)
      record.setdefault("assert_counted_once", []).append("ok")
    except safetrain.Error as error:
      record.setdefault("assert_counted_once", []).append(
          type(error).__name__)
      record.setdefault("assert_message", str(error))
    try:
      train_op = safetrain.create_train_op_safe(loss, sgd())
      record.setdefault("safe_train_op", "built")
    except safetrain.Error as error:
      record["safe_train_op"] = type(error).__name__
      train_op = tf_slim.learning.create_train_op(loss, sgd())
    coefficients = safetrain.check_regularization(
        loss, expected_coefficient=1.0).terms
    record.setdefault("coefficients", []).append(
        [t.coefficient for t in coefficients])
    return train_op

  def values(session, variables):
    return {v.op.name: session.run(v).tolist() for v in variables}

  results = {}
  for construction in CONSTRUCTIONS:
    record = {}
    with tf.Graph().as_default():
      strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
      with strategy.scope():
        tf.compat.v1.train.get_or_create_global_step()
        def per_replica(data, strategy=strategy):
          return strategy.experimental_distribute_values_from_function(
              lambda context: tf.constant(np.split(data, REPLICAS)[
                  context.replica_id_in_sync_group]))
        result = strategy.run(
            lambda x, y: replica_train_op(construction, model(x, y), record),
            args=(per_replica(images), per_replica(labels)))
        train_ops = strategy.experimental_local_results(result)
      variables = tf.compat.v1.trainable_variables()
      with tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        session.run(train_ops)
        record["weights"] = values(session, variables)
        # Every replica's copy holds the same value after the step.
        record["copies_agree"] = all(
            np.allclose(session.run(c), session.run(v.values[0]))
            for v in variables for c in v.values)
        record["global_step"] = int(session.run(
            tf.compat.v1.train.get_global_step()))
    results[construction] = record

  # A data loss that already includes the regularization is refused.
  with tf.Graph().as_default():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    refused = []

    def doubled(x, y):
      try:
        safetrain.replica_total_loss(
            model(x, y) + regularization())
      except safetrain.DoubleCountedRegularizationError as error:
        refused.append([t.name for t in error.overcounted])
      return tf.constant(0.0)

    with strategy.scope():
      strategy.run(doubled, args=(tf.constant(images), tf.constant(labels)))
    results["doubled_refused"] = refused

  with tf.Graph().as_default():
    loss = safetrain.total_loss_from(
        model(tf.constant(images), tf.constant(labels)))
    train_op = safetrain.create_train_op_safe(loss, sgd())
    with tf.compat.v1.Session() as session:
      session.run(tf.compat.v1.global_variables_initializer())
      session.run(train_op)
      results["reference"] = {
          "weights": values(session, tf.compat.v1.trainable_variables())}
  results["devices"] = [d.name for d in tf.config.list_logical_devices("CPU")]
  with open(out_path, "w") as f:
    json.dump(results, f)


def _differs(got, want):
  return any(not np.allclose(got[n], want[n], rtol=1e-5, atol=1e-6)
             for n in want)


@pytest.mark.slow
class MirroredStrategyTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    with tempfile.TemporaryDirectory() as directory:
      out = os.path.join(directory, "results.json")
      env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
      completed = subprocess.run(
          [sys.executable, os.path.abspath(__file__), "--child", out],
          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, env=env,
          check=False)
      if completed.returncode != 0:
        raise AssertionError("the MirroredStrategy child failed:\n" +
                             completed.stderr[-5000:])
      with open(out) as f:
        cls.results = json.load(f)

  def test_two_logical_devices(self):
    self.assertLen(self.results["devices"], REPLICAS)

  def test_safe_replica_step_equals_single_device_step(self):
    safe = self.results["safe"]
    reference = self.results["reference"]["weights"]
    self.assertEqual(sorted(safe["weights"]), sorted(reference))
    for name in reference:
      np.testing.assert_allclose(safe["weights"][name], reference[name],
                                 rtol=1e-5, atol=1e-6, err_msg=name)
    self.assertTrue(safe["copies_agree"])
    self.assertEqual(safe["global_step"], 1)
    # The safe train op was built in each replica, each loss counts the
    # regularization once.
    self.assertEqual(safe["safe_train_op"], "built")
    self.assertEqual(safe["coefficients"], [[1.0, 1.0]] * REPLICAS)

  def test_wrong_constructions_update_differently(self):
    reference = self.results["reference"]["weights"]
    for construction in ("total_per_replica", "scaled_total", "left_out"):
      record = self.results[construction]
      self.assertTrue(record["copies_agree"], construction)
      self.assertTrue(_differs(record["weights"], reference), construction)

  def test_safe_train_op_refuses_left_out_regularization(self):
    self.assertEqual(self.results["left_out"]["safe_train_op"],
                     "MissingRegularizationError")

  def test_assert_counted_once_refuses_every_wrong_construction(self):
    self.assertEqual(
        {c: self.results[c]["assert_counted_once"] for c in CONSTRUCTIONS},
        {"safe": ["ok"] * REPLICAS,
         "total_per_replica": ["ReplicaScalingError"] * REPLICAS,
         "scaled_total": ["ReplicaScalingError"] * REPLICAS,
         "left_out": ["MissingRegularizationError"] * REPLICAS})

  def test_replica_scaling_messages_say_what_and_the_fix(self):
    self.assertRegex(
        self.results["total_per_replica"]["assert_message"],
        r"(?s)^\[safetrain\] assert_counted_once: 2 replicas sum their "
        r"gradients.*data loss x1 \(expected x0.5\): "
        r"'sparse_softmax_cross_entropy_loss/value:0'.*"
        r"safetrain.replica_total_loss\(data_loss\)")
    self.assertRegex(
        self.results["scaled_total"]["assert_message"],
        r"(?s)regularization x0.5 \(expected x1\): "
        r"'conv1/kernel/Regularizer/l2_regularizer:0'")

  def test_scaled_total_shows_coefficient_one_over_n(self):
    self.assertEqual(self.results["scaled_total"]["coefficients"],
                     [[1.0 / REPLICAS] * 2] * REPLICAS)

  def test_regularization_already_in_the_data_loss_is_refused(self):
    self.assertEqual(self.results["doubled_refused"], [
        ["conv1/kernel/Regularizer/l2_regularizer:0",
         "logits/kernel/Regularizer/l2_regularizer:0"]] * REPLICAS)


if __name__ == "__main__":
  if len(sys.argv) == 3 and sys.argv[1] == "--child":
    _child(sys.argv[2])
  else:
    absltest.main()
