"""create_train_op_safe and total_loss_from: policy, results and misuse."""

import inspect
import warnings

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tf_slim

import safetrain

import helpers

REG = tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES


def _sgd():
  return tf.compat.v1.train.GradientDescentOptimizer(0.1)


class SignatureTest(absltest.TestCase):

  def test_same_parameters_as_slim_plus_keyword_only_options(self):
    ours = inspect.signature(safetrain.create_train_op_safe).parameters
    slims = inspect.signature(tf_slim.learning.create_train_op).parameters
    positional = [p for p in ours.values() if p.kind != p.KEYWORD_ONLY]
    self.assertEqual([p.name for p in positional], list(slims))
    for name, parameter in slims.items():
      self.assertEqual(ours[name].default, parameter.default, name)
    self.assertEqual(ours["on_missing"].kind, inspect.Parameter.KEYWORD_ONLY)


class CreateTrainOpTest(absltest.TestCase):

  def test_raises_before_building_anything(self):
    with tf.Graph().as_default() as graph:
      loss = helpers.cross_entropy()
      before = helpers.count_ops(graph)
      error = helpers.assert_error(
          self, safetrain.MissingRegularizationError,
          r"create_train_op_safe: the loss being optimized leaves out 2 of 2 "
          r"regularization losses, so weight decay has no effect.*"
          r"optimized loss:  'sparse_softmax_cross_entropy_loss/value:0' "
          r"\(float32 scalar\).*"
          r"'conv1/kernel/Regularizer/l2_regularizer:0'.*conv1/weights.*"
          r"loss = safetrain.total_loss_from\(loss\).*on_missing=\"warn\"",
          safetrain.create_train_op_safe, loss, _sgd())
      self.assertEqual(helpers.count_ops(graph), before)
    self.assertIsInstance(error, ValueError)
    self.assertEqual([t.variables for t in error.missing],
                     [("conv1/weights",), ("logits/weights",)])
    self.assertEqual(error.loss_name,
                     "sparse_softmax_cross_entropy_loss/value:0")
    self.assertFalse(error.report.ok)

  def test_long_lists_are_cut_with_a_count(self):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      for i in range(6):
        w = tf.Variable(np.ones(2, np.float32), name=f"extra{i}")
        tf.compat.v1.add_to_collection(REG, tf.reduce_sum(w * w))
      error = helpers.assert_error(
          self, safetrain.MissingRegularizationError,
          r"leaves out 8 of 8.*\.\.\. and 3 more \(see error.missing\)",
          safetrain.create_train_op_safe, loss, _sgd())
    self.assertLen(error.missing, 8)

  def test_builds_when_complete_and_result_is_slims(self):
    with tf.Graph().as_default():
      loss = safetrain.total_loss_from(helpers.cross_entropy())
      train_op = safetrain.create_train_op_safe(loss, _sgd())
      self.assertIsInstance(train_op, tf.Tensor)
      self.assertIn(train_op, tf.compat.v1.get_collection(
          tf.compat.v1.GraphKeys.TRAIN_OP))
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        value = sess.run(train_op)
        self.assertEqual(sess.run(tf.compat.v1.train.get_global_step()), 1)
    self.assertGreater(value, 0.0)

  def test_add_adds_the_missing_terms_and_logs(self):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      with self.assertLogs(logger="absl", level="INFO") as logs:
        train_op = safetrain.create_train_op_safe(loss, _sgd(),
                                                  on_missing="add")
      trace = safetrain.trace_train_op(train_op)
      report = safetrain.check_regularization(trace.losses[0])
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        total, xent, reg = sess.run(
            [train_op, loss, tf.add_n(helpers.regularization())])
    self.assertTrue(report.ok)
    self.assertIn("added 2 regularization losses", "\n".join(logs.output))
    self.assertAlmostEqual(total, xent + reg, places=5)

  def test_warn_warns_and_builds_as_given(self):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      with self.assertWarnsRegex(safetrain.MissingRegularizationWarning,
                                 "leaves out 2 of 2"):
        train_op = safetrain.create_train_op_safe(loss, _sgd(),
                                                  on_missing="warn")
      # Built as given: the train op still minimizes the bare cross entropy.
      traced, = safetrain.trace_train_op(train_op).losses
      self.assertLen(safetrain.check_regularization(traced).missing, 2)

  def test_regularization_added_twice_raises_and_names_the_terms(self):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      reg = tf.add_n(helpers.regularization())
      error = helpers.assert_error(
          self, safetrain.DoubleCountedRegularizationError,
          r"counts 2 regularization losses more often than once.*"
          r"counted x2 \(expected x1\): "
          r"'conv1/kernel/Regularizer/l2_regularizer:0'",
          safetrain.create_train_op_safe, loss + reg + reg, _sgd())
      self.assertEqual([t.coefficient for t in error.overcounted], [2.0, 2.0])
      with self.assertWarnsRegex(safetrain.MissingRegularizationWarning,
                                 "more often than once"):
        safetrain.create_train_op_safe(loss + reg + reg, _sgd(),
                                       on_missing="warn")

  def test_get_total_loss_with_a_duplicated_entry_raises(self):
    with tf.Graph().as_default():
      helpers.cross_entropy()
      tf.compat.v1.add_to_collection(REG, helpers.regularization()[0])
      helpers.assert_error(
          self, safetrain.DoubleCountedRegularizationError,
          r"counts 1 regularization loss more often than once",
          safetrain.create_train_op_safe,
          tf.compat.v1.losses.get_total_loss(), _sgd())

  def test_add_cannot_fix_a_stop_gradient(self):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      loss += tf.stop_gradient(tf.add_n(helpers.regularization()))
      helpers.assert_error(self, safetrain.MissingRegularizationError,
                           r"\(blocked;.*tf.stop_gradient",
                           safetrain.create_train_op_safe, loss, _sgd(),
                           on_missing="add")

  def test_frozen_layers_do_not_raise(self):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      head = tf.compat.v1.trainable_variables("logits")
      loss += tf.add_n(
          [t for t in helpers.regularization() if "logits" in t.name])
      train_op = safetrain.create_train_op_safe(loss, _sgd(),
                                                variables_to_train=head)
      # Built for the head alone: its term is included, the frozen conv's
      # term is reported but not required, and only the head is updated.
      report = safetrain.check_regularization(train_op, head)
      self.assertTrue(report.ok)
      status = {t.variables: t.status for t in report.terms}
      self.assertEqual(status, {
          ("logits/weights",): safetrain.Status.INCLUDED,
          ("conv1/weights",): safetrain.Status.FROZEN})
      self.assertEqual(safetrain.trace_train_op(train_op).variables,
                       tuple(sorted(v.op.name for v in head)))

  def test_unregularized_graph_builds(self):
    with tf.Graph().as_default():
      images, labels = helpers.images_and_labels()
      logits = tf.reshape(images, [8, 64]) @ tf.Variable(
          np.zeros([64, 3], np.float32))
      loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
      self.assertIs(safetrain.total_loss_from(loss), loss)
      safetrain.create_train_op_safe(loss, _sgd())


