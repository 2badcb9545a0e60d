"""Tests for safetrain.per_variable._ledger: the per-variable weight-decay ledger."""

import contextlib
import importlib
import io
import json
import os
import warnings

from absl.testing import absltest
from absl.testing import flagsaver
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tf_slim
from tf_slim.nets import resnet_v1

import helpers
import safetrain
import safetrain.slim as slim
from safetrain import cli
from examples.nets import mobilenet_v2

Kind = safetrain.FindingKind
_LR = 0.1


def _keras_modules():
  """Each Keras this environment has (tf.keras, and tf_keras if present)."""
  found = [("tf_keras_api", tf.keras)]
  try:
    found.append(("tf_keras", importlib.import_module("tf_keras")))
  except ImportError:
    pass
  return found


def _rows(ledger):
  return {r.variable: r for r in ledger.rows}


def _sgd_train_op(loss, **kwargs):
  return tf.compat.v1.train.GradientDescentOptimizer(_LR).minimize(
      loss, **kwargs)


def _only_mechanism(test, row):
  test.assertLen(row.mechanisms, 1, row)
  return row.mechanisms[0]


class CoefficientTest(parameterized.TestCase):
  """The regularizer's factor as the graph shows it, and the per-step decay."""

  def _assert_l2(self, row, l2, coefficient=1.0):
    mechanism = _only_mechanism(self, row)
    self.assertEqual(mechanism.kind, "L2")
    self.assertAlmostEqual(mechanism.l2, l2, delta=1e-7 * max(1, l2))
    self.assertAlmostEqual(mechanism.coefficient, coefficient, places=6)
    self.assertAlmostEqual(row.decay, 1 - _LR * 2 * l2 * coefficient,
                           places=6)

  def test_slim_l2_regularizer_is_half_its_scale(self):
    # slim.l2_regularizer(s) is s * L2Loss(w) = (s/2) * sum(w^2).
    with tf.Graph().as_default():
      loss = safetrain.total_loss_from(helpers.cross_entropy(0.01))
      ledger = safetrain.ledger(_sgd_train_op(loss))
    rows = _rows(ledger)
    self._assert_l2(rows["conv1/weights"], 0.005)
    self._assert_l2(rows["logits/weights"], 0.005)
    self.assertEqual(rows["conv1/weights"].decay_note, "1 - lr*2c")
    self.assertEqual(rows["conv1/biases"].decay, 1.0)
    self.assertEqual(ledger.findings, ())

  def test_get_variable_regularizer(self):
    with tf.Graph().as_default():
      w = tf.compat.v1.get_variable(
          "w", [3, 2], regularizer=lambda v: 3e-3 * tf.nn.l2_loss(v))
      u = tf.compat.v1.get_variable(
          "u", [2], regularizer=lambda v: 0.02 * tf.reduce_sum(tf.abs(v)))
      task = tf.reduce_sum(tf.matmul(tf.ones([1, 3]), w) * u)
      ledger = safetrain.ledger(_sgd_train_op(
          safetrain.total_loss_from(task)))
    rows = _rows(ledger)
    self._assert_l2(rows["w"], 1.5e-3)
    l1 = _only_mechanism(self, rows["u"])
    self.assertEqual((l1.kind, l1.l2), ("L1", None))
    self.assertAlmostEqual(l1.l1, 0.02, places=7)
    self.assertIsNone(rows["u"].decay)  # L1 is no factor on w.
    self.assertIn("L1", rows["u"].decay_note)

  def test_term_counted_twice_shows_its_coefficient(self):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy(0.01)
      reg = tf.add_n(helpers.regularization())
      ledger = safetrain.ledger(_sgd_train_op(loss + 2.0 * reg))
    self._assert_l2(_rows(ledger)["conv1/weights"], 0.005, coefficient=2.0)
    self.assertIn(safetrain.Verdict.DOUBLED, ledger.verdicts)

  @parameterized.named_parameters(*_keras_modules())
  def test_keras_l2_and_l1l2_in_a_v1_graph(self, keras):
    with tf.Graph().as_default():
      x = tf.ones([4, 3])
      dense = keras.layers.Dense(
          2, kernel_regularizer=keras.regularizers.L2(0.01), name="a")
      other = keras.layers.Dense(
          1, kernel_regularizer=keras.regularizers.L1L2(l1=0.02, l2=0.03),
          name="b")
      task = tf.reduce_mean(other(dense(x)))
      ledger = safetrain.ledger(_sgd_train_op(
          safetrain.total_loss_from(task)))
    by_kind = {}
    for row in ledger.rows:
      if row.mechanisms:
        by_kind[_only_mechanism(self, row).kind] = row
    self.assertCountEqual(by_kind, ["L2", "L1L2"])
    self._assert_l2(by_kind["L2"], 0.01)
    both = by_kind["L1L2"].mechanisms[0]
    self.assertAlmostEqual(both.l1, 0.02, places=7)
    self.assertAlmostEqual(both.l2, 0.03, places=7)
    self.assertEqual(by_kind["L2"].kind, "kernel")

  def test_per_step_decay_is_what_one_sgd_step_does(self):
    # w enters only its L2 term: one step multiplies it by exactly the
    # ledger's factor.
    with tf.Graph().as_default():
      w = tf.compat.v1.get_variable(
          "w", [4], initializer=tf.compat.v1.constant_initializer(2.0),
          regularizer=lambda v: 0.25 * tf.reduce_sum(tf.square(v)))
      b = tf.compat.v1.get_variable("b", [1])
      train_op = _sgd_train_op(safetrain.total_loss_from(
          tf.reduce_sum(tf.square(b - 1.0))))
      ledger = safetrain.ledger(train_op)
      with tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        before = session.run(w)
        session.run(train_op)
        after = session.run(w)
    factor = _rows(ledger)["w"].decay
    self.assertAlmostEqual(factor, 1 - _LR * 2 * 0.25)
    np.testing.assert_allclose(after, before * factor, rtol=1e-6)

  def test_momentum_and_transformed_gradients_say_why_not(self):
    with tf.Graph().as_default():
      loss = safetrain.total_loss_from(helpers.cross_entropy(0.01))
      momentum = tf.compat.v1.train.MomentumOptimizer(0.1, 0.9)
      ledger = safetrain.ledger(momentum.minimize(loss))
      row = _rows(ledger)["conv1/weights"]
      self.assertIsNone(row.decay)
      self.assertEqual(row.decay_note,
                       "depends on the optimizer state (momentum)")
      clipped = slim.learning.create_train_op(
          loss, tf.compat.v1.train.GradientDescentOptimizer(0.1),
          clip_gradient_norm=1.0)
      row = _rows(safetrain.ledger(clipped))["conv1/weights"]
      self.assertIsNone(row.decay)
      self.assertIn("transformed", row.decay_note)
      lr = tf.compat.v1.placeholder_with_default(0.1, [])
      row = _rows(safetrain.ledger(
          tf.compat.v1.train.GradientDescentOptimizer(lr).minimize(loss)))[
              "conv1/weights"]
      self.assertEqual((row.decay, row.decay_note),
                       (None, "lr is not a constant in the graph"))


