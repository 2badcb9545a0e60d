"""Tests for safetrain.audit._audit: auditing saved MetaGraphs, good and bad."""

import os
import re
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import tensorflow as tf
import tf_slim as slim

import audit_testdata
import helpers
import safetrain
from safetrain.audit import _audit

Status = safetrain.Status

_SEED_REGULARIZERS = {
    "conv1/kernel/Regularizer/l2_regularizer:0": ("conv1/weights",),
    "logits/kernel/Regularizer/l2_regularizer:0": ("logits/weights",),
}


def _export(directory, name, build):
  """Builds a graph with ``build()`` and writes it as ``name``.meta."""
  path = os.path.join(directory, name + ".meta")
  with tf.Graph().as_default():
    build()
    tf.compat.v1.train.export_meta_graph(filename=path)
  return path


def _model(trainable_head_only=False, stop_gradient=False):
  x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
  with slim.arg_scope([slim.fully_connected],
                      weights_regularizer=slim.l2_regularizer(0.1)):
    hidden = slim.fully_connected(x, 3, scope="body")
    y = slim.fully_connected(hidden, 2, activation_fn=None, scope="head")
  loss = tf.reduce_mean(tf.square(y), name="task_loss")
  regularization = tf.compat.v1.losses.get_regularization_losses()
  if stop_gradient:
    loss = tf.add(loss, tf.stop_gradient(tf.add_n(regularization)),
                  name="loss_with_frozen_decay")
  elif not trainable_head_only:
    loss = tf.add(loss, tf.add_n(regularization), name="total")
  return loss


def _sgd():
  return tf.compat.v1.train.GradientDescentOptimizer(0.1)


def _one_line(test, error):
  message = str(error)
  test.assertNotIn("\n", message)
  test.assertRegex(message, r"^\[safetrain\] audit: ")
  return message


class SeedScriptTest(absltest.TestCase):
  """The seed story's script, trained for real by slim, then audited."""

  def test_buggy_run_is_a_problem_listing_what_is_left_out(self):
    result = _audit.audit_meta_graph(audit_testdata.seed_runs()["buggy"])
    self.assertEqual(result.exit_code, _audit.EXIT_PROBLEM)
    self.assertFalse(result.ok)
    self.assertEqual(os.path.basename(result.path), "model.ckpt-2.meta")
    self.assertEqual(result.tensorflow_version, tf.__version__)
    (train_op,) = result.train_ops
    self.assertEqual(train_op.name, "train_op/control_dependency")
    (report,) = train_op.reports
    self.assertEqual(report.loss_name, "Mean:0")
    self.assertEqual({t.name: t.variables for t in report.missing},
                     _SEED_REGULARIZERS)
    self.assertTrue(all(t.status is Status.MISSING for t in report.terms))
    text = result.to_text()
    for name in _SEED_REGULARIZERS:
      self.assertRegex(text, rf"missing +{re.escape(name)} .*<- LEFT OUT")
    self.assertIn("PROBLEM in train op 'train_op/control_dependency':\n"
                  "audit: the loss being optimized leaves out 2 of 2", text)
    # One fix, then the two ways out for a script one cannot change.
    self.assertEqual(text.count("Fix:"), 1, text)
    self.assertTrue(text.endswith(
        "To add them without changing the loss, run the script as "
        "`safetrain run --on_missing=add -- python train.py ...`.\n"
        "To leave them out on purpose, run the script as "
        "`safetrain run --on_missing=warn -- python train.py ...`."), text)
    data = result.to_dict()
    self.assertEqual(data["exit_code"], 1)
    self.assertEqual(data["missing"], sorted(_SEED_REGULARIZERS))
    self.assertEqual(data["train_ops"][0]["losses"][0]["counts"]["missing"], 2)

  def test_fixed_run_is_ok(self):
    result = _audit.audit_meta_graph(audit_testdata.seed_runs()["fixed"])
    self.assertEqual(result.exit_code, _audit.EXIT_OK)
    (train_op,) = result.train_ops
    (report,) = train_op.reports
    self.assertEqual(report.loss_name, "total_loss:0")
    self.assertEqual({t.name: t.status for t in report.terms},
                     {n: Status.INCLUDED for n in _SEED_REGULARIZERS})
    self.assertIn("OK: its train op's loss includes each of the 2 terms that "
                  "regularize what it updates, once.", result.to_text())
    self.assertEqual(result.to_dict()["missing"], [])

  def test_directory_means_its_newest_meta(self):
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory)
    buggy = audit_testdata.newest_meta(audit_testdata.seed_runs()["buggy"])
    fixed = audit_testdata.newest_meta(audit_testdata.seed_runs()["fixed"])
    shutil.copy(buggy, os.path.join(directory, "model.ckpt-100.meta"))
    shutil.copy(fixed, os.path.join(directory, "model.ckpt-200.meta"))
    os.utime(os.path.join(directory, "model.ckpt-100.meta"), (1e9, 1e9))
    os.utime(os.path.join(directory, "model.ckpt-200.meta"), (2e9, 2e9))
    self.assertEqual(_audit.audit_meta_graph(directory).exit_code, 0)
    os.utime(os.path.join(directory, "model.ckpt-100.meta"), (3e9, 3e9))
    result = _audit.audit_meta_graph(directory)
    self.assertEqual(os.path.basename(result.path), "model.ckpt-100.meta")
    self.assertEqual(result.exit_code, 1)