class TotalLossFromTest(parameterized.TestCase):

  def _value(self, tensor):
    with tf.compat.v1.Session() as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      return sess.run(tensor)

  def test_none_takes_the_collection_like_get_total_loss(self):
    with tf.Graph().as_default():
      helpers.cross_entropy()
      ours = safetrain.total_loss_from()
      theirs = tf.compat.v1.losses.get_total_loss()
      self.assertEqual(ours.name, "total_loss:0")
      a, b = self._value([ours, theirs])
    self.assertAlmostEqual(a, b, places=6)

  def test_adds_nothing_to_a_complete_loss(self):
    with tf.Graph().as_default() as graph:
      total = safetrain.total_loss_from(helpers.cross_entropy())
      theirs = tf.compat.v1.losses.get_total_loss()
      before = helpers.count_ops(graph)
      self.assertIs(safetrain.total_loss_from(total), total)
      self.assertIs(safetrain.total_loss_from(theirs), theirs)
      self.assertEqual(helpers.count_ops(graph), before)

  def test_duplicate_collection_entry_counts_once(self):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      reg = helpers.regularization()
      tf.compat.v1.add_to_collection(REG, reg[0])
      total = safetrain.total_loss_from(loss)
      doubled = tf.compat.v1.losses.get_total_loss()
      got, expected, slims = self._value(
          [total, loss + reg[0] + reg[1], doubled])
    self.assertAlmostEqual(got, expected, places=6)
    self.assertGreater(slims, expected)  # TF's own sum counts it twice.

  def test_list_of_losses(self):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      other = tf.reduce_mean(tf.square(tf.compat.v1.trainable_variables()[1]))
      total = safetrain.total_loss_from([loss, other, loss])
      got, expected = self._value(
          [total, loss + other + tf.add_n(helpers.regularization())])
    self.assertAlmostEqual(got, expected, places=5)

  def test_scope_has_a_slash_boundary(self):
    with tf.Graph().as_default():
      values = {}
      for scope, scale in (("clone_1", 1.0), ("clone_10", 100.0)):
        with tf.name_scope(scope):
          w = tf.Variable(np.ones(2, np.float32))
          tf.compat.v1.add_to_collection(REG, scale * tf.reduce_sum(w))
          tf.compat.v1.losses.add_loss(tf.reduce_sum(w) * 0.0 + scale)
          values[scope] = scale
      total = safetrain.total_loss_from(scope="clone_1")
      got = self._value(total)
    self.assertAlmostEqual(got, 1.0 + 2.0)

  def test_partitioned_lazy_terms_are_added_once(self):
    with tf.Graph().as_default():
      images, labels = helpers.images_and_labels()
      w = tf.compat.v1.get_variable(
          "w", shape=[64, 3],
          partitioner=tf.compat.v1.fixed_size_partitioner(2),
          regularizer=lambda v: tf.reduce_sum(v))
      logits = tf.matmul(tf.reshape(images, [8, 64]), tf.concat(list(w), 0))
      loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
      once = safetrain.total_loss_from(loss)
      twice = safetrain.total_loss_from(once)
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        xent, got, sum_w = sess.run([loss, once, tf.reduce_sum(
            tf.concat(list(w), 0))])
    self.assertIs(twice, once)
    self.assertAlmostEqual(got, xent + sum_w, places=4)

  def test_empty_collection_says_what_to_do(self):
    with tf.Graph().as_default():
      helpers.assert_error(self, safetrain.InvalidArgumentError,
                           r"no losses: the LOSSES collection is empty",
                           safetrain.total_loss_from)


