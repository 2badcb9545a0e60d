"""In-graph clones: regularization counted once, proven by update equivalence.

One synchronous step over N clones with a global batch B must update the
weights exactly as one single-device step with batch B does, regularization
included. Each equivalence test also builds the two wrong constructions
users write (regularization added in every clone's loss, or left out) and
shows that they update the weights differently, so the test can fail.
"""

import re

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tf_slim

import safetrain
import safetrain.slim as slim

import helpers

BATCH = 8
WEIGHT_DECAY = 0.1
LEARNING_RATE = 0.5


def _data():
  rng = np.random.RandomState(0)
  images = rng.rand(BATCH, 6, 6, 1).astype(np.float32)
  labels = np.arange(BATCH) % helpers.NUM_CLASSES
  return images, labels


def _model(images, labels):
  """A small slim CNN with L2 regularizers and deterministic weights."""
  with slim.arg_scope(
      [slim.conv2d, slim.fully_connected],
      weights_regularizer=slim.l2_regularizer(WEIGHT_DECAY),
      weights_initializer=tf.compat.v1.glorot_uniform_initializer(seed=1)):
    net = slim.conv2d(tf.constant(images), 3, [3, 3], scope="conv1")
    net = slim.flatten(net)
    logits = slim.fully_connected(net, helpers.NUM_CLASSES,
                                  activation_fn=None, scope="logits")
  return tf.compat.v1.losses.sparse_softmax_cross_entropy(
      tf.constant(labels), logits)


def _step(build_train_op):
  """Trainable variables after one step of the train op built in a graph."""
  with tf.Graph().as_default():
    train_op = build_train_op()
    with tf.compat.v1.Session(config=helpers.session_config()) as session:
      session.run(tf.compat.v1.global_variables_initializer())
      session.run(train_op)
      variables = tf.compat.v1.trainable_variables()
      return {v.op.name: value
              for v, value in zip(variables, session.run(variables))}


def _sgd():
  return tf.compat.v1.train.GradientDescentOptimizer(LEARNING_RATE)


def _single_device():
  images, labels = _data()
  loss = safetrain.total_loss_from(_model(images, labels))
  return safetrain.create_train_op_safe(loss, _sgd())


def _clones(num_clones):
  images, labels = _data()
  shares = iter(zip(np.split(images, num_clones),
                    np.split(labels, num_clones)))
  clones = safetrain.create_clones(lambda: _model(*next(shares)),
                                   num_clones=num_clones, clone_on_cpu=True)
  return [safetrain.clone_loss(c) for c in clones]


def _regularization():
  return tf.add_n(helpers.regularization())


def _safe_clones(num_clones):
  total = safetrain.sum_clone_losses(_clones(num_clones))
  return safetrain.create_train_op_safe(total, _sgd())


def _per_clone_regularization(num_clones):
  # What users write: each clone's loss with its regularization, scaled.
  losses = _clones(num_clones)
  total = tf.add_n([l / num_clones + _regularization() for l in losses])
  return tf_slim.learning.create_train_op(total, _sgd())


def _left_out(num_clones):
  losses = _clones(num_clones)
  total = tf.add_n([l / num_clones for l in losses])
  return tf_slim.learning.create_train_op(total, _sgd())


def _assert_same(testcase, got, want):
  testcase.assertEqual(sorted(got), sorted(want))
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6,
                               err_msg=name)


def _differs(got, want) -> bool:
  return any(not np.allclose(got[n], want[n], rtol=1e-5, atol=1e-6)
             for n in want)


class UpdateEquivalenceTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.reference = _step(_single_device)

  @parameterized.parameters(1, 2, 4)
  def test_one_clone_step_equals_one_single_device_step(self, num_clones):
    _assert_same(self, _step(lambda: _safe_clones(num_clones)),
                 self.reference)
    # The wrong constructions give another update, so this test can fail.
    self.assertTrue(_differs(_step(lambda: _left_out(num_clones)),
                             self.reference))
    per_clone = _step(lambda: _per_clone_regularization(num_clones))
    if num_clones == 1:
      _assert_same(self, per_clone, self.reference)  # Once is once.
    else:
      self.assertTrue(_differs(per_clone, self.reference))

  def test_weight_decay_matters_in_this_model(self):
    # Without regularization at all, one step lands elsewhere: the reference
    # is sensitive to the regularization term.
    def unregularized():
      images, labels = _data()
      return tf_slim.learning.create_train_op(_model(images, labels), _sgd())
    self.assertTrue(_differs(_step(unregularized), self.reference))


