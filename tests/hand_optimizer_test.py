"""Optimizers written by hand: updates by assigns, decay inside the update.

BERT's ``AdamWeightDecayOptimizer`` and Keras 2's optimizers in TF1 graphs
write each variable's new value with plain assigns (no ``Apply*`` op), and
BERT's (like ``tf.contrib.opt.AdamWOptimizer``) decays the weights inside
its update. The audit must find such a train op, its loss and variables
(rule/_trace), and see the decay (terms/_decoupled): with an L2 term of the
loss on the same variable, it is decayed twice. The optimizers here are
written for these tests, in the shapes those graphs have.
"""

from absl.testing import absltest
from absl.testing import parameterized
import tensorflow as tf

import safetrain
from safetrain.tf1 import _train

import helpers

V = safetrain.Verdict


def _assign_sgd(loss, lr=0.1, momentum=0.9):
  """Keras 2's SGD with momentum, as its get_updates writes it."""
  variables = tf.compat.v1.trainable_variables()
  grads = tf.gradients(loss, variables)
  updates = []
  for g, p in zip(grads, variables, strict=True):
    m = tf.Variable(tf.zeros(p.shape), trainable=False)
    v = momentum * m - lr * g
    updates += [tf.compat.v1.assign(m, v),
                tf.compat.v1.assign(p, p + v)]
  return tf.group(*updates, name="training/group_deps")


def _adam_weight_decay(loss, lr=0.01, wd=0.01, exclude=("biases",)):
  """BERT-style Adam: new = w - lr * (m / (sqrt(v) + eps) + wd * w)."""
  variables = tf.compat.v1.trainable_variables()
  grads = tf.gradients(loss, variables)
  assignments = []
  for g, w in zip(grads, variables, strict=True):
    m = tf.Variable(tf.zeros(w.shape), trainable=False)
    v = tf.Variable(tf.zeros(w.shape), trainable=False)
    next_m = 0.9 * m + 0.1 * g
    next_v = 0.999 * v + 0.001 * tf.square(g)
    update = next_m / (tf.sqrt(next_v) + 1e-6)
    if not any(e in w.op.name for e in exclude):
      update += wd * w
    assignments += [tf.compat.v1.assign(w, w - lr * update),
                    tf.compat.v1.assign(m, next_m),
                    tf.compat.v1.assign(v, next_v)]
  return tf.group(*assignments, name="train_op")


def _decay_then_sgd(loss, wd=1e-4):
  """contrib's DecoupledWeightDecayExtension: w -= wd * w, then the update."""
  variables = [v for v in tf.compat.v1.trainable_variables()
               if "weights" in v.op.name]
  decays = [tf.compat.v1.assign_sub(v, wd * v) for v in variables]
  with tf.control_dependencies(decays):
    return tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss)


def _build(optimizer, weight_decay, included):
  loss = helpers.cross_entropy(weight_decay=weight_decay)
  if included and helpers.regularization():
    loss = loss + tf.add_n(helpers.regularization())
  return optimizer(loss)


def _proximal_adagrad(loss):
  """Wide & deep's DNN optimizer: L2 in its own update (l2 input > 0)."""
  return tf.compat.v1.train.ProximalAdagradOptimizer(
      0.1, l1_regularization_strength=0.01,
      l2_regularization_strength=0.01).minimize(loss)


def _placeholder_scale_l2(optimizer):
  """An L2 term whose scale is fed (a placeholder with a default)."""
  loss = helpers.cross_entropy(weight_decay=0.0)
  scale = tf.compat.v1.placeholder_with_default(1e-3, [], name="wd")
  kernels = [v for v in tf.compat.v1.trainable_variables()
             if "weights" in v.op.name]
  loss += scale * tf.add_n([tf.nn.l2_loss(v) for v in kernels])
  return optimizer(loss)


def _no_decay_term(optimizer):
  return lambda: _build(optimizer, 0.0, True)


SCENARIOS = (
    ("assign_sgd_included", lambda: _build(_assign_sgd, 0.01, True), ()),
    ("assign_sgd_left_out", lambda: _build(_assign_sgd, 0.01, False),
     (V.MISSING,)),
    ("adamw_alone", _no_decay_term(_adam_weight_decay), ()),
    ("adamw_over_l2", lambda: _build(_adam_weight_decay, 0.01, True),
     (V.DOUBLED,)),
    ("decay_then_sgd_alone", _no_decay_term(_decay_then_sgd), ()),
    ("decay_then_sgd_over_l2", lambda: _build(_decay_then_sgd, 0.01, True),
     (V.DOUBLED,)),
    # The term's scale is no constant: still an L2 term of each kernel.
    ("adamw_over_placeholder_scaled_l2",
     lambda: _placeholder_scale_l2(_adam_weight_decay), (V.DOUBLED,)),
    ("proximal_l2_alone", _no_decay_term(_proximal_adagrad), ()),
    ("proximal_l2_over_l2", lambda: _build(_proximal_adagrad, 0.01, True),
     (V.DOUBLED,)),
)



