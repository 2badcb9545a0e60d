"""Weight decay registered by hand (terms/_penalties), in the live check and
the audit alike.

The shapes come from real training code of the corpus (corpus/graphs.tsv):
TensorFlow's CIFAR-10 tutorial and its copies (the ``losses`` collection),
a collection of one's own, sums written into the loss, Python's ``sum()``,
and norms computed for summaries and constraints, which are no terms.
"""

from absl.testing import absltest
from absl.testing import parameterized
import tensorflow as tf

import safetrain
from safetrain.terms import _penalties

import helpers

V = safetrain.Verdict


def _model():
  """Two dense layers on random inputs: (logits, variables, data loss)."""
  x = tf.random.stateless_uniform([8, 4], seed=[1, 2])
  labels = tf.constant([0, 1, 2, 0, 1, 2, 0, 1])
  w1 = tf.compat.v1.get_variable("local3/weights", [4, 5])
  b1 = tf.compat.v1.get_variable("local3/biases", [5],
                                 initializer=tf.zeros_initializer())
  w2 = tf.compat.v1.get_variable("softmax/weights", [5, 3])
  b2 = tf.compat.v1.get_variable("softmax/biases", [3],
                                 initializer=tf.zeros_initializer())
  logits = tf.matmul(tf.nn.relu(tf.matmul(x, w1) + b1), w2) + b2
  data = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits), name="cross_entropy")
  return (w1, b1, w2, b2), data


def _cifar10(add_total=True):
  """The tutorial: wd * l2_loss(w) in 'losses', total = add_n of them."""
  (w1, _, w2, _), data = _model()
  for w in (w1, w2):
    tf.compat.v1.add_to_collection(
        "losses", tf.multiply(tf.nn.l2_loss(w), 0.004, name="weight_loss"))
  tf.compat.v1.add_to_collection("losses", data)
  if add_total:
    return tf.add_n(tf.compat.v1.get_collection("losses"), name="total_loss")
  return data


def _own_collection_never_summed():
  (w1, _, w2, _), data = _model()
  for w in (w1, w2):
    tf.compat.v1.add_to_collection("weight_decay", 1e-4 * tf.nn.l2_loss(w))
  return data


def _hand_sum():
  """Official ResNet's: loss + wd * add_n(l2_loss(v) for kernels)."""
  (w1, _, w2, _), data = _model()
  return data + 2e-4 * tf.add_n([tf.nn.l2_loss(w) for w in (w1, w2)])


def _python_sum():
  """sum(map(tf.nn.l2_loss, ...)): Python's sum starts from 0."""
  (w1, _, w2, _), data = _model()
  return data + 1e-3 * sum(map(tf.nn.l2_loss, (w1, w2)))


def _hand_sum_left_out():
  """The sum is built, and nothing adds it: the forgotten line."""
  (w1, _, w2, _), data = _model()
  regularization = 2e-4 * tf.add_n([tf.nn.l2_loss(w) for w in (w1, w2)])
  del regularization
  return data


def _squares_and_abs():
  """Sum(square(w)) and sum(abs(w)) written out, unscaled, in the loss."""
  (w1, _, w2, _), data = _model()
  return (data + tf.reduce_sum(tf.square(w1)) + tf.reduce_sum(tf.abs(w2)))


def _summaries_and_constraints():
  """Norms of weights for a summary and a max-norm constraint: no terms.

  Scaled too, as tf_slim's nets examples summarize 0.5 * sum(w^2).
  """
  (w1, b1, w2, b2), data = _model()
  tf.compat.v1.summary.scalar("w1_norm", tf.nn.l2_loss(w1))
  tf.compat.v1.summary.scalar("b2_sq", 0.5 * tf.reduce_sum(tf.square(b2)))
  # The parameters' norm, logged: sqrt(2 * sum(l2_loss(p))).
  tf.compat.v1.summary.scalar("pnorm", tf.compat.v1.global_norm([w1, b1]))
  tf.compat.v1.summary.scalar("b1_norm", tf.sqrt(tf.reduce_sum(
      tf.square(b1)) + 1e-8))
  tf.compat.v1.assign(w2, tf.clip_by_norm(w2, 3.0, axes=[0]))
  tf.compat.v1.summary.scalar("w2_norm", tf.norm(w2))
  return data


