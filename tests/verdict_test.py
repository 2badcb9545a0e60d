"""One graph, one verdict: every entry point judges a scenario the same way.

Each scenario of ``check_test``'s table (and a few that only coefficients
tell apart) is built once. Then the same loss goes through every way into
safetrain: the API (``create_train_op_safe``), the drop-in
(``safetrain.slim.learning.create_train_op``), the optimizer guard
(``guard_optimizers`` around plain tf_slim), ``SafeOptimizer``,
``slim.learning.train``'s check of a built train op, the audit of the graph
saved as a MetaGraph (with and without ``--per-variable``) and the
weight-decay ledger of the train op. Their verdicts must be identical, and
equal to the one the table expects.
"""

import os
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import tensorflow as tf
import tf_slim

import safetrain
import safetrain.slim as slim
from safetrain.tf1 import _train

import check_test
import helpers
import penalties_test

V = safetrain.Verdict


def _doubled():
  loss = helpers.cross_entropy()
  reg = check_test._reg_sum()  # pylint: disable=protected-access
  return loss + reg + reg, None


def _too_weak():
  loss = helpers.cross_entropy()
  return loss + 0.5 * check_test._reg_sum(), None  # pylint: disable=protected-access


def _whole_loss_scaled():
  loss = helpers.cross_entropy()
  return 2.0 * (loss + check_test._reg_sum()), None  # pylint: disable=protected-access


def _head_decayed_by_two_terms():
  # A decay on every kernel plus an extra one on the head: two terms of the
  # loss on logits/weights, each counted once. The per-variable ledger
  # attributes both to it; the verdict must still be every check's.
  loss = helpers.cross_entropy()
  (head,) = [v for v in tf.compat.v1.trainable_variables()
             if v.op.name == "logits/weights"]
  tf.compat.v1.add_to_collection(
      tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES,
      tf.multiply(0.05, tf.nn.l2_loss(head), name="extra_head_decay"))
  return loss + check_test._reg_sum(), None  # pylint: disable=protected-access


def _losses_collection_summed():
  # TensorFlow's CIFAR-10 tutorial: wd * l2_loss(w) in 'losses', and the
  # total is their sum (terms/_penalties).
  return penalties_test._cifar10(), None  # pylint: disable=protected-access


def _losses_collection_left_out():
  return penalties_test._cifar10(add_total=False), None  # pylint: disable=protected-access


def _own_collection_never_summed():
  return penalties_test._own_collection_never_summed(), None  # pylint: disable=protected-access


def _hand_written_decay_sum():
  return penalties_test._hand_sum(), None  # pylint: disable=protected-access


# Scenarios that only coefficients tell apart, and weight decay registered
# by hand: (build, expected verdicts).
_COUNTED = (
    (_doubled, (V.DOUBLED,)),
    (_too_weak, (V.TOO_WEAK,)),
    (_whole_loss_scaled, ()),
    (_head_decayed_by_two_terms, ()),
    (_losses_collection_summed, ()),
    (_losses_collection_left_out, (V.MISSING,)),
    (_own_collection_never_summed, (V.MISSING,)),
    (_hand_written_decay_sum, ()),
)

SCENARIOS = tuple(
    (build.__name__.strip("_"), build, () if ok else (V.MISSING,))
    for build, _, ok in check_test.SCENARIOS) + tuple(
        (build.__name__.strip("_"), build, verdicts)
        for build, verdicts in _COUNTED)


# TensorFlow cannot import a MetaGraph whose REGULARIZATION_LOSSES names a
# tensor of a tf.cond branch (a function graph): the audit says so (exit 2).
_UNIMPORTABLE = "unimportable"
_AUDIT_CANNOT_IMPORT = ("cond_branch_layer",)
# TensorFlow cannot differentiate through PreventGradient: no train op can be
# built, so only the checks that refuse it first (naming the term blocked)
# give a verdict.
_NO_TRAIN_OP = ("prevent_gradient",)


def _sgd():
  return tf.compat.v1.train.GradientDescentOptimizer(0.1)



class VerdictEqualityTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.directory)

  def _all_entry_points(self, build):
    """{entry point: verdicts} for one scenario, built once."""
    found = {}
    with tf.Graph().as_default():
      loss, variables = build()
      # The API and the drop-in check before they build anything.
      found["create_train_op_safe"] = helpers.raised_verdicts(
          lambda: safetrain.create_train_op_safe(
              loss, _sgd(), variables_to_train=variables))
      found["safetrain.slim"] = helpers.raised_verdicts(
          lambda: slim.learning.create_train_op(
              loss, _sgd(), variables_to_train=variables))
      if build.__name__ in _NO_TRAIN_OP:
        with self.assertRaises(LookupError):
          tf_slim.learning.create_train_op(loss, _sgd())
        return found, safetrain.check_regularization(loss, variables)
      # The audit sees the graph as a script without safetrain saved it.
      plain = tf_slim.learning.create_train_op(
          loss, _sgd(), variables_to_train=variables)
      path = os.path.join(self.directory, "model.meta")
      tf.compat.v1.train.export_meta_graph(filename=path)
      try:
        found["audit"] = safetrain.audit_meta_graph(path).verdicts
        found["audit --per-variable"] = safetrain.audit_meta_graph(
            path, per_variable=True).verdicts
      except safetrain.AuditInputError:
        found["audit"] = found["audit --per-variable"] = _UNIMPORTABLE
      found["ledger"] = safetrain.ledger(plain).verdicts
      found["slim.learning.train"] = helpers.raised_verdicts(
          lambda: _train.check_train_op(plain, "raise", "train"))

      def guarded():
        with safetrain.guard_optimizers():
          tf_slim.learning.create_train_op(loss, _sgd(),
                                           variables_to_train=variables)
      found["guard"] = helpers.raised_verdicts(guarded)

      def wrapped():
        safetrain.SafeOptimizer(_sgd()).minimize(loss, var_list=variables)
      found["SafeOptimizer"] = helpers.raised_verdicts(wrapped)
      report = safetrain.check_regularization(loss, variables,
                                              expected_coefficient=1.0)
    return found, report

  @parameterized.named_parameters(*SCENARIOS)
  def test_every_entry_point_gives_the_same_verdict(self, build, expected):
    found, report = self._all_entry_points(build)
    if build.__name__ in _AUDIT_CANNOT_IMPORT:
      self.assertEqual(found.pop("audit"), _UNIMPORTABLE)
      self.assertEqual(found.pop("audit --per-variable"), _UNIMPORTABLE)
    self.assertEqual(found, {name: expected for name in found})
    self.assertEqual(report.ok, not expected)

  def test_the_scenarios_cover_every_counting_verdict(self):
    seen = {v for _, _, verdicts in SCENARIOS for v in verdicts}
    self.assertLessEqual({V.MISSING, V.DOUBLED, V.TOO_WEAK}, seen)
    self.assertIn((), [verdicts for _, _, verdicts in SCENARIOS])


if __name__ == "__main__":
  absltest.main()
