"""The coefficient of each regularization loss in the optimized loss.

A scenario table: each way a loss can combine a data loss ``d`` and the
regularization sum ``r``, and the coefficient the graph must show for ``r``
(None where the graph does not show it). Every expected value is what
``tf.gradients(loss, r)`` gives, and a test checks that too.
"""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import safetrain
from safetrain.graph import _coefficient
from safetrain.graph import _graph

import helpers

REG = tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES


def _vector(d):
  return tf.fill([4], d)  # Elementwise data, fully defined shape.


@tf.function
def _double(x):
  return 2.0 * x


# (name, combine(d, r) -> loss, expected coefficient of r)
SCENARIOS = (
    ("once", lambda d, r: d + r, 1.0),
    ("add_n", lambda d, r: tf.add_n([d, r]), 1.0),
    ("twice_add_n", lambda d, r: tf.add_n([d, r, r]), 2.0),
    ("twice_plus", lambda d, r: d + r + r, 2.0),
    ("constant_times", lambda d, r: 0.5 * (d + r), 0.5),
    ("times_constant", lambda d, r: (d + r) * 3.0, 3.0),
    ("truediv_int", lambda d, r: (d + r) / 2, 0.5),
    ("compat_v1_div", lambda d, r: tf.compat.v1.div(d + r, 4.0), 0.25),
    ("math_divide", lambda d, r: tf.math.divide(d + r, 2.0), 0.5),
    ("scalar_mul", lambda d, r: tf.math.scalar_mul(0.5, d + r), 0.5),
    ("multiply_no_nan", lambda d, r: tf.math.multiply_no_nan(d + r, 2.0),
     2.0),
    ("divide_no_nan", lambda d, r: tf.math.divide_no_nan(d + r, 2.0), 0.5),
    ("folded_reciprocal",
     lambda d, r: (1.0 / tf.cast(tf.constant(4), tf.float32)) * (d + r), 0.25),
    ("folded_negative", lambda d, r: d - (-1.0 * r), 1.0),
    ("neg_neg", lambda d, r: d - tf.negative(r), 1.0),
    ("sub", lambda d, r: d + 2.0 * r - r, 1.0),
    ("mean_of_two", lambda d, r: tf.reduce_mean(tf.stack([d + r, d + r])),
     1.0),
    ("sum_of_two", lambda d, r: tf.reduce_sum(tf.stack([d + r, d + r])), 2.0),
    ("broadcast_then_mean", lambda d, r: tf.reduce_mean(_vector(d) + r), 1.0),
    ("broadcast_then_sum", lambda d, r: tf.reduce_sum(_vector(d) + r), 4.0),
    ("broadcast_to_then_mean",
     lambda d, r: tf.reduce_mean(tf.broadcast_to(r, [3, 2])) + d, 1.0),
    ("tile_then_sum",
     lambda d, r: tf.reduce_sum(tf.tile(tf.reshape(r, [1]), [3])) + d, 3.0),
    ("partial_mean",
     lambda d, r: tf.reduce_sum(
         tf.reduce_mean(tf.broadcast_to(r, [2, 5]), axis=1)) + d, 2.0),
    ("clone_sum_2",
     lambda d, r: tf.add_n([tf.add_n([d / 2.0, r]), d / 2.0]), 1.0),
    ("per_clone_2", lambda d, r: tf.add_n([d / 2.0 + r, d / 2.0 + r]), 2.0),
    ("per_clone_scaled_2",
     lambda d, r: tf.add_n([(d + r) / 2.0, (d + r) / 2.0]), 1.0),
    ("cast_identity", lambda d, r: d + tf.identity(tf.cast(r, tf.float32)),
     1.0),
    ("product_of_tensors", lambda d, r: d + r * tf.sqrt(d), None),
    ("tf_function", lambda d, r: d + _double(r), None),
    ("nonlinear", lambda d, r: d + tf.square(r), None),
)


def _reg_sum():
  return tf.add_n(helpers.regularization())


