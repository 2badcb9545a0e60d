"""Tests for safetrain.rule._trace: from a train op back to its loss and variables."""

from absl.testing import absltest
from absl.testing import parameterized
import tensorflow as tf
import tf_slim as slim

import safetrain
from safetrain.rule import _trace

import helpers


def _model():
  x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
  with slim.arg_scope([slim.fully_connected],
                      weights_regularizer=slim.l2_regularizer(0.1)):
    hidden = slim.fully_connected(x, 3, scope="body")
    y = slim.fully_connected(hidden, 2, activation_fn=None, scope="head")
  return tf.reduce_mean(tf.square(y), name="task_loss")


def _minimize_with_step(loss, opt):
  return opt.minimize(loss,
                      global_step=tf.compat.v1.train.get_or_create_global_step())


def _slim_learning(loss, opt):
  return slim.learning.create_train_op(loss, opt)


def _slim_training(loss, opt):
  return slim.training.create_train_op(loss, opt)


def _slim_without_collection(loss, opt):
  train_op = slim.learning.create_train_op(loss, opt)
  tf.compat.v1.get_default_graph().clear_collection(
      tf.compat.v1.GraphKeys.TRAIN_OP)
  return train_op


def _minimize_then_ema(loss, opt):
  step = _minimize_with_step(loss, opt)
  ema = tf.compat.v1.train.ExponentialMovingAverage(0.9)
  with tf.control_dependencies([step]):
    return tf.group(ema.apply(tf.compat.v1.trainable_variables()))


def _hand_written(loss, opt):
  grads_and_vars = opt.compute_gradients(loss)
  return opt.apply_gradients(grads_and_vars)


# (name, how the train op is built, the op find_train_ops must return or
#  None for "the op the builder returned").
_SCENARIOS = (
    ("minimize", lambda loss, opt: opt.minimize(loss), None),
    ("minimize_global_step", _minimize_with_step, None),
    ("slim_learning", _slim_learning, None),
    ("slim_training", _slim_training, None),
    ("slim_no_collection", _slim_without_collection, None),
    ("hand_written", _hand_written, None),
    # apply_gradients lists its own op in the train_op collection; the EMA
    # group around it is not listed, so the optimizer's op is the train op.
    ("ema", _minimize_then_ema, "Momentum"),
)