class ClassificationTest(absltest.TestCase):
  """Kinds come from the consuming op; names serve only as the test's oracle."""

  def test_mobilenet_v2(self):
    with tf.Graph().as_default():
      images, labels = tf.zeros([2, 32, 32, 3]), tf.zeros([2], tf.int32)
      with slim.arg_scope(mobilenet_v2.training_scope(weight_decay=4e-5)):
        logits, _ = mobilenet_v2.mobilenet(images, 10, depth_multiplier=0.35)
      loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
      ledger = safetrain.ledger(slim.learning.create_train_op(
          safetrain.total_loss_from(loss),
          tf.compat.v1.train.GradientDescentOptimizer(0.01)))
    kernels = [r for r in ledger.rows if r.kind == "kernel"]
    depthwise = [r for r in kernels if r.used_by == "DepthwiseConv2dNative"]
    regular = [r for r in kernels if r.used_by == "Conv2D"]
    self.assertLen(regular, 36)
    self.assertTrue(all(r.decayed for r in regular))
    self.assertLen(depthwise, 17)
    self.assertFalse(any(r.decayed for r in depthwise))
    self.assertTrue(all(r.variable.endswith("depthwise_weights")
                        for r in depthwise))
    others = [r for r in ledger.rows if r not in kernels]
    self.assertFalse(any(r.decayed for r in others))
    expected = {"gamma": "normalization scale",
                "beta": "normalization offset", "biases": "bias"}
    for row in others:
      self.assertEqual(row.kind, expected[row.variable.rsplit("/", 1)[1]])
    self.assertEqual(sum(r.decayed for r in ledger.rows), 36)
    self.assertEqual(ledger.findings, ())
    self.assertAlmostEqual(regular[0].mechanisms[0].l2, 2e-5, delta=1e-12)

  def test_resnet_v1_50(self):
    with tf.Graph().as_default():
      images = tf.zeros([1, 32, 32, 3])
      with slim.arg_scope(resnet_v1.resnet_arg_scope(weight_decay=1e-4)):
        logits, _ = resnet_v1.resnet_v1_50(images, 5, is_training=True)
      loss = tf.reduce_mean(logits)
      ledger = safetrain.ledger(_sgd_train_op(
          safetrain.total_loss_from(loss)))
    expected = {"weights": "kernel", "biases": "bias",
                "gamma": "normalization scale",
                "beta": "normalization offset"}
    counts = {}
    for row in ledger.rows:
      self.assertEqual(row.kind, expected[row.variable.rsplit("/", 1)[1]],
                       row)
      counts[row.kind] = counts.get(row.kind, 0) + 1
      self.assertEqual(row.decayed, row.kind == "kernel", row)
    self.assertEqual(counts["kernel"], 54)  # 53 convolutions + the logits.
    self.assertEqual(counts["bias"], 1)
    self.assertEqual(ledger.findings, ())

  def test_embedding_and_other(self):
    with tf.Graph().as_default():
      table = tf.compat.v1.get_variable("table", [10, 4])
      temperature = tf.compat.v1.get_variable("temperature", [])
      rows = tf.nn.embedding_lookup(table, [1, 2])
      loss = tf.reduce_sum(rows) * temperature
      ledger = safetrain.ledger(_sgd_train_op(loss))
    self.assertEqual(_rows(ledger)["table"].kind, "embedding")
    self.assertEqual(_rows(ledger)["temperature"].kind, "other")


