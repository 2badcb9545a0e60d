"""The rule, as a scenario table: each way a loss can be built, and the verdict.

Every scenario builds its own graph and returns the optimized loss and, where
the train op updates only some variables, those variables. The table says
which status each regularization loss must get; ``ok`` follows from it.
"""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import safetrain
import safetrain.slim as slim
from safetrain.rule import _check

import helpers

S = safetrain.Status
REG = tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES


def _reg_sum():
  return tf.add_n(helpers.regularization())


# --- Scenarios: each returns (loss, variables_to_train or None). -----------


def seed_bug():
  return helpers.cross_entropy(), None


def get_total_loss():
  helpers.cross_entropy()
  return tf.compat.v1.losses.get_total_loss(), None


def slim_get_total_loss():
  helpers.cross_entropy()
  return slim.losses.get_total_loss(), None


def total_loss_from():
  return safetrain.total_loss_from(helpers.cross_entropy()), None


def hand_sum():
  loss = helpers.cross_entropy()
  return loss + _reg_sum(), None


def scaled_sum():
  loss = helpers.cross_entropy()
  return 0.5 * (loss + _reg_sum()), None


def stop_gradient():
  loss = helpers.cross_entropy()
  return loss + tf.stop_gradient(_reg_sum()), None


def prevent_gradient():
  loss = helpers.cross_entropy()
  return loss + tf.raw_ops.PreventGradient(input=_reg_sum()), None


def round_op():
  loss = helpers.cross_entropy()
  return loss + tf.round(_reg_sum()), None


def floor_op():
  loss = helpers.cross_entropy()
  return loss + tf.floor(_reg_sum()), None


def straight_through_round():
  loss = helpers.cross_entropy()
  graph = tf.compat.v1.get_default_graph()
  with graph.gradient_override_map({"Round": "Identity"}):
    rounded = tf.round(_reg_sum())
  return loss + rounded, None


def integer_cast():
  loss = helpers.cross_entropy()
  twice_cast = tf.cast(tf.cast(_reg_sum() * 1e3, tf.int32), tf.float32)
  return loss + twice_cast, None


def control_dependency_only():
  loss = helpers.cross_entropy()
  with tf.control_dependencies([_reg_sum()]):
    return tf.identity(loss), None


def fine_tune_head_included():
  loss = helpers.cross_entropy()
  head = tf.compat.v1.trainable_variables("logits")
  reg = [t for t in helpers.regularization() if t.name.startswith("logits/")]
  return loss + tf.add_n(reg), head


def fine_tune_head_missing():
  loss = helpers.cross_entropy()
  return loss, tf.compat.v1.trainable_variables("logits")


def ref_variables_missing():
  return helpers.cross_entropy(use_resource=False), None


def ref_variables_included():
  loss = helpers.cross_entropy(use_resource=False)
  return loss + _reg_sum(), None


def _partitioned_loss():
  images, labels = helpers.images_and_labels()
  weights = tf.compat.v1.get_variable(
      "w", shape=[64, helpers.NUM_CLASSES],
      partitioner=tf.compat.v1.fixed_size_partitioner(3),
      regularizer=slim.l2_regularizer(0.01))
  logits = tf.matmul(tf.reshape(images, [8, 64]), tf.concat(list(weights), 0))
  return tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)


def partitioned_missing():
  return _partitioned_loss(), None


def partitioned_get_total_loss():
  _partitioned_loss()
  return tf.compat.v1.losses.get_total_loss(), None


def partitioned_total_loss_from():
  return safetrain.total_loss_from(_partitioned_loss()), None


def _get_variable_loss():
  images, labels = helpers.images_and_labels()
  weights = tf.compat.v1.get_variable(
      "w", shape=[64, helpers.NUM_CLASSES],
      regularizer=slim.l2_regularizer(0.01))
  logits = tf.matmul(tf.reshape(images, [8, 64]), weights)
  return tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)


def get_variable_regularizer_missing():
  return _get_variable_loss(), None


def get_variable_regularizer_get_total_loss():
  _get_variable_loss()
  return tf.compat.v1.losses.get_total_loss(), None


def _towers():
  losses = []
  for i in range(2):
    with tf.compat.v1.variable_scope("", reuse=i > 0):
      with tf.name_scope(f"tower_{i}"):
        losses.append(helpers.cross_entropy())
  return losses


def shared_towers_missing():
  return tf.add_n(_towers()), None


def shared_towers_included():
  return tf.add_n(_towers()) + _reg_sum(), None


def _v1_control_flow(included: bool):
  tf.compat.v1.disable_control_flow_v2()
  try:
    loss = helpers.cross_entropy()
    reg = _reg_sum() if included else tf.constant(0.0)
    _, carried = tf.compat.v1.while_loop(
        lambda i, x: i < 2, lambda i, x: (i + 1, x * 1.0), [0, reg])
    chosen = tf.compat.v1.cond(loss > -1.0, lambda: loss + carried,
                               lambda: loss)
  finally:
    tf.compat.v1.enable_control_flow_v2()
  return chosen, None