# (build, expected verdicts, number of terms found)
SCENARIOS = (
    (_cifar10, (), 2),
    (lambda: _cifar10(add_total=False), (V.MISSING,), 2),
    (_own_collection_never_summed, (V.MISSING,), 2),
    (_hand_sum, (), 1),
    (_python_sum, (), 1),
    (_hand_sum_left_out, (V.MISSING,), 1),
    (_squares_and_abs, (), 2),
    (_summaries_and_constraints, (), 0),
)


def _named():
  names = ("cifar10", "cifar10_cross_entropy_only", "own_collection",
           "hand_sum", "python_sum", "hand_sum_left_out", "squares_and_abs",
           "summaries_and_constraints")
  return tuple((n,) + s for n, s in zip(names, SCENARIOS, strict=True))



class PenaltyTermsTest(parameterized.TestCase):

  @parameterized.named_parameters(*_named())
  def test_live_check_and_audit_agree(self, build, expected, terms):
    with tf.Graph().as_default():
      loss = build()
      report = safetrain.check_regularization(loss, expected_coefficient=1.0)
      self.assertLen(report.terms, terms)
      self.assertEqual(
          helpers.raised_verdicts(lambda: safetrain.create_train_op_safe(
              loss, tf.compat.v1.train.GradientDescentOptimizer(0.1))),
          expected)
      tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss)
      path = helpers.make_tempdir(self) + "/model.meta"
      tf.compat.v1.train.export_meta_graph(filename=path)
      # The backward pass multiplies the cores by scalars too: none of it
      # is a term.
      self.assertLen(safetrain.check_regularization(loss).terms, terms)
    self.assertEqual(safetrain.audit_meta_graph(path).verdicts, expected)
    self.assertEqual(
        safetrain.audit_meta_graph(path, per_variable=True).verdicts,
        expected)

  def test_the_tutorials_term_is_what_its_collection_holds(self):
    with tf.Graph().as_default():
      loss = _cifar10()
      report = safetrain.check_regularization(loss, expected_coefficient=1.0)
    self.assertEqual([t.name for t in report.terms],
                     ["weight_loss:0", "weight_loss_1:0"])
    self.assertEqual([t.coefficient for t in report.terms], [1.0, 1.0])
    self.assertEqual([t.variables for t in report.terms],
                     [("local3/weights",), ("softmax/weights",)])

  def test_a_hand_sum_is_one_term_counted_once(self):
    with tf.Graph().as_default():
      loss = _hand_sum()
      (term,) = safetrain.check_regularization(
          loss, expected_coefficient=1.0).terms
    self.assertEqual(term.variables, ("local3/weights", "softmax/weights"))
    self.assertEqual(term.coefficient, 1.0)

  def test_the_fix_adds_the_left_out_terms(self):
    with tf.Graph().as_default():
      data = _cifar10(add_total=False)
      total = safetrain.total_loss_from(data)
      report = safetrain.check_regularization(total,
                                              expected_coefficient=1.0)
      self.assertTrue(report.ok)
      self.assertEqual([t.coefficient for t in report.terms], [1.0, 1.0])

  def test_the_ledger_shows_the_decay_of_a_hand_sum(self):
    with tf.Graph().as_default():
      loss = _hand_sum()
      train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(
          loss)
      rows = {r.variable: r for r in safetrain.ledger(train_op).rows}
    self.assertTrue(rows["local3/weights"].decayed)
    (mechanism,) = rows["local3/weights"].mechanisms
    self.assertEqual(mechanism.kind, "L2")
    self.assertAlmostEqual(mechanism.l2, 1e-4)  # wd * l2_loss = wd/2 sum(w^2)
    self.assertAlmostEqual(rows["local3/weights"].decay, 1 - 0.1 * 2e-4)
    self.assertFalse(rows["local3/biases"].decayed)

  def test_two_losses_over_overlapping_parts_of_one_collection(self):
    # A script that builds its model twice in one graph: the first loss
    # sums two terms of 'losses', the second all four. Each update includes
    # what regularizes the variables it trains.
    with tf.Graph().as_default():
      updates = []
      for _ in range(2):
        (w1, _, w2, _), data = _model() if not updates else _second_model()
        for w in (w1, w2):
          tf.compat.v1.add_to_collection(
              "losses", tf.multiply(tf.nn.l2_loss(w), 1e-4))
        loss = data + tf.add_n(tf.compat.v1.get_collection("losses"))
        updates.append(tf.compat.v1.train.GradientDescentOptimizer(
            0.1).minimize(loss))
      path = helpers.make_tempdir(self) + "/model.meta"
      tf.compat.v1.train.export_meta_graph(filename=path)
    result = safetrain.audit_meta_graph(path)
    self.assertEqual(result.verdicts, ())
    first, second = result.train_ops
    self.assertEqual(
        sorted(t.status.value for t in first.reports[0].terms),
        ["frozen", "frozen", "included", "included"])
    self.assertEqual(
        [t.status.value for t in second.reports[0].terms], ["included"] * 4)

  def test_towers_each_with_its_own_terms_count_each_once(self):
    # TensorFlow's multi-GPU CIFAR-10 tutorial: each tower builds the model
    # on shared variables, its own wd * l2_loss(w) in 'losses' under its
    # scope, its loss from those alone, and the towers' gradients are
    # averaged. Tower 1's term computes what tower 0's does; it is a term
    # of its own, not a second copy of tower 0's.
    with tf.Graph().as_default():
      optimizer = tf.compat.v1.train.GradientDescentOptimizer(0.1)
      tower_grads = []
      for i in range(2):
        with tf.compat.v1.variable_scope("", reuse=i > 0):
          with tf.name_scope(f"tower_{i}") as scope:
            (w1, _, w2, _), data = _model()
            for w in (w1, w2):
              tf.compat.v1.add_to_collection(
                  "losses", tf.multiply(tf.nn.l2_loss(w), 0.004,
                                        name="weight_loss"))
            tf.compat.v1.add_to_collection("losses", data)
            loss = tf.add_n(tf.compat.v1.get_collection("losses", scope))
            tower_grads.append(optimizer.compute_gradients(loss))
      averaged = [(tf.reduce_mean(tf.stack([g for g, _ in pairs]), 0),
                   pairs[0][1]) for pairs in zip(*tower_grads)]
      with safetrain.guard_optimizers():
        optimizer.apply_gradients(averaged)  # The live guard: no verdict.
      path = helpers.make_tempdir(self) + "/model.meta"
      tf.compat.v1.train.export_meta_graph(filename=path)
    result = safetrain.audit_meta_graph(path)
    self.assertEqual(result.verdicts, ())
    (report,) = result.train_ops[0].reports
    self.assertEqual([t.coefficient for t in report.terms], [1.0] * 4)

  def test_a_term_of_strength_zero_decays_nothing(self):
    # The tutorial run with wd=0.0: the terms are there, included, and zero.
    with tf.Graph().as_default():
      (w1, _, _, _), data = _model()
      tf.compat.v1.add_to_collection(
          "losses", tf.multiply(tf.nn.l2_loss(w1), 0.0, name="weight_loss"))
      tf.compat.v1.add_to_collection("losses", data)
      loss = tf.add_n(tf.compat.v1.get_collection("losses"))
      train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(
          loss)
      rows = {r.variable: r for r in safetrain.ledger(train_op).rows}
    (term,) = rows["local3/weights"].mechanisms
    self.assertEqual((term.kind, term.l2), ("L2", 0.0))
    self.assertFalse(rows["local3/weights"].decayed)

  def test_a_norm_that_is_no_term_is_not_found(self):
    with tf.Graph().as_default() as graph:
      _summaries_and_constraints()
      self.assertEqual(_penalties.penalty_terms(graph), [])


def _second_model():
  with tf.compat.v1.variable_scope("second"):
    return _model()


if __name__ == "__main__":
  absltest.main()