class StatusesTest(parameterized.TestCase):
  """Each status a term can have, in an exported graph."""

  def setUp(self):
    super().setUp()
    self.directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.directory)

  def test_frozen_body_is_reported_not_required(self):
    def build():
      loss = _model(trainable_head_only=True)
      head = tf.compat.v1.trainable_variables("head")
      slim.learning.create_train_op(
          loss, tf.compat.v1.train.GradientDescentOptimizer(0.1),
          variables_to_train=head)
    result = _audit.audit_meta_graph(_export(self.directory, "m", build))
    (report,) = result.train_ops[0].reports
    statuses = {t.variables: t.status for t in report.terms}
    self.assertEqual(statuses, {("body/weights",): Status.FROZEN,
                                ("head/weights",): Status.MISSING})
    self.assertEqual(result.train_ops[0].variables,
                     ("head/biases", "head/weights"))
    self.assertEqual(result.exit_code, 1)

  def test_a_doubled_term_is_a_problem_as_in_create_train_op_safe(self):
    # The bug of issue 10: the audit read no coefficients and passed this.
    def build():
      loss = _model()
      regularization = tf.add_n(tf.compat.v1.losses.get_regularization_losses())
      slim.learning.create_train_op(
          loss + regularization, tf.compat.v1.train.GradientDescentOptimizer(0.1))
    result = _audit.audit_meta_graph(_export(self.directory, "m", build))
    self.assertEqual(result.exit_code, 1)
    self.assertEqual(result.verdicts, (safetrain.Verdict.DOUBLED,))
    (report,) = result.train_ops[0].reports
    self.assertEqual([t.coefficient for t in report.terms], [2.0, 2.0])
    self.assertLen(report.overcounted, 2)
    text = result.to_text()
    self.assertIn("<- COUNTED x2", text)
    self.assertIn("more often than once", text)
    # "add" adds left-out terms; it cannot fix a doubled one.
    self.assertNotIn("--on_missing=add", text)
    self.assertFalse(result.to_dict()["ok"])
    self.assertEqual(result.to_dict()["verdicts"], ["doubled"])

  def test_stop_gradient_is_blocked(self):
    def build():
      loss = _model(stop_gradient=True)
      tf.compat.v1.train.AdamOptimizer(0.1).minimize(loss)
    result = _audit.audit_meta_graph(_export(self.directory, "m", build))
    (report,) = result.train_ops[0].reports
    self.assertEqual(report.loss_name, "loss_with_frozen_decay:0")
    self.assertEqual({t.status for t in report.terms}, {Status.BLOCKED})
    self.assertEqual(result.exit_code, 1)
    # Adding a blocked term again would not reach the weights either.
    self.assertNotIn("--on_missing=add", result.to_text())

  @parameterized.named_parameters(("binary", False), ("text", True))
  def test_train_op_found_from_apply_ops_without_collection(self, as_text):
    def build():
      loss = _model()
      tf.compat.v1.train.MomentumOptimizer(0.1, 0.9).minimize(
          loss, global_step=tf.compat.v1.train.get_or_create_global_step())
      tf.compat.v1.get_default_graph().clear_collection(
          tf.compat.v1.GraphKeys.TRAIN_OP)
    path = os.path.join(self.directory, "m.meta")
    with tf.Graph().as_default():
      build()
      tf.compat.v1.train.export_meta_graph(filename=path, as_text=as_text)
    result = _audit.audit_meta_graph(path)
    self.assertEqual([a.name for a in result.train_ops], ["Momentum"])
    (report,) = result.train_ops[0].reports
    self.assertEqual(report.loss_name, "total:0")
    self.assertEqual(result.exit_code, 0)

  @parameterized.named_parameters(
      ("plain_included", None, True), ("plain_left_out", None, False),
      ("partitioned_included", 2, True), ("partitioned_left_out", 2, False))
  def test_lazy_regularizer_copies(self, shards, include):
    # get_variable(regularizer=) and partitioned variables collect lazy
    # tensors: the saved collection names one copy, the loss uses another.
    def build():
      partitioner = (tf.compat.v1.fixed_size_partitioner(shards)
                     if shards else None)
      w = tf.compat.v1.get_variable(
          "w", [4, 2], regularizer=slim.l2_regularizer(0.5),
          partitioner=partitioner)
      x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
      loss = tf.reduce_mean(tf.matmul(x, tf.convert_to_tensor(w)))
      if include:
        loss = tf.compat.v1.losses.get_total_loss(
            add_regularization_losses=True) + loss
      tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss)
    result = _audit.audit_meta_graph(_export(self.directory, "m", build))
    (report,) = result.train_ops[0].reports
    self.assertLen(report.terms, shards or 1)
    expected = Status.INCLUDED if include else Status.MISSING
    self.assertEqual({t.status for t in report.terms}, {expected})
    self.assertEqual(result.exit_code, 0 if include else 1)

  def test_train_op_that_updates_nothing_is_not_checked(self):
    def build():
      _model()
      tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.TRAIN_OP,
                                     tf.no_op(name="fake_train"))
    result = _audit.audit_meta_graph(_export(self.directory, "m", build))
    self.assertEqual([a.name for a in result.unchecked], ["fake_train"])
    self.assertEqual(result.exit_code, _audit.EXIT_BAD_INPUT)
    self.assertIn("NOT CHECKED: it runs no optimizer apply op", result.to_text())

  def test_never_runs_the_graph_or_py_func_bodies(self):
    calls = []

    def body(value):
      calls.append(value)
      return value

    def build():
      x = tf.compat.v1.placeholder(tf.float32, [], name="x")
      w = tf.compat.v1.get_variable("w", [], regularizer=slim.l2_regularizer(1.))
      side = tf.compat.v1.py_func(body, [x * w], tf.float32)
      side.set_shape([])
      loss = tf.identity(side + tf.add_n(
          tf.compat.v1.losses.get_regularization_losses()), name="loss")
      tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss)
    path = _export(self.directory, "m", build)
    result = _audit.audit_meta_graph(path)
    self.assertEqual(calls, [])
    self.assertEqual(result.exit_code, 0)