class FindingTest(parameterized.TestCase):
  """Each finding on a graph built to show it, through the one policy."""

  def test_several_terms_of_the_loss_on_a_variable_are_information(self):
    # Each term is counted once, so every check of the loss passes the
    # update; the ledger shows the coefficients adding up and says so, as
    # information. (It said DOUBLED before: one graph, two verdicts.)
    with tf.Graph().as_default():
      w = tf.compat.v1.get_variable(
          "w", [3], regularizer=lambda v: 0.1 * tf.nn.l2_loss(v))
      tf.compat.v1.add_to_collection(
          tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES,
          tf.multiply(0.2, tf.reduce_sum(tf.square(w)), name="again"))
      loss = safetrain.total_loss_from(tf.reduce_sum(w))
      train_op = _sgd_train_op(loss)
      ledger = safetrain.ledger(train_op, on_missing="raise")
      self.assertEqual([f.kind for f in ledger.findings],
                       [Kind.SEVERAL_TERMS])
      (finding,) = ledger.findings
      self.assertFalse(finding.is_error)
      self.assertEqual(finding.variables, ("w",))
      self.assertIn("w: 0.05*sum(w^2) and 0.2*sum(w^2)", finding.detail)
      self.assertEqual(ledger.verdicts, ())
      self.assertEqual(ledger.exit_code, 0)
      self.assertAlmostEqual(_rows(ledger)["w"].decay,
                             1 - _LR * 2 * (0.05 + 0.2), places=6)
      self.assertIn("INFO (several decay terms): 1 variables are decayed by "
                    "several terms of the loss", ledger.to_text())
      self.assertTrue(safetrain.check_regularization(loss).ok)

  def test_several_terms_name_three_variables_and_count_the_rest(self):
    with tf.Graph().as_default():
      names = ["a", "b", "c", "d"]
      for name in names:
        v = tf.compat.v1.get_variable(
            name, [2], regularizer=lambda v: 0.1 * tf.nn.l2_loss(v))
        tf.compat.v1.add_to_collection(
            tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES,
            0.3 * tf.nn.l2_loss(v))
      ledger = safetrain.ledger(_sgd_train_op(safetrain.total_loss_from(
          tf.add_n([tf.reduce_sum(v) for v in
                    tf.compat.v1.trainable_variables()]))))
      (finding,) = ledger.report.found(Kind.SEVERAL_TERMS)
      self.assertEqual(finding.variables, tuple(names))
      self.assertTrue(finding.detail.startswith(
          "4 variables are decayed by several terms of the loss"))
      self.assertIn("; c: ", finding.detail)
      self.assertNotIn("d: ", finding.detail)
      self.assertTrue(finding.detail.endswith("; ... (4 in all)"))

  def test_trainable_scope_matching_nothing(self):
    with tf.Graph().as_default():
      loss = safetrain.total_loss_from(helpers.cross_entropy())
      head = tf.compat.v1.trainable_variables("logits")
      train_op = _sgd_train_op(loss, var_list=head)
      ledger = safetrain.ledger(train_op, trainable_scopes=["logits", "Logits"])
      unmatched = ledger.report.found(Kind.UNMATCHED)
      self.assertLen(unmatched, 1)
      self.assertEqual(unmatched[0].variables, ("Logits",))
      self.assertEqual(_rows(ledger)["conv1/weights"].training, "frozen")
      self.assertEqual(_rows(ledger)["conv1/weights"].by,
                       "trainable_scopes logits,Logits")
      self.assertEqual(ledger.exit_code, 1)
      helpers.assert_error(self, safetrain.UnmatchedExclusionError,
                           "trainable scope 'Logits' matches none",
                           safetrain.ledger, train_op,
                           trainable_scopes=["Logits"], on_missing="raise")
      with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        safetrain.ledger(train_op, trainable_scopes=["Logits"],
                         on_missing="warn")
      self.assertTrue(any(issubclass(w.category,
                                     safetrain.MissingRegularizationWarning)
                          and "matches none" in str(w.message)
                          for w in caught))
      self.assertEqual(
          safetrain.ledger(train_op, trainable_scopes=["logits"]).findings, ())

  def test_all_terms_left_out_is_the_missing_verdict_per_variable(self):
    with tf.Graph().as_default():
      ledger = safetrain.ledger(_sgd_train_op(helpers.cross_entropy()))
    left_out = ledger.report.found(Kind.ALL_LEFT_OUT)
    self.assertLen(left_out, 1)
    self.assertEqual(left_out[0].variables, ("conv1/weights",
                                             "logits/weights"))
    self.assertEqual(ledger.verdicts, (safetrain.Verdict.MISSING,))
    self.assertEqual(sum(r.decayed for r in ledger.rows), 0)
    self.assertEqual(_rows(ledger)["conv1/weights"].decay, 1.0)

  @parameterized.named_parameters(("left_out", False), ("added", True))
  def test_loss_behind_update_ops_is_a_loss_not_a_train_op(self, added):
    # slim and research/slim make batch-norm updates run first so:
    # with tf.control_dependencies(update_ops): loss = tf.identity(loss)
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      if added:
        loss = safetrain.total_loss_from(loss)
      counter = tf.compat.v1.get_variable("updates", [], trainable=False)
      with tf.control_dependencies([counter.assign_add(1.0)]):
        loss = tf.identity(loss)
      ledger = safetrain.ledger(loss)
    rows = _rows(ledger)
    self.assertEqual(rows["conv1/weights"].training, "trained")
    self.assertEqual(rows["conv1/weights"].decayed, added)
    self.assertEqual(ledger.verdicts,
                     () if added else (safetrain.Verdict.MISSING,))

  def test_an_op_that_updates_no_variable_is_refused(self):
    with tf.Graph().as_default():
      helpers.cross_entropy()
      with self.assertRaisesRegex(safetrain.InvalidArgumentError,
                                  "updates no variable.*ledger\\(loss"):
        safetrain.ledger(tf.no_op(name="not_a_train_op"))

  def test_kernel_without_regularization_among_siblings_is_information(self):
    with tf.Graph().as_default():
      images, labels = helpers.images_and_labels()
      with slim.arg_scope([slim.conv2d],  # fully_connected forgotten.
                          weights_regularizer=slim.l2_regularizer(0.01)):
        net = slim.conv2d(images, 4, [3, 3], scope="conv1")
        net = slim.conv2d(net, 4, [3, 3], scope="conv2")
        logits = slim.fully_connected(slim.flatten(net), 3, scope="logits")
      loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
      ledger = safetrain.ledger(_sgd_train_op(safetrain.total_loss_from(loss)))
    self.assertEqual([f.kind for f in ledger.findings],
                     [Kind.UNREGULARIZED_KERNEL])
    self.assertEqual(ledger.findings[0].variables, ("logits/weights",))
    self.assertFalse(ledger.findings[0].is_error)
    self.assertEqual(ledger.verdicts, ())
    self.assertEqual(ledger.exit_code, 0)

  def test_decayed_bias_and_batch_norm_are_information(self):
    with tf.Graph().as_default():
      images, labels = helpers.images_and_labels()
      with slim.arg_scope([slim.conv2d],
                          weights_regularizer=slim.l2_regularizer(0.01),
                          biases_regularizer=slim.l2_regularizer(0.01)):
        net = slim.conv2d(images, 4, [3, 3], scope="conv1")
        net = slim.batch_norm(net, scale=True, param_regularizers={
            "gamma": slim.l2_regularizer(0.01)}, scope="bn")
        logits = slim.conv2d(net, 3, [8, 8], padding="VALID", scope="logits")
      loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(
          labels, tf.squeeze(logits, [1, 2]))
      ledger = safetrain.ledger(_sgd_train_op(safetrain.total_loss_from(loss)))
    decayed = ledger.report.found(Kind.DECAYED_BIAS_OR_NORM)
    self.assertLen(decayed, 1)
    self.assertCountEqual(decayed[0].variables,
                          ["conv1/biases", "logits/biases", "bn/gamma"])
    self.assertEqual(_rows(ledger)["bn/gamma"].kind, "normalization scale")
    self.assertEqual(ledger.verdicts, ())

  def test_correct_slim_trainer_has_no_finding(self):
    with tf.Graph().as_default():
      loss = safetrain.total_loss_from(helpers.cross_entropy())
      train_op = slim.learning.create_train_op(
          loss, tf.compat.v1.train.MomentumOptimizer(0.1, 0.9))
      ledger = safetrain.ledger(train_op, on_missing="raise")
    self.assertEqual(ledger.findings, ())
    self.assertEqual(ledger.optimizer, "momentum, lr 0.1")
    self.assertIn("OK: no finding.", ledger.to_text())

  def test_add_is_refused(self):
    with tf.Graph().as_default():
      train_op = _sgd_train_op(helpers.cross_entropy())
      helpers.assert_error(self, safetrain.InvalidArgumentError,
                           "cannot change an update",
                           safetrain.ledger, train_op, on_missing="add")