class DoubleCountingTest(parameterized.TestCase):

  @parameterized.parameters(2, 4)
  def test_regularization_in_every_clone_loss_raises(self, num_clones):
    with tf.Graph().as_default() as graph:
      losses = _clones(num_clones)
      with_regularization = [l + _regularization() for l in losses]
      before = helpers.count_ops(graph)
      error = helpers.assert_error(
          self, safetrain.DoubleCountedRegularizationError,
          r"sum_clone_losses: the loss being optimized counts 2 "
          r"regularization losses more often than once.*"
          r"counted x2 \(expected x1\): "
          r"'clone_0/conv1/kernel/Regularizer/l2_regularizer:0'.*"
          r"counted x2 \(expected x1\): "
          r"'clone_0/logits/kernel/Regularizer/l2_regularizer:0'.*"
          r"where each is added.*'regularization_loss' x1.*"
          r"sum_clone_losses\(clone_losses\).*data loss only",
          safetrain.sum_clone_losses, with_regularization)
      built = helpers.count_ops(graph) - before
    self.assertIsInstance(error, ValueError)
    self.assertEqual(
        [(t.name, t.variables, t.coefficient) for t in error.overcounted],
        [("clone_0/conv1/kernel/Regularizer/l2_regularizer:0",
          ("conv1/weights",), 2.0),
         ("clone_0/logits/kernel/Regularizer/l2_regularizer:0",
          ("logits/weights",), 2.0)])
    # Each clone's route is named: 1/N through each clone's sum.
    message = str(error)
    # (the user's tf.add_n of the regularization losses, in each clone).
    routes = re.findall(r"'(AddN(?:_\d+)?)' x([\d.]+)", message)
    self.assertLen(routes, 2 * num_clones)
    self.assertEqual({float(c) for _, c in routes}, {1.0 / num_clones})
    self.assertGreater(built, 0)  # The sum was built, then refused.

  @parameterized.parameters(2, 4)
  def test_hand_summed_per_clone_regularization_is_counted_n_times(
      self, num_clones):
    with tf.Graph().as_default():
      losses = _clones(num_clones)
      total = tf.add_n([l / num_clones + _regularization() for l in losses])
      error = helpers.assert_error(
          self, safetrain.DoubleCountedRegularizationError,
          rf"assert_counted_once: .*counted x{num_clones} \(expected x1\)",
          safetrain.assert_counted_once, total)
    self.assertEqual([t.coefficient for t in error.overcounted],
                     [float(num_clones)] * 2)

  def test_get_total_loss_per_clone_scope_raises(self):
    # tf.compat.v1.losses.get_total_loss(scope=clone.scope) takes the
    # regularization only in the first clone (which created it), so summing
    # those already counts it once; sum_clone_losses would count it again.
    with tf.Graph().as_default():
      images, labels = _data()
      shares = iter(zip(np.split(images, 2), np.split(labels, 2)))
      clones = safetrain.create_clones(lambda: _model(*next(shares)),
                                       num_clones=2, clone_on_cpu=True)
      totals = [tf.compat.v1.losses.get_total_loss(scope=c.scope)
                for c in clones]
      error = helpers.assert_error(
          self, safetrain.DoubleCountedRegularizationError,
          r"counted x1.5 \(expected x1\)",
          safetrain.sum_clone_losses, totals)
    self.assertEqual([t.coefficient for t in error.overcounted], [1.5, 1.5])

  def test_sum_clone_losses_is_counted_once(self):
    with tf.Graph().as_default():
      total = safetrain.sum_clone_losses(_clones(4))
      report = safetrain.assert_counted_once(total)
    self.assertTrue(report.ok)
    self.assertEqual([t.coefficient for t in report.terms], [1.0, 1.0])

  def test_left_out_regularization_raises_missing(self):
    with tf.Graph().as_default():
      losses = _clones(2)
      total = tf.add_n([l / 2 for l in losses])
      error = helpers.assert_error(
          self, safetrain.MissingRegularizationError,
          r"assert_counted_once: the loss being optimized leaves out 2 of 2",
          safetrain.assert_counted_once, total)
    self.assertLen(error.missing, 2)


def _partitioned_clones(num_clones):
  """Clones of a linear model whose weights are split in 3 shards."""
  rng = np.random.RandomState(1)
  inputs = rng.rand(BATCH, 6).astype(np.float32)
  shares = iter(np.split(inputs, num_clones))

  def model_fn():
    weights = tf.compat.v1.get_variable(
        "w", [6, 1], partitioner=tf.compat.v1.fixed_size_partitioner(3),
        regularizer=slim.l2_regularizer(WEIGHT_DECAY),
        initializer=tf.compat.v1.ones_initializer())
    prediction = tf.matmul(tf.constant(next(shares)), weights)
    tf.compat.v1.losses.mean_squared_error(tf.zeros_like(prediction),
                                           prediction)

  clones = safetrain.create_clones(model_fn, num_clones=num_clones,
                                   clone_on_cpu=True)
  return [safetrain.clone_loss(c) for c in clones]