class TraceTest(parameterized.TestCase):

  @parameterized.named_parameters(
      (name, build, expected) for name, build, expected in _SCENARIOS)
  def test_finds_the_one_train_op_and_its_loss(self, build, expected):
    with tf.Graph().as_default() as graph:
      loss = _model()
      built = build(loss, tf.compat.v1.train.MomentumOptimizer(0.1, 0.9))
      built_op = built if isinstance(built, tf.Operation) else built.op
      found = _trace.find_train_ops(graph)
      self.assertLen(found, 1, [op.name for op in found])
      self.assertEqual(found[0].name, expected or built_op.name)
      trace = _trace.trace_train_op(found[0])
      self.assertEqual([t.name for t in trace.losses], ["task_loss:0"])
      self.assertEqual(trace.variables, ("body/biases", "body/weights",
                                         "head/biases", "head/weights"))

  def test_the_loss_is_the_output_of_a_function_call_that_is_optimized(self):
    # A tf.function's gradient takes one per output: the other outputs get
    # zeros, so the optimized one is told apart from its siblings.
    with tf.Graph().as_default() as graph:
      weights = tf.compat.v1.get_variable("w", [3])

      @tf.function
      def two(v):
        return tf.reduce_sum(v), tf.reduce_sum(tf.square(v))
      first, second = two(weights)
      tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(second)
      (train_op,) = _trace.find_train_ops(graph)
      self.assertEqual(_trace.trace_train_op(train_op).losses, (second,))

  def test_global_step_increment_is_not_a_second_train_op(self):
    # apply_gradients puts the global step's AssignAdd into the train_op
    # collection beside slim's train op; it is part of that train op.
    with tf.Graph().as_default() as graph:
      loss = _model()
      train_op = slim.learning.create_train_op(
          loss, tf.compat.v1.train.GradientDescentOptimizer(0.1),
          global_step=tf.compat.v1.train.get_or_create_global_step())
      listed = graph.get_collection(tf.compat.v1.GraphKeys.TRAIN_OP)
      self.assertLen(listed, 2)  # The situation this test is about.
      self.assertEqual(_trace.find_train_ops(graph), (train_op.op,))

  def test_two_optimizers_give_two_train_ops(self):
    with tf.Graph().as_default() as graph:
      loss = _model()
      body = tf.compat.v1.trainable_variables("body")
      head = tf.compat.v1.trainable_variables("head")
      body_op = tf.compat.v1.train.GradientDescentOptimizer(
          0.1, name="body_sgd").minimize(loss, var_list=body)
      head_op = tf.compat.v1.train.AdamOptimizer(
          0.1, name="head_adam").minimize(loss, var_list=head)
      found = _trace.find_train_ops(graph)
      self.assertEqual(sorted(op.name for op in found),
                       sorted([body_op.name, head_op.name]))
      traces = {op.name: _trace.trace_train_op(op) for op in found}
      self.assertEqual(traces[body_op.name].variables,
                       ("body/biases", "body/weights"))
      self.assertEqual(traces[head_op.name].variables,
                       ("head/biases", "head/weights"))

  @parameterized.parameters(False, True)
  def test_a_sparse_update_is_an_update(self, use_resource):
    # word2vec's embedding gets an IndexedSlices gradient: plain SGD updates
    # it with a scatter of the rows (ScatterSub, ResourceScatterAdd), no
    # Apply op. Its L2 term is then required, and left out here.
    with tf.Graph().as_default() as graph:
      embeddings = tf.compat.v1.get_variable(
          "embeddings", [10, 4], use_resource=use_resource,
          regularizer=slim.l2_regularizer(0.1))
      rows = tf.nn.embedding_lookup(embeddings, tf.constant([1, 3]))
      loss = tf.reduce_sum(tf.square(rows), name="task_loss")
      tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss)
      (train_op,) = _trace.find_train_ops(graph)
      trace = _trace.trace_train_op(train_op)
      self.assertEqual(trace.variables, ("embeddings",))
      self.assertEqual([t.name for t in trace.losses], ["task_loss:0"])
      path = helpers.make_tempdir(self) + "/model.meta"
      tf.compat.v1.train.export_meta_graph(filename=path)
    self.assertEqual(safetrain.audit_meta_graph(path).verdicts,
                     (safetrain.Verdict.MISSING,))

  def test_a_read_after_the_update_is_the_train_op_when_nothing_else_is(self):
    # A Keras optimizer's train op in an Estimator graph (TF 2.0) is the
    # read of its iterations counter after the update; a read returned by a
    # resource assign beside an update group is not.
    with tf.Graph().as_default() as graph:
      loss = _model()
      iterations = tf.compat.v1.get_variable(
          "iterations", [], tf.int64, use_resource=True, trainable=False)
      update = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss)
      graph.clear_collection(tf.compat.v1.GraphKeys.TRAIN_OP)
      with tf.control_dependencies([update]):
        read = tf.raw_ops.ReadVariableOp(resource=iterations.handle,
                                         dtype=tf.int64)
      self.assertEqual(_trace.find_train_ops(graph), (read.op,))
      self.assertLen(_trace.trace_train_op(read.op).variables, 4)

  def test_graph_without_optimizer_has_no_train_op(self):
    with tf.Graph().as_default() as graph:
      _model()
      self.assertEqual(_trace.find_train_ops(graph), ())

  def test_check_numerics_is_peeled_to_the_users_loss(self):
    with tf.Graph().as_default():
      loss = _model()
      train_op = slim.learning.create_train_op(
          loss, tf.compat.v1.train.GradientDescentOptimizer(0.1),
          check_numerics=True)
      trace = _trace.trace_train_op(train_op)
      self.assertEqual(trace.losses, (loss,))

  def test_rejects_a_non_graph_object(self):
    with self.assertRaisesRegex(safetrain.InvalidArgumentTypeError,
                                r"trace_train_op: train_op must be a graph "
                                r"tf\.Operation or tf\.Tensor, got str"):
      _trace.trace_train_op("train_op")


if __name__ == "__main__":
  absltest.main()