def _float():
  return 0.5


def _numpy():
  return np.ones(3, np.float32)


def _variable():
  return tf.Variable(1.0)


def _vector():
  return tf.ones([3]) * tf.Variable(1.0)


def _integer():
  return tf.constant(3)


class MisuseTest(parameterized.TestCase):
  """Each misuse gets our exception with a one-line fix, no TF traceback."""

  @parameterized.named_parameters(
      ("python_float", _float, safetrain.InvalidArgumentTypeError,
       r"must be a graph tf.Tensor, got float 0.5"),
      ("numpy_array", _numpy, safetrain.InvalidArgumentTypeError,
       r"got a numpy array of shape \(3,\)"),
      ("variable", _variable, safetrain.InvalidArgumentTypeError,
       r"is the variable 'Variable:0', not a loss"),
      ("vector", _vector, safetrain.InvalidArgumentError,
       r"has shape \(3,\), but a loss must be a scalar.*tf.reduce_mean"),
      ("integer", _integer, safetrain.InvalidArgumentTypeError,
       r"has dtype int32.*tf.cast"),
  )
  def test_bad_loss(self, make, error_type, pattern):
    with tf.Graph().as_default():
      helpers.cross_entropy()
      value = make()
      for function in (safetrain.create_train_op_safe,):
        helpers.assert_error(self, error_type, pattern, function, value,
                             _sgd())
      helpers.assert_error(self, error_type, pattern,
                           safetrain.total_loss_from, value)
      helpers.assert_error(self, error_type, pattern,
                           safetrain.check_regularization, value)

  def test_two_graphs(self):
    with tf.Graph().as_default():
      first = helpers.cross_entropy()
    with tf.Graph().as_default():
      second = helpers.cross_entropy()
      helpers.assert_error(self, safetrain.InvalidArgumentError,
                           r"mixes tensors from two graphs",
                           safetrain.total_loss_from, [first, second])

  def test_variables_from_another_graph(self):
    with tf.Graph().as_default():
      other = tf.Variable(1.0)
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      helpers.assert_error(self, safetrain.InvalidArgumentError,
                           r"belongs to another graph",
                           safetrain.create_train_op_safe, loss, _sgd(),
                           variables_to_train=[other])

  def test_eager(self):
    self.assertTrue(tf.executing_eagerly())
    error = helpers.assert_error(
        self, safetrain.EagerModeError,
        r"does not work under eager execution.*disable_eager_execution",
        safetrain.create_train_op_safe, tf.constant(1.0), _sgd())
    self.assertIsInstance(error, RuntimeError)
    helpers.assert_error(self, safetrain.EagerModeError, r"eager",
                         safetrain.total_loss_from)

  @parameterized.named_parameters(
      ("none", None, r"optimizer is None"),
      ("keras", "keras", r"must be a tf.compat.v1.train.Optimizer"),
  )
  def test_bad_optimizer(self, optimizer, pattern):
    with tf.Graph().as_default():
      loss = safetrain.total_loss_from(helpers.cross_entropy())
      if optimizer == "keras":
        optimizer = object()
      helpers.assert_error(self, safetrain.InvalidArgumentTypeError, pattern,
                           safetrain.create_train_op_safe, loss, optimizer)

  def test_unknown_on_missing(self):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      helpers.assert_error(self, safetrain.InvalidArgumentError,
                           r"on_missing='ignore' is not one of 'raise', "
                           r"'add', 'warn'",
                           safetrain.create_train_op_safe, loss, _sgd(),
                           on_missing="ignore")

  def test_no_trainable_variables(self):
    with tf.Graph().as_default():
      loss = tf.reduce_mean(tf.ones([2]) * tf.constant(2.0))
      helpers.assert_error(self, safetrain.InvalidArgumentError,
                           r"no variables to train",
                           safetrain.create_train_op_safe, loss, _sgd())


if __name__ == "__main__":
  absltest.main()