class PartitionedAndUnregularizedTest(absltest.TestCase):

  def test_partitioned_shards_are_counted_once(self):
    with tf.Graph().as_default():
      total = safetrain.sum_clone_losses(_partitioned_clones(2))
      report = safetrain.assert_counted_once(total)
    self.assertEqual([t.variables for t in report.terms],
                     [("w/part_0",), ("w/part_1",), ("w/part_2",)])
    self.assertEqual([t.coefficient for t in report.terms], [1.0] * 3)

  def test_partitioned_shards_in_every_clone_are_named(self):
    with tf.Graph().as_default():
      losses = _partitioned_clones(2)
      # Each use of a shard's lazy regularization tensor builds a new copy.
      doubled = [l + tf.add_n(helpers.regularization()) for l in losses]
      error = helpers.assert_error(
          self, safetrain.DoubleCountedRegularizationError,
          r"counts 3 regularization losses more often than once.*"
          r"where each is added.*'regularization_loss' x1",
          safetrain.sum_clone_losses, doubled)
    self.assertEqual([t.coefficient for t in error.overcounted], [2.0] * 3)

  def test_unregularized_clones(self):
    with tf.Graph().as_default():
      images, labels = _data()
      shares = iter(zip(np.split(images, 2), np.split(labels, 2)))

      def model_fn():
        share_images, share_labels = next(shares)
        logits = slim.fully_connected(
            slim.flatten(tf.constant(share_images)), 3, activation_fn=None,
            scope="logits")
        tf.compat.v1.losses.sparse_softmax_cross_entropy(
            tf.constant(share_labels), logits)

      clones = safetrain.create_clones(model_fn, num_clones=2,
                                       clone_on_cpu=True)
      total = safetrain.sum_clone_losses(
          [safetrain.clone_loss(c) for c in clones])
      report = safetrain.assert_counted_once(total)
    self.assertEqual(report.terms, ())
    self.assertEqual(total.op.type, "AddN")


class ClonesTest(absltest.TestCase):

  def test_scopes_devices_and_shared_variables(self):
    with tf.Graph().as_default():
      clones = _clones_objects(3)
      variables = tf.compat.v1.trainable_variables()
      regularization = helpers.regularization()
    self.assertEqual([c.scope for c in clones],
                     ["clone_0/", "clone_1/", "clone_2/"])
    self.assertEqual({c.device for c in clones}, {"/device:CPU:0"})
    self.assertLen(variables, 4)  # Shared: one set of weights and biases.
    self.assertLen(regularization, 2)  # Created once, by the first clone.

  def test_gpu_devices_unless_on_cpu(self):
    self.assertEqual(safetrain.tf1._deploy.clone_device(1, 2), "/device:GPU:1")
    self.assertEqual(safetrain.tf1._deploy.clone_device(0, 1), "")
    self.assertEqual(
        safetrain.tf1._deploy.clone_device(1, 2, clone_on_cpu=True),
        "/device:CPU:0")

  def test_clone_loss_scope_has_a_slash_boundary(self):
    with tf.Graph().as_default():
      clones = _clones_objects(11)
      clone_1 = safetrain.clone_loss(clones[1])
    # clone_1 takes its own loss, not clone_10's.
    self.assertEqual([t.op.name for t in clone_1.op.inputs],
                     ["clone_1/sparse_softmax_cross_entropy_loss/value"])

  def test_sum_clone_losses_places_each_part_on_its_clone(self):
    with tf.Graph().as_default():
      losses = _clones(2)
      total = safetrain.sum_clone_losses(losses)
      scaled = [op for op in total.graph.get_operations()
                if op.name.endswith("scaled_clone_loss")]
    self.assertEqual([op.name for op in scaled],
                     ["clone_0/scaled_clone_loss",
                      "clone_1/scaled_clone_loss"])
    self.assertEqual({op.device for op in scaled}, {"/device:CPU:0"})


def _clones_objects(num_clones):
  images, labels = _data()
  images = np.concatenate([images] * 2)[:num_clones]
  labels = np.concatenate([labels] * 2)[:num_clones]
  shares = iter(zip(np.split(images, num_clones),
                    np.split(labels, num_clones)))
  return safetrain.create_clones(lambda: _model(*next(shares)),
                                 num_clones=num_clones, clone_on_cpu=True)


class MisuseTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("not_a_list", lambda l: safetrain.sum_clone_losses(l),
       safetrain.InvalidArgumentTypeError, r"must be a list"),
      ("empty", lambda l: safetrain.sum_clone_losses([]),
       safetrain.InvalidArgumentError, r"clone_losses is empty"),
      ("python_number", lambda l: safetrain.sum_clone_losses([l, 1.0]),
       safetrain.InvalidArgumentTypeError, r"clone_losses\[1\] must be"),
      ("num_clones_too_small",
       lambda l: safetrain.sum_clone_losses([l, l], num_clones=1),
       safetrain.InvalidArgumentError, r"num_clones=1 is less than"),
      ("num_clones_not_int",
       lambda l: safetrain.sum_clone_losses([l], num_clones=2.0),
       safetrain.InvalidArgumentTypeError, r"num_clones must be an int"),
      ("expected_coefficient",
       lambda l: safetrain.assert_counted_once(l, expected_coefficient=0),
       safetrain.InvalidArgumentError, r"positive number"),
      ("replica_loss_cross_replica",
       lambda l: _in_strategy_scope(lambda: safetrain.replica_total_loss(l)),
       safetrain.InvalidArgumentError, r"cross-replica context"),
      ("create_clones_not_callable",
       lambda l: safetrain.create_clones(l, num_clones=2),
       safetrain.InvalidArgumentTypeError, r"model_fn must be callable"),
      ("create_clones_zero",
       lambda l: safetrain.create_clones(lambda: None, num_clones=0),
       safetrain.InvalidArgumentError, r"num_clones must be at least 1"),
  )
  def test_misuse(self, call, error_type, pattern):
    with tf.Graph().as_default():
      images, labels = _data()
      loss = _model(images, labels)
      helpers.assert_error(self, error_type, pattern, call, loss)

  def test_clone_without_losses(self):
    with tf.Graph().as_default():
      clones = safetrain.create_clones(lambda: None, num_clones=2)
      helpers.assert_error(self, safetrain.InvalidArgumentError,
                           r"clone_loss: the clone added no losses in scope "
                           r"'clone_0/'", safetrain.clone_loss, clones[0])

  def test_replica_total_loss_without_strategy_is_total_loss(self):
    with tf.Graph().as_default():
      images, labels = _data()
      loss = safetrain.replica_total_loss(_model(images, labels))
      report = safetrain.assert_counted_once(loss)
    self.assertEqual([t.coefficient for t in report.terms], [1.0, 1.0])


def _in_strategy_scope(function):
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  with strategy.scope():
    return function()


class TrainerClonesTest(absltest.TestCase):
  """examples/train_image_classifier.py with --num_clones (graph only)."""

  def test_num_clones_optimizes_the_sum_of_clone_losses(self):
    from examples import train_image_classifier as trainer  # pylint: disable=g-import-not-at-top
    config = trainer.TrainConfig(
        train_dir="/unused", model_name="lenet", depth_multiplier=0.25,
        weight_decay=1e-3, batch_size=8, num_clones=2, clone_on_cpu=True)
    with tf.Graph().as_default() as graph:
      images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3])
      labels = tf.compat.v1.placeholder(tf.int64, [None])
      pieces = trainer.build_train_op(config, images, labels, num_classes=10)
      total = graph.get_tensor_by_name("total_loss:0")
      report = safetrain.assert_counted_once(total)
      scaled = sorted(op.name for op in graph.get_operations()
                      if op.name.endswith("scaled_clone_loss"))
    self.assertTrue(pieces.report.ok)
    self.assertLen(report.terms, 4)
    self.assertEqual({t.coefficient for t in report.terms}, {1.0})
    self.assertEqual(scaled, ["clone_0/scaled_clone_loss",
                              "clone_1/scaled_clone_loss"])

  def test_batch_size_is_per_clone(self):
    from examples import train_image_classifier as trainer  # pylint: disable=g-import-not-at-top
    with tf.Graph().as_default():
      images = tf.compat.v1.placeholder(tf.float32, [None, 2])
      labels = tf.compat.v1.placeholder(tf.int64, [None])
      shares = trainer.clone_batches(images, labels, batch_size=3,
                                     num_clones=2)
      with tf.compat.v1.Session() as session:
        values = session.run(shares, {images: np.zeros([6, 2]),
                                      labels: np.arange(6)})
        with self.assertRaises(tf.errors.InvalidArgumentError):
          session.run(shares, {images: np.zeros([3, 2]),
                               labels: np.arange(3)})
    self.assertEqual([v[1].tolist() for v in values], [[0, 1, 2], [3, 4, 5]])


if __name__ == "__main__":
  absltest.main()