class CoefficientScenarioTest(parameterized.TestCase):

  @parameterized.named_parameters(*SCENARIOS)
  def test_coefficient(self, combine, expected):
    with tf.Graph().as_default() as graph:
      data = helpers.cross_entropy()
      loss = combine(data, _reg_sum())
      ops_before = len(graph.get_operations())
      report = safetrain.check_regularization(loss, expected_coefficient=1.0)
      self.assertLen(graph.get_operations(), ops_before)  # Adds nothing.
      terms = helpers.regularization()
      gradients = tf.gradients(loss, terms)
      with tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        measured = session.run(gradients)
    self.assertEqual([t.status for t in report.terms],
                     [safetrain.Status.INCLUDED] * 2)
    if expected is None:
      self.assertEqual([t.coefficient for t in report.terms], [None, None])
      self.assertFalse(report.overcounted)
    else:
      for term in report.terms:
        self.assertAlmostEqual(term.coefficient, expected, places=6)
      # The graph reading agrees with what TensorFlow differentiates.
      np.testing.assert_allclose(measured, [expected, expected], rtol=1e-6)
      # A whole loss scaled by a constant keeps the balance of data and
      # decay: "once" then means that constant.
      relative = expected / report.scale
      self.assertEqual(bool(report.overcounted), relative > 1.0 + 1e-6)
      self.assertEqual(bool(report.undercounted), relative < 1.0 - 1e-6)

  @parameterized.named_parameters(
      ("times_constant", lambda d, r: (d + r) * 3.0, 3.0, True),
      ("constant_times", lambda d, r: 0.5 * (d + r), 0.5, True),
      ("divided", lambda d, r: tf.math.divide(d + r, 4.0), 0.25, True),
      ("through_identity", lambda d, r: tf.identity(2.0 * (d + r)), 2.0,
       True),
      ("sum", lambda d, r: d + r, 1.0, True),
      # d + 0.5 r: the mean is not a scale of the whole, the decay is halved.
      ("mean_of_a_vector", lambda d, r: tf.reduce_mean(tf.stack([d + r, d])),
       1.0, False),
      # Minimizing -(log-likelihood - decay) minimizes the decay: right.
      ("negated_log_likelihood", lambda d, r: tf.negative(-d - r), 1.0, True),
      ("minus_times", lambda d, r: -2.0 * (-d - r), 2.0, True),
      # -(data + decay) maximizes the decay: wrong, however it is scaled.
      ("negated_sum", lambda d, r: tf.negative(d + r), 1.0, False),
      ("negative_factor", lambda d, r: (d + r) * -0.5, 0.5, False),
  )
  def test_whole_scale(self, combine, scale, ok):
    with tf.Graph().as_default():
      loss = combine(helpers.cross_entropy(), _reg_sum())
      report = safetrain.check_regularization(loss, expected_coefficient=1.0)
    self.assertAlmostEqual(report.scale, scale, places=6)
    self.assertEqual(report.ok, ok, report.to_text())

  def test_a_negated_decay_is_refused_and_named(self):
    with tf.Graph().as_default():
      loss = tf.negative(helpers.cross_entropy() + _reg_sum())
      with self.assertRaisesRegex(safetrain.TooWeakRegularizationError,
                                  "negative sign: minimizing the loss "
                                  "maximizes them"):
        safetrain.create_train_op_safe(
            loss, tf.compat.v1.train.GradientDescentOptimizer(0.1))

  def test_the_scenarios_cover_both_verdicts(self):
    verdicts = {e is not None and e > 1.0 for _, _, e in SCENARIOS}
    self.assertEqual(verdicts, {True, False})


class ContributionsTest(absltest.TestCase):

  def _routes(self, loss, tensor):
    walk = _graph.Walk([loss], differentiable=True)
    found = _coefficient.contributions(loss, {0: (_graph.key(tensor),)},
                                       walk)
    return found[0]

  def test_names_each_op_that_adds_the_term(self):
    with tf.Graph().as_default():
      data = helpers.cross_entropy()
      reg = _reg_sum()
      with tf.name_scope("clone_0"):
        first = tf.add(data / 2.0, reg, name="clone_loss")
      with tf.name_scope("clone_1"):
        second = tf.add(data / 2.0, reg, name="clone_loss")
      loss = tf.add_n([first, second], name="total")
      routes = self._routes(loss, reg)
    self.assertEqual(routes, [
        _coefficient.Contribution("clone_0/clone_loss", (1,), 1.0),
        _coefficient.Contribution("clone_1/clone_loss", (1,), 1.0),
    ])

  def test_one_op_adding_a_term_twice_shows_both_inputs(self):
    with tf.Graph().as_default():
      helpers.cross_entropy()
      first = helpers.regularization()[0]
      tf.compat.v1.add_to_collection(REG, first)
      loss = tf.compat.v1.losses.get_total_loss()
      routes = self._routes(loss, first)
    self.assertEqual(routes, [
        _coefficient.Contribution("total_loss", (1, 3), 2.0)])

  def test_a_term_not_in_the_loss_has_no_route(self):
    with tf.Graph().as_default():
      data = helpers.cross_entropy()
      routes = self._routes(data, helpers.regularization()[0])
    self.assertEqual(routes, [])

  def test_unknown_route_has_no_coefficient(self):
    with tf.Graph().as_default():
      data = helpers.cross_entropy()
      reg = _reg_sum()
      loss = data + tf.square(reg)
      routes = self._routes(loss, reg)
    self.assertLen(routes, 1)
    self.assertIsNone(routes[0].coefficient)


  def test_the_model_body_is_not_visited(self):
    # Only ops between the terms and the loss can carry a coefficient.
    with tf.Graph().as_default():
      data = helpers.cross_entropy()
      terms = helpers.regularization()
      loss = tf.add_n([data, tf.add_n(terms, name="reg")], name="total")
      walk = _graph.Walk([loss], differentiable=True)
      between = _coefficient._between(walk, [_graph.key(t) for t in terms])
    self.assertEqual(
        sorted(op.name for op in between),
        sorted([t.op.name for t in terms] + ["reg", "total"]))
    self.assertGreater(len(walk.ops), 3 * len(between))


class ScalarConstantTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("const", lambda: tf.constant(2.0), 2.0),
      ("int_cast", lambda: tf.cast(tf.constant(3), tf.float32), 3.0),
      ("reciprocal", lambda: tf.math.reciprocal(tf.constant(4.0)), 0.25),
      ("quotient", lambda: tf.constant(1.0) / tf.constant(8.0), 0.125),
      ("sum", lambda: tf.constant(1.0) + tf.constant(2.0), 3.0),
      ("vector", lambda: tf.constant([1.0, 2.0]), None),
      ("placeholder",
       lambda: tf.compat.v1.placeholder_with_default(1.0, []), None),
      ("variable", lambda: tf.Variable(2.0).read_value(), None),
      ("divide_by_zero", lambda: tf.constant(1.0) / tf.constant(0.0), None),
  )
  def test_scalar_constant(self, build, expected):
    with tf.Graph().as_default():
      value = _coefficient.scalar_constant(build())
    if expected is None:
      self.assertIsNone(value)
    else:
      self.assertAlmostEqual(value, expected)


if __name__ == "__main__":
  absltest.main()