class HandOptimizerTest(parameterized.TestCase):

  @parameterized.named_parameters(*SCENARIOS)
  def test_every_check_of_the_built_train_op_agrees(self, build, expected):
    with tf.Graph().as_default():
      train_op = build()
      found = {
          "ledger": safetrain.ledger(train_op).verdicts,
          "slim.learning.train": helpers.raised_verdicts(
              lambda: _train.check_train_op(train_op, "raise", "train")),
      }
      path = helpers.make_tempdir(self) + "/model.ckpt-1.meta"
      tf.compat.v1.train.export_meta_graph(filename=path)
    result = safetrain.audit_meta_graph(path)
    self.assertEqual(result.unchecked, ())
    found["audit"] = result.verdicts
    found["audit --per-variable"] = safetrain.audit_meta_graph(
        path, per_variable=True).verdicts
    self.assertEqual(found, {name: expected for name in found})

  def test_the_assign_optimizer_trains_the_model_not_its_slots(self):
    with tf.Graph().as_default() as graph:
      train_op = _build(_assign_sgd, 0.01, True)
      self.assertEqual(safetrain.find_train_ops(graph), (train_op,))
      trace = safetrain.trace_train_op(train_op)
    self.assertEqual(trace.variables, ("conv1/biases", "conv1/weights",
                                       "logits/biases", "logits/weights"))
    self.assertLen(trace.losses, 1)

  def test_the_ledger_shows_decay_inside_the_update(self):
    with tf.Graph().as_default():
      train_op = _no_decay_term(_adam_weight_decay)()
      rows = {r.variable: r for r in safetrain.ledger(train_op).rows}
    (kernel,) = rows["conv1/weights"].mechanisms
    self.assertEqual((kernel.kind, kernel.status), ("decoupled", "applied"))
    self.assertAlmostEqual(kernel.rate, 0.01)
    self.assertTrue(rows["conv1/weights"].decayed)
    self.assertEqual(rows["conv1/biases"].mechanisms, ())
    # BiasAdd reads it; the update's w - lr * u is no batch norm's offset.
    self.assertEqual(rows["conv1/biases"].kind, "bias")

  def test_terms_left_out_beside_decoupled_decay_are_no_ok(self):
    # BERT-style decay in the update, L2 regularizers made and left out of
    # the loss: the verdict is MISSING; the ledger's text must not say OK.
    with tf.Graph().as_default():
      train_op = _build(_adam_weight_decay, 0.01, False)
      ledger = safetrain.ledger(train_op)
    self.assertEqual(ledger.verdicts, (V.MISSING,))
    self.assertNotIn("OK:", ledger.to_text())

  def test_an_l2_term_with_a_fed_scale_is_l2_decay(self):
    with tf.Graph().as_default():
      train_op = _placeholder_scale_l2(_assign_sgd)
      rows = {r.variable: r for r in safetrain.ledger(train_op).rows}
    (term,) = rows["conv1/weights"].mechanisms
    self.assertEqual((term.kind, term.l2), ("L2", None))
    self.assertTrue(rows["conv1/weights"].decayed)
    self.assertIsNone(rows["conv1/weights"].decay)  # lr*2c: c is not shown.

  def test_the_optimizers_own_l2_is_its_mechanism(self):
    with tf.Graph().as_default():
      train_op = _no_decay_term(_proximal_adagrad)()
      ledger = safetrain.ledger(train_op)
      rows = {r.variable: r for r in ledger.rows}
    (own,) = rows["conv1/weights"].mechanisms
    self.assertEqual((own.kind, own.status), ("decoupled", "applied"))
    self.assertAlmostEqual(own.l2, 0.01)
    self.assertIn("opt L2 0.01", ledger.to_text())

  def test_doubled_names_both_mechanisms(self):
    with tf.Graph().as_default():
      train_op = _build(_adam_weight_decay, 0.01, True)
      with self.assertRaises(safetrain.DoubleCountedRegularizationError) as e:
        _train.check_train_op(train_op, "raise", "train")
    message = str(e.exception)
    self.assertIn("conv1/weights", message)
    self.assertIn("decoupled wd=0.01", message)


if __name__ == "__main__":
  absltest.main()