def v1_control_flow_included():
  return _v1_control_flow(True)


def v1_control_flow_missing():
  return _v1_control_flow(False)


def _v2_control_flow(included: bool):
  loss = helpers.cross_entropy()
  reg = _reg_sum() if included else tf.constant(0.0)
  _, carried = tf.while_loop(lambda i, x: i < 2, lambda i, x: (i + 1, x * 1.0),
                             [0, reg])
  return tf.cond(loss > -1.0, lambda: loss + carried, lambda: loss), None


def v2_control_flow_included():
  return _v2_control_flow(True)


def v2_control_flow_missing():
  return _v2_control_flow(False)


def tf_function_included():
  @tf.function
  def add(a, b):
    return a + b
  return add(helpers.cross_entropy(), _reg_sum()), None


def tf_function_missing():
  @tf.function
  def double(a):
    return a * 2.0
  return double(helpers.cross_entropy()), None


def tf_function_stop_gradient():
  # The stop-gradient is inside the function: TensorFlow's gradient of the
  # call sends zeros to ``b``.
  @tf.function
  def add_frozen(a, b):
    return a + tf.stop_gradient(b)
  return add_frozen(helpers.cross_entropy(), _reg_sum()), None


def tf_function_nested_stop_gradient():
  @tf.function
  def frozen(b):
    return tf.stop_gradient(b)

  @tf.function
  def add(a, b):
    return a + frozen(b) * 1.0
  return add(helpers.cross_entropy(), _reg_sum()), None


def tf_function_other_output():
  # Both go in; only the first output, the data loss, is optimized.
  @tf.function
  def both(a, b):
    return a * 1.0, b * 1.0
  data, _ = both(helpers.cross_entropy(), _reg_sum())
  return data, None


def tf_function_second_output():
  @tf.function
  def both(a, b):
    return tf.stop_gradient(b), a + b
  _, total = both(helpers.cross_entropy(), _reg_sum())
  return total, None


def duplicated_in_collection():
  loss = helpers.cross_entropy()
  first = helpers.regularization()[0]
  tf.compat.v1.add_to_collection(REG, first)  # Listed twice.
  return safetrain.total_loss_from(loss), None


def unregularized():
  images, labels = helpers.images_and_labels()
  logits = slim.fully_connected(slim.flatten(images), 3, activation_fn=None)
  return tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits), None


def cond_branch_layer():
  images, labels = helpers.images_and_labels()
  flat = tf.reshape(images, [8, 64])
  def branch():
    return slim.fully_connected(
        flat, 3, activation_fn=None, scope="branch_dense",
        weights_regularizer=slim.l2_regularizer(0.01))
  logits = tf.cond(tf.constant(True), branch, lambda: tf.zeros([8, 3]))
  loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
  return loss, None


I, M, B, F, U = S.INCLUDED, S.MISSING, S.BLOCKED, S.FROZEN, S.UNREACHABLE

# (scenario, expected statuses in collection order, ok)
SCENARIOS = (
    (seed_bug, (M, M), False),
    (get_total_loss, (I, I), True),
    (slim_get_total_loss, (I, I), True),
    (total_loss_from, (I, I), True),
    (hand_sum, (I, I), True),
    (scaled_sum, (I, I), True),
    (stop_gradient, (B, B), False),
    (prevent_gradient, (B, B), False),
    (round_op, (B, B), False),
    (floor_op, (B, B), False),
    (straight_through_round, (I, I), True),
    (integer_cast, (B, B), False),
    (control_dependency_only, (M, M), False),
    (fine_tune_head_included, (F, I), True),
    (fine_tune_head_missing, (F, M), False),
    (ref_variables_included, (I, I), True),
    (ref_variables_missing, (M, M), False),
    (partitioned_missing, (M, M, M), False),
    (partitioned_get_total_loss, (I, I, I), True),
    (partitioned_total_loss_from, (I, I, I), True),
    (get_variable_regularizer_missing, (M,), False),
    (get_variable_regularizer_get_total_loss, (I,), True),
    (shared_towers_included, (I, I), True),
    (shared_towers_missing, (M, M), False),
    (v1_control_flow_included, (I, I), True),
    (v1_control_flow_missing, (M, M), False),
    (v2_control_flow_included, (I, I), True),
    (v2_control_flow_missing, (M, M), False),
    (tf_function_included, (I, I), True),
    (tf_function_missing, (M, M), False),
    (tf_function_stop_gradient, (B, B), False),
    (tf_function_nested_stop_gradient, (B, B), False),
    (tf_function_other_output, (B, B), False),
    (tf_function_second_output, (I, I), True),
    (duplicated_in_collection, (I, I), True),
    (unregularized, (), True),
    (cond_branch_layer, (U,), False),
)


