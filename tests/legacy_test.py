"""The audit of graphs in the shapes older TensorFlow wrote (audit/_legacy).

Each pattern comes from real saved training graphs (``corpus/graphs.tsv``):
a test rebuilds it with today's TensorFlow (``legacy_graphs``), shows that
the pattern is what stopped the audit (today's importer refuses it, or the
old trace found no loss), and that the audit now gives the verdict of the
same graph without the pattern, for a graph that includes its
regularization and for one that leaves it out.
"""

from absl.testing import absltest
from absl.testing import parameterized
import tensorflow as tf

import safetrain
from safetrain.audit import _legacy

import helpers
import legacy_graphs

V = safetrain.Verdict


def _verdicts(test, meta):
  path = legacy_graphs.write(meta, helpers.make_tempdir(test))
  result = safetrain.audit_meta_graph(path)
  return result.verdicts, result


def _both():
  """(name, MetaGraphDef, expected verdicts) of a correct and a wrong run."""
  return (("included", legacy_graphs.export(legacy_graphs.slim_train_op), ()),
          ("left_out", legacy_graphs.export(
              lambda: legacy_graphs.slim_train_op(included=False)),
           (V.MISSING,)))


class Tf1GradientSeedTest(parameterized.TestCase):

  def test_the_rewrite_seeds_through_fill(self):
    meta = legacy_graphs.tf1_gradient_seed(
        legacy_graphs.export(legacy_graphs.slim_train_op))
    with tf.Graph().as_default() as graph:
      tf.compat.v1.train.import_meta_graph(meta)
      fill = graph.get_operation_by_name("gradients/Fill")
      seed = graph.get_operation_by_name("gradients/grad_ys_0")
      self.assertEqual(seed.type, "Const")
      self.assertEqual([c.name for c in seed.outputs[0].consumers()],
                       ["gradients/Fill"])
      self.assertTrue(all("_grad/" in c.name
                          for c in fill.outputs[0].consumers()))

  def test_the_loss_is_found_through_the_fill(self):
    for name, meta, expected in _both():
      with self.subTest(name):
        found, result = _verdicts(self, legacy_graphs.tf1_gradient_seed(meta))
        self.assertEqual(result.unchecked, ())
        self.assertEqual(found, expected)


class ImporterRefusalsTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("dangling_collection_entry", legacy_graphs.dangling_entry),
      ("stale_output_shapes", legacy_graphs.stale_output_shapes),
  )
  def test_refused_by_the_importer_then_audited(self, rewrite):
    for name, meta, expected in _both():
      with self.subTest(name):
        rewritten = rewrite(meta)
        self.assertFalse(legacy_graphs.imports(rewritten))
        found, result = _verdicts(self, rewritten)
        self.assertEqual(result.unchecked, ())
        self.assertEqual(found, expected)

  def test_a_dangling_regularization_loss_cannot_be_checked(self):
    # A term the collection names but the graph lacks could be the one left
    # out: no verdict, one line saying what blocked it.
    meta = legacy_graphs.dangling_entry(
        legacy_graphs.export(legacy_graphs.slim_train_op),
        key=tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES, name="gone/l2:0")
    path = legacy_graphs.write(meta, helpers.make_tempdir(self))
    with self.assertRaisesRegex(safetrain.AuditInputError,
                                r"cannot check .* yet: .*gone/l2:0") as e:
      safetrain.audit_meta_graph(path)
    self.assertNotIn("\n", str(e.exception))

  def test_repair_says_what_it_changed(self):
    meta = legacy_graphs.stale_output_shapes(legacy_graphs.dangling_entry(
        legacy_graphs.export(legacy_graphs.slim_train_op)))
    repairs = _legacy.repair(meta)
    self.assertEqual(repairs.dropped, {"trainops": ("Adam",)})
    self.assertEqual(repairs.stand_ins, ())
    self.assertFalse(legacy_graphs.imports(meta))  # The shape hints remain,
    self.assertGreater(_legacy.strip_shape_hints(meta), 10)  # until asked.
    self.assertTrue(legacy_graphs.imports(meta))


class UnknownOpsTest(parameterized.TestCase):

  def _gradient(self, meta):
    """The name of the first conv kernel's gradient, as the update reads it."""
    for node in meta.graph_def.node:
      if (node.op.endswith("ApplyGradientDescent") and
          "conv1/weights" in node.name):
        return node.input[2].split(":")[0]
    raise AssertionError("no update of conv1/weights")

  def test_horovod_allreduce_on_the_gradients_passes_them_through(self):
    for name, meta, expected in _both():
      with self.subTest(name):
        rewritten, _ = legacy_graphs.unknown_op(
            meta, self._gradient(meta), op_type="HorovodAllreduce")
        self.assertFalse(legacy_graphs.imports(rewritten))
        found, result = _verdicts(self, rewritten)
        self.assertEqual(result.unchecked, ())
        self.assertEqual(found, expected)

  def test_an_unknown_op_off_the_terms_path_is_cut_out(self):
    # A custom kernel in the forward pass (between the inputs and the first
    # layer): the terms, the loss and the variables keep their verdict.
    for name, meta, expected in _both():
      with self.subTest(name):
        rewritten, _ = legacy_graphs.unknown_op(meta, "Const", "RoiPool")
        self.assertFalse(legacy_graphs.imports(rewritten))
        found, result = _verdicts(self, rewritten)
        self.assertEqual(result.unchecked, ())
        self.assertEqual(found, expected)

  def test_an_unknown_op_on_a_terms_path_leaves_it_unchecked(self):
    # The term flows into an op nobody knows: whether it reaches the loss
    # is not known, so no verdict, and the reason names the op.
    meta = legacy_graphs.export(legacy_graphs.slim_train_op)
    term = "conv1/kernel/Regularizer/l2_regularizer"
    rewritten, op = legacy_graphs.unknown_op(meta, term, "MadeUpKernel")
    path = legacy_graphs.write(rewritten, helpers.make_tempdir(self))
    result = safetrain.audit_meta_graph(path)
    self.assertEqual(result.verdicts, ())
    self.assertEqual(result.exit_code, 2)
    (unchecked,) = result.unchecked
    self.assertIn("cannot check it yet", unchecked.problem)
    self.assertIn(f"'{op}' has type MadeUpKernel", unchecked.problem)


if __name__ == "__main__":
  absltest.main()