class KerasModelTest(parameterized.TestCase):
  """A TF2 Keras model with its Keras optimizer (eager)."""

  def _model(self, keras, l2=0.01):
    model = keras.Sequential([
        keras.Input(shape=(5,)),
        keras.layers.Embedding(20, 4, name="embed"),
        keras.layers.Flatten(),
        keras.layers.Dense(8, kernel_regularizer=keras.regularizers.L2(l2),
                           name="hidden"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Dense(3, name="head"),
    ])
    return model

  def _rows(self, ledger):
    return {r.used_by: r for r in ledger.rows}

  @parameterized.named_parameters(*_keras_modules())
  def test_kinds_and_sgd_decay(self, keras):
    model = self._model(keras)
    ledger = safetrain.ledger(model, optimizer=keras.optimizers.SGD(0.1))
    rows = self._rows(ledger)
    self.assertEqual(rows["Embedding.embeddings"].kind, "embedding")
    self.assertEqual(rows["Dense.bias"].kind, "bias")
    self.assertEqual(rows["BatchNormalization.gamma"].kind,
                     "normalization scale")
    self.assertEqual(rows["BatchNormalization.beta"].kind,
                     "normalization offset")
    hidden = [r for r in ledger.rows
              if r.used_by == "Dense.kernel" and r.mechanisms]
    self.assertLen(hidden, 1)
    self.assertAlmostEqual(hidden[0].mechanisms[0].l2, 0.01)
    self.assertAlmostEqual(hidden[0].decay, 1 - 0.1 * 2 * 0.01, places=6)
    self.assertIn("if the loss adds model.losses once",
                  hidden[0].decay_note)
    # The other Dense kernel is not regularized: a finding, not an error.
    self.assertEqual([f.kind for f in ledger.findings],
                     [Kind.UNREGULARIZED_KERNEL])
    self.assertEqual(ledger.verdicts, ())

  @parameterized.named_parameters(*_keras_modules())
  def test_regularizer_set_after_build_is_the_ineffective_verdict(self, keras):
    model = self._model(keras)
    head = model.get_layer("head")
    head.kernel_regularizer = keras.regularizers.L2(0.5)  # Too late.
    ledger = safetrain.ledger(model, optimizer=keras.optimizers.SGD(0.1))
    rows = [r for r in ledger.rows if "head/" in r.variable and
            r.used_by == "Dense.kernel"]
    self.assertLen(rows, 1)
    self.assertEqual(rows[0].mechanisms[0].status, "ineffective")
    self.assertEqual(ledger.verdicts, (safetrain.Verdict.INEFFECTIVE,))
    self.assertEqual(ledger.exit_code, 1)
    e = helpers.assert_error(
        self, safetrain.IneffectiveRegularizerError,
        "after the layers were built.*head.*kernel_regularizer",
        safetrain.ledger, model, optimizer=keras.optimizers.SGD(0.1),
        on_missing="raise")
    # tf.keras on TF 2.15 has no __version__; its package, keras 2, has.
    version = (getattr(keras, "__version__", None) or
               importlib.import_module("keras").__version__)
    self.assertEqual([i.keras for i in e.report.ineffective],
                     [int(version.split(".")[0])])

  @parameterized.named_parameters(*_keras_modules())
  def test_adamw_decay_and_its_findings(self, keras):
    model = self._model(keras)
    optimizer = keras.optimizers.AdamW(learning_rate=0.01,
                                       weight_decay=0.004)
    ledger = safetrain.ledger(model, optimizer=optimizer)
    head = [r for r in ledger.rows if r.used_by == "Dense.kernel" and
            len(r.mechanisms) == 1]
    self.assertLen(head, 1)
    self.assertEqual(head[0].mechanisms[0].kind, "decoupled")
    self.assertAlmostEqual(head[0].decay, 1 - 0.01 * 0.004, places=9)
    twice = ledger.report.found(Kind.DECAYED_TWICE)
    self.assertLen(twice, 1)
    decayed_norms = ledger.report.found(Kind.DECAYED_BIAS_OR_NORM)
    self.assertLen(decayed_norms[0].variables, 4)  # 2 biases, gamma, beta.
    helpers.assert_error(self, safetrain.DoubleCountedRegularizationError,
                         "decayed by two mechanisms", safetrain.ledger,
                         model, optimizer=optimizer, on_missing="raise")

  @parameterized.named_parameters(*_keras_modules())
  def test_a_custom_layers_regularized_weight(self, keras):
    # A weight made with add_weight(regularizer=...) in a layer of one's own
    # (no kernel/bias attribute): the ledger showed it undecayed, and passed
    # AdamW on top of its L2 term, which the Keras optimizer's check refuses.
    class Scale(keras.layers.Layer):

      def build(self, input_shape):
        self.w = self.add_weight(
            name="w", shape=(input_shape[-1],), initializer="ones",
            regularizer=keras.regularizers.L2(0.03))

      def call(self, inputs):
        return inputs * self.w

    model = keras.Sequential([keras.Input(shape=(3,)), Scale(name="scale")])
    model(tf.ones([1, 3]))
    (row,) = safetrain.ledger(model, optimizer=keras.optimizers.SGD(0.1)).rows
    self.assertEqual(row.used_by, "Scale.add_weight")
    mechanism = _only_mechanism(self, row)
    self.assertEqual((mechanism.kind, mechanism.status), ("L2", "declared"))
    self.assertAlmostEqual(mechanism.l2, 0.03, places=7)
    self.assertAlmostEqual(row.decay, 1 - 0.1 * 2 * 0.03, places=6)
    adamw = keras.optimizers.AdamW(learning_rate=0.01, weight_decay=0.004)
    ledger = safetrain.ledger(model, optimizer=adamw)
    self.assertEqual([f.kind for f in ledger.findings], [Kind.DECAYED_TWICE])
    self.assertEqual(ledger.verdicts, (safetrain.Verdict.DOUBLED,))
    # The same verdict as the optimizer's own check.
    helpers.assert_error(self, safetrain.DoubleCountedRegularizationError,
                         "", safetrain.check_weight_decay, adamw,
                         model.trainable_variables)

  @parameterized.named_parameters(*_keras_modules())
  def test_exclusion_that_matches_nothing(self, keras):
    model = self._model(keras, l2=0.0)
    optimizer = keras.optimizers.AdamW(weight_decay=0.004)
    optimizer.exclude_from_weight_decay(var_names=["layer_norm"])
    ledger = safetrain.ledger(model, optimizer=optimizer)
    self.assertEqual(ledger.report.found(Kind.UNMATCHED)[0].variables,
                     ("layer_norm",))
    helpers.assert_error(self, safetrain.UnmatchedExclusionError,
                         "'layer_norm' matches none", safetrain.ledger,
                         model, optimizer=optimizer, on_missing="raise")
    excluding = keras.optimizers.AdamW(weight_decay=0.004)
    excluding.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    ledger = safetrain.ledger(model, optimizer=excluding)
    rows = self._rows(ledger)
    self.assertEqual(rows["BatchNormalization.gamma"].training, "excluded")
    self.assertEqual(rows["BatchNormalization.gamma"].by,
                     "exclude_from_weight_decay")
    self.assertEqual(ledger.report.found(Kind.UNMATCHED), ())


def _export(path, build):
  with tf.Graph().as_default():
    build()
    tf.compat.v1.train.export_meta_graph(filename=path)


def _good():
  _sgd_train_op(safetrain.total_loss_from(helpers.cross_entropy(0.01)))


def _twice():
  w = tf.compat.v1.get_variable(
      "w", [3], regularizer=lambda v: 0.1 * tf.nn.l2_loss(v))
  reg = tf.add_n(tf.compat.v1.losses.get_regularization_losses())
  extra = tf.multiply(0.2, tf.reduce_sum(tf.square(w)), name="manual_l2")
  tf.compat.v1.add_to_collection(
      tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES, extra)
  _sgd_train_op(tf.reduce_sum(w) + reg + extra)


class CommandLineTest(parameterized.TestCase):
  """`safetrain audit PATH --per-variable`, text and JSON, and exit codes."""

  def _call(self, argv):
    out = io.StringIO()
    with flagsaver.flagsaver(), contextlib.redirect_stdout(out), \
        contextlib.redirect_stderr(io.StringIO()):
      try:
        status = cli.main(cli._parse_flags(list(argv)))  # pylint: disable=protected-access
      except SystemExit as e:
        status = e.code
    return status, out.getvalue()

  def setUp(self):
    super().setUp()
    self.directory = helpers.make_tempdir(self)

  def test_text_table_fits_100_columns(self):
    path = os.path.join(self.directory, "good.meta")
    _export(path, _good)
    status, out = self._call(["safetrain", "audit", path, "--per-variable"])
    self.assertEqual(status, 0, out)
    self.assertRegex(out, r"conv1/weights +3x3x1x4 +kernel +trained +"
                     r"L2 0\.005 +0\.999\n")
    self.assertIn("formula: 1 - lr*2c", out)
    # slim.l2_regularizer(0.01) shows as L2 0.005: the table says why.
    self.assertIn("L2 c: the term is c*sum(w^2); slim.l2_regularizer(s) gives "
                  "c = s/2", out)
    table = out[out.index("ledger of"):]
    self.assertLessEqual(max(len(line) for line in table.splitlines()), 100)
    status, plain = self._call(["safetrain", "audit", path])
    self.assertEqual(status, 0)
    self.assertNotIn("ledger of", plain)

  def test_json_and_exit_code_of_a_variable_with_two_terms(self):
    path = os.path.join(self.directory, "twice.meta")
    _export(path, _twice)
    status, out = self._call(["safetrain", "audit", path, "--per-variable",
                              "--format=json"])
    self.assertEqual(status, 0)
    result = json.loads(out)
    self.assertEqual(result["verdicts"], [])
    ledger = result["train_ops"][0]["ledger"]
    row = ledger["rows"][0]
    self.assertEqual((row["variable"], row["kind"]), ("w", "other"))
    self.assertEqual([m["l2"] for m in row["mechanisms"]],
                     [np.float32(0.05).item(), np.float32(0.2).item()])
    (finding,) = ledger["findings"]
    self.assertEqual((finding["kind"], finding["error"], finding["variables"]),
                     ("several decay terms", False, ["w"]))
    # The audit without the ledger, as every check of the loss: the same.
    status, _ = self._call(["safetrain", "audit", path])
    self.assertEqual(status, 0)

  def test_left_out_exits_1(self):
    path = os.path.join(self.directory, "bad.meta")
    _export(path, lambda: _sgd_train_op(helpers.cross_entropy()))
    status, out = self._call(["safetrain", "audit", path, "--per-variable"])
    self.assertEqual(status, 1)
    self.assertIn("PROBLEM (every term left out): 2 regularized variables",
                  out)


class TrainerTest(absltest.TestCase):
  """The example trainer writes the ledger once, to the log and TensorBoard."""

  def test_trainer_writes_the_ledger_at_start(self):
    from examples import train_image_classifier as trainer  # pylint: disable=g-import-not-at-top
    train_dir = os.path.join(helpers.make_tempdir(self), "train")
    config = trainer.TrainConfig(
        train_dir=train_dir, model_name="lenet", depth_multiplier=0.25,
        weight_decay=1e-3, batch_size=8, max_number_of_steps=2,
        log_every_n_steps=1, save_summaries_secs=600, save_interval_secs=600,
        learning_rate=0.05, optimizer="sgd", seed=0)
    with self.assertLogs("absl", level="INFO") as logs:
      trainer.train(config)
    text = "\n".join(logs.output)
    self.assertEqual(text.count("Weight-decay ledger:"), 1)
    self.assertRegex(text, r"LeNet/conv1/weights +5x5x3x8 +kernel +trained +"
                     r"L2 0\.0005 +0\.99995")
    self.assertIn("OK: no finding.", text)
    texts = []
    for path in tf.io.gfile.glob(os.path.join(train_dir, "events.out.*")):
      for event in tf.compat.v1.train.summary_iterator(path):
        texts.extend(tf.make_ndarray(v.tensor).item().decode()
                     for v in event.summary.value
                     if v.tag == "weight_decay_ledger/text_summary")
    self.assertLen(texts, 1)
    self.assertIn("LeNet/conv1/weights", texts[0])


if __name__ == "__main__":
  absltest.main()