class CheckScenarioTest(parameterized.TestCase):

  @parameterized.named_parameters(
      (build.__name__, build, statuses, ok)
      for build, statuses, ok in SCENARIOS)
  def test_scenario(self, build, statuses, ok):
    with tf.Graph().as_default() as graph:
      loss, variables = build()
      ops_before = helpers.count_ops(graph)
      collections_before = {
          name: list(graph.get_collection(name))
          for name in graph.get_all_collection_keys()}
      report = safetrain.check_regularization(loss, variables)
      # The check reads the graph and adds nothing to it.
      self.assertEqual(helpers.count_ops(graph), ops_before)
      self.assertEqual(
          {name: list(graph.get_collection(name))
           for name in graph.get_all_collection_keys()}, collections_before)
    self.assertEqual(tuple(t.status for t in report.terms), statuses)
    self.assertEqual(report.ok, ok)
    self.assertEqual(bool(report.missing), not ok)


class MatchingTest(absltest.TestCase):

  def test_variables_found_by_dependency_not_name(self):
    with tf.Graph().as_default():
      report = safetrain.check_regularization(helpers.cross_entropy())
    # slim names the loss after the Keras layer's kernel, not the variable.
    self.assertEqual(report.terms[0].name,
                     "conv1/kernel/Regularizer/l2_regularizer:0")
    self.assertEqual(report.terms[0].variables, ("conv1/weights",))
    self.assertEqual(report.terms[1].variables, ("logits/weights",))

  def test_partition_shards_each_have_their_variable(self):
    with tf.Graph().as_default():
      report = safetrain.check_regularization(_partitioned_loss())
    self.assertEqual([t.variables for t in report.terms],
                     [("w/part_0",), ("w/part_1",), ("w/part_2",)])

  def test_cond_branch_term_names_the_captured_variable(self):
    with tf.Graph().as_default():
      loss, _ = cond_branch_layer()
      report = safetrain.check_regularization(loss)
    term, = report.terms
    self.assertEqual(term.variables, ("branch_dense/weights",))
    self.assertTrue(term.required)
    self.assertIn("another graph", report.missing_message("test"))

  def test_shared_tower_variables_have_one_loss(self):
    with tf.Graph().as_default():
      loss, _ = shared_towers_included()
      report = safetrain.check_regularization(loss)
    self.assertLen(report.terms, 2)


class CollectionTest(absltest.TestCase):

  def test_an_op_in_the_collection_is_skipped_not_a_crash(self):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      tf.compat.v1.add_to_collection(REG, tf.no_op(name="not_a_loss"))
      with self.assertLogs(logger="absl", level="WARNING") as logs:
        report = safetrain.check_regularization(loss)
    self.assertLen(report.terms, 2)
    self.assertIn("not_a_loss", "\n".join(logs.output))


class ScopeTest(parameterized.TestCase):

  @parameterized.parameters(
      ("clone_1/conv/l2:0", "clone_1", True),
      ("clone_10/conv/l2:0", "clone_1", False),
      ("clone_1", "clone_1", True),
      ("clone_1/x", "clone_1/", True),
      ("anything", None, True),
  )
  def test_in_scope_has_a_slash_boundary(self, name, scope, expected):
    self.assertEqual(_check.in_scope(name, scope), expected)

  def test_regularization_losses_by_scope(self):
    with tf.Graph().as_default():
      for scope in ("clone_1", "clone_10"):
        with tf.name_scope(scope):
          w = tf.Variable(np.ones(2, np.float32))
          tf.compat.v1.add_to_collection(REG, tf.reduce_sum(w))
      taken = _check.regularization_losses(tf.compat.v1.get_default_graph(),
                                           "clone_1")
    self.assertEqual([t.name for t in taken], ["clone_1/Sum:0"])


class CoefficientTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("once", lambda l, r: l + r, 1.0),
      ("scaled", lambda l, r: 0.5 * (l + r), 0.5),
      ("twice", lambda l, r: l + r + r, 2.0),
      ("mean_of_two", lambda l, r: tf.reduce_mean(tf.stack([l + r, l + r])),
       1.0),
  )
  def test_coefficient(self, combine, expected):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      loss = combine(loss, _reg_sum())
      report = safetrain.check_regularization(loss, expected_coefficient=1.0)
    self.assertEqual([t.coefficient for t in report.terms],
                     [expected, expected])
    self.assertEqual(bool(report.overcounted), expected > 1.0)

  def test_get_total_loss_counts_a_duplicated_entry_twice(self):
    with tf.Graph().as_default():
      helpers.cross_entropy()
      first = helpers.regularization()[0]
      tf.compat.v1.add_to_collection(REG, first)
      doubled = tf.compat.v1.losses.get_total_loss()
      report = safetrain.check_regularization(doubled,
                                              expected_coefficient=1.0)
    self.assertEqual([t.coefficient for t in report.terms], [2.0, 1.0])
    self.assertEqual([t.name for t in report.overcounted], [first.name])


if __name__ == "__main__":
  absltest.main()