def _strided_slice_meta(directory: str, mutate) -> str:
  """A tiny MetaGraph with a StridedSlice of constants, mutated, written."""
  with tf.Graph().as_default():
    x = tf.compat.v1.placeholder(tf.float32, [4], name="x")
    tf.identity(x[1:3], name="sliced")
    meta = tf.compat.v1.train.export_meta_graph()
  mutate(meta)
  path = os.path.join(directory, "model.ckpt-1.meta")
  with open(path, "wb") as f:
    f.write(meta.SerializeToString())
  return path


def _const_of_other_type(meta):
  for node in meta.graph_def.node:
    if node.op == "Const" and node.attr["dtype"].type == tf.int32.as_datatype_enum:
      node.attr["value"].tensor.dtype = tf.float32.as_datatype_enum
      return


def _disallowed_index_type(meta):
  for node in meta.graph_def.node:
    if node.op == "StridedSlice":
      node.attr["Index"].type = tf.float32.as_datatype_enum
      return


class OkLineTest(absltest.TestCase):
  """The OK line says what was checked, not only that nothing was wrong."""

  def setUp(self):
    super().setUp()
    self.directory = helpers.make_tempdir(self)

  def _text(self, build):
    return _audit.audit_meta_graph(
        _export(self.directory, "model", build)).to_text().splitlines()[-1]

  def test_a_graph_without_regularization_says_so(self):
    def build():
      x = tf.compat.v1.placeholder(tf.float32, [None, 4])
      y = slim.fully_connected(x, 2, activation_fn=None, scope="head")
      _sgd().minimize(tf.reduce_mean(tf.square(y)))
    self.assertEqual(
        self._text(build),
        "OK: the graph has no regularization term; its train op's loss has "
        "none to include.")

  def test_terms_of_frozen_variables_only_are_not_required(self):
    def build():
      loss = _model(trainable_head_only=True)
      head = tf.compat.v1.get_collection(
          tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES, "head/biases")
      _sgd().minimize(loss, var_list=head)
    self.assertEqual(
        self._text(build),
        "OK: the graph's 2 regularization terms regularize only variables "
        "its train op does not update.")

  def test_included_and_frozen_terms_are_counted(self):
    def build():
      loss = _model()
      body = tf.compat.v1.get_collection(
          tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES, "body")
      _sgd().minimize(loss, var_list=body)
    # The frozen term is in the table above, as frozen; the OK line counts
    # what was required.
    self.assertEqual(
        self._text(build),
        "OK: its train op's loss includes the term that regularizes what it "
        "updates, once.")

  def test_fed_gradients_and_no_terms_is_a_verdict(self):
    # A policy-gradient loop: the gradients are placeholders fed each step,
    # so no loss is in the graph; with no regularization there is nothing
    # the loss would have to include.
    def build():
      x = tf.compat.v1.placeholder(tf.float32, [None, 4])
      y = slim.fully_connected(x, 2, activation_fn=None, scope="head")
      del y
      variables = tf.compat.v1.trainable_variables()
      fed = [tf.compat.v1.placeholder(tf.float32, v.shape) for v in variables]
      _sgd().apply_gradients(list(zip(fed, variables)))
    result = _audit.audit_meta_graph(_export(self.directory, "pg", build))
    self.assertEqual(result.exit_code, 0)
    self.assertIn("its loss is not in the graph", result.to_text())


class AbortingInputTest(parameterized.TestCase):
  """Inputs on which TensorFlow's importer aborts the process (a C++ CHECK)."""

  @parameterized.named_parameters(
      ("const_of_other_type", _const_of_other_type, "another type"),
      ("disallowed_attribute", _disallowed_index_type,
       "outside the values its op allows"),
  )
  def test_refused_before_import(self, mutate, pattern):
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory)
    path = _strided_slice_meta(directory, mutate)
    with self.assertRaisesRegex(_audit.AuditInputError, pattern):
      _audit.audit_meta_graph(path)


class BadInputTest(absltest.TestCase):
  """Every bad input is an AuditInputError with a one-line message."""

  def setUp(self):
    super().setUp()
    self.directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.directory)
    self.seed_meta = audit_testdata.newest_meta(
        audit_testdata.seed_runs()["buggy"])

  def _write(self, name, data):
    path = os.path.join(self.directory, name)
    with open(path, "wb") as f:
      f.write(data)
    return path

  def assert_bad(self, path, pattern):
    with self.assertRaises(_audit.AuditInputError) as caught:
      _audit.audit_meta_graph(path)
    self.assertRegex(_one_line(self, caught.exception), pattern)
    return caught.exception

  def test_missing_path(self):
    self.assert_bad(os.path.join(self.directory, "nope"),
                    r"nope: no such file or directory\.$")

  def test_empty_directory(self):
    self.assert_bad(self.directory, r"directory .* is empty")

  def test_directory_without_meta(self):
    self._write("checkpoint", b"model_checkpoint_path: 'x'")
    self._write("events.out", b"\x00")
    self.assert_bad(self.directory,
                    r"has no \.meta file \(it holds checkpoint, events.out\)")

  def test_file_that_is_not_a_meta_graph(self):
    self.assert_bad(self._write("notes.meta", b"just some notes\n"),
                    r"is not a MetaGraph file")

  def test_graph_def_says_what_it_is_and_what_to_pass(self):
    # slim's Supervisor writes graph.pbtxt, a text GraphDef, into the train
    # directory: the ops, not the collections the audit reads.
    with tf.Graph().as_default() as graph:
      _model()
      graph_def = graph.as_graph_def()
    tf.io.write_graph(graph_def, self.directory, "graph.pbtxt", as_text=True)
    tf.io.write_graph(graph_def, self.directory, "frozen.pb", as_text=False)
    for name in ("graph.pbtxt", "frozen.pb"):
      self.assert_bad(os.path.join(self.directory, name),
                      r"is a GraphDef, not a MetaGraph: .*REGULARIZATION_LOSSES"
                      r".* Pass the model\.ckpt-N\.meta file slim writes")
    shutil.copy(self.seed_meta, self.directory)
    self.assert_bad(os.path.join(self.directory, "graph.pbtxt"),
                    r"is a GraphDef, not a MetaGraph: .* Pass the training "
                    rf"directory \({re.escape(self.directory)}\)")

  def test_empty_file(self):
    self.assert_bad(self._write("empty.meta", b""), r"is empty, not a MetaGraph")

  def test_checkpoint_index_instead_of_meta(self):
    index = os.path.join(os.path.dirname(self.seed_meta), "model.ckpt-2.index")
    self.assert_bad(index, r"is not a MetaGraph file")

  def test_truncated_protobuf(self):
    with open(self.seed_meta, "rb") as f:
      data = f.read()
    self.assert_bad(self._write("cut.meta", data[:len(data) // 2]),
                    r"is not a MetaGraph file")

  def test_unknown_op_in_the_input_is_cut_out_not_refused(self):
    # The buggy seed run with its images made by an op no TensorFlow has:
    # the op lies on no term's path, so the verdict stands (audit/_legacy;
    # legacy_test has the op on a term's path too).
    meta = tf.compat.v1.MetaGraphDef()
    with open(self.seed_meta, "rb") as f:
      meta.ParseFromString(f.read())
    (images,) = [n for n in meta.graph_def.node
                 if n.op == "StatelessRandomUniformV2"]
    images.op = "SafetrainFutureOp"
    meta.meta_info_def.tensorflow_version = "9.1.0"
    result = safetrain.audit_meta_graph(
        self._write("future.meta", meta.SerializeToString()))
    self.assertEqual(result.verdicts, (safetrain.Verdict.MISSING,))
    self.assertEqual(result.unchecked, ())

  def test_graph_without_train_op_says_what_it_found(self):
    def build():
      _model()
    error = self.assert_bad(
        _export(self.directory, "inference", build),
        r"has no train op: .* no variable update computed from gradients .* "
        r"It holds \d+ ops, 4 variables \(4 trainable\), "
        r"2 regularization losses, losses \[\], collections \[.*\]")
    self.assertIsInstance(error, _audit.NoTrainOpError)
    self.assertEqual(error.found["variables"], 4)
    self.assertEqual(error.found["regularization_losses"], 2)

  def test_corrupt_regularization_collection(self):
    meta = tf.compat.v1.MetaGraphDef()
    with open(self.seed_meta, "rb") as f:
      meta.ParseFromString(f.read())
    values = meta.collection_def["regularization_losses"].node_list.value
    values[0] = "conv1/weights"  # An op name, where a tensor belongs.
    self.assert_bad(self._write("edited.meta", meta.SerializeToString()),
                    r"regularization_losses collection holds 'conv1/weights'")

  def test_errors_are_value_errors_of_the_package(self):
    with self.assertRaises(ValueError):
      _audit.audit_meta_graph(os.path.join(self.directory, "nope"))
    self.assertTrue(issubclass(_audit.AuditInputError, safetrain.Error))


if __name__ == "__main__":
  absltest.main()
