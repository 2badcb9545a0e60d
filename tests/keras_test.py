"""Tests for safetrain.terms._keras: Keras regularization in tf.compat.v1 graphs.

Every test runs for each Keras this TensorFlow has: ``tf.keras`` (Keras 3 on
TF 2.16+, Keras 2 on TF 2.15), ``keras`` and ``tf_keras`` (Keras 2).
"""

import gc
import importlib
import importlib.util
import inspect
import os
import warnings

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import helpers
import safetrain
from safetrain.audit import _audit
from safetrain.terms import _keras
import safetrain.slim as slim

_BATCH = 4


def _keras_module(name):
  return tf.keras if name == "tf.keras" else importlib.import_module(name)


def _available():
  names = ["tf.keras"]
  names += [n for n in ("keras", "tf_keras")
            if importlib.util.find_spec(n) is not None]
  return names


_KERAS = _available()


def _generation(keras) -> int:
  return 3 if hasattr(keras, "ops") else 2


def _inputs():
  rng = np.random.RandomState(0)
  x = tf.constant(rng.rand(_BATCH, 3).astype(np.float32))
  y = tf.constant(np.arange(_BATCH) % 3)
  return x, y


def _dense(keras, units, **kwargs):
  return keras.layers.Dense(
      units, kernel_regularizer=keras.regularizers.l2(0.1), **kwargs)


def _sequential(keras, x):
  model = keras.Sequential([
      _dense(keras, 5, bias_regularizer=keras.regularizers.l1(0.2),
             activity_regularizer=keras.regularizers.l2(0.3)),
      _dense(keras, 3)])
  return model, model(x)


def _functional(keras, x):
  inputs = keras.Input((3,))
  hidden = _dense(keras, 5, bias_regularizer=keras.regularizers.l1(0.2))(
      inputs)
  model = keras.Model(inputs, _dense(keras, 3)(hidden))
  return model, model(x)


def _subclassed(keras, x):
  """A model holding a layer that holds a Dense (nested), with add_loss."""

  class Block(keras.layers.Layer):

    def __init__(self):
      super().__init__()
      self.inner = _dense(keras, 5)

    def call(self, inputs):
      out = self.inner(inputs)
      self.add_loss(0.01 * tf.reduce_mean(tf.square(out)))
      return out

  class Net(keras.Model):

    def __init__(self):
      super().__init__()
      self.block = Block()
      self.head = _dense(keras, 3)

    def call(self, inputs):
      return self.head(self.block(inputs))

  model = Net()
  return model, model(x)


def _shared(keras, x):
  layer = _dense(keras, 3)
  return layer, layer(x) + layer(2.0 * x)


_MODELS = {"sequential": _sequential, "functional": _functional,
           "subclassed": _subclassed, "shared": _shared}
_CASES = [dict(testcase_name=f"_{k}_{m}".replace(".", ""), keras_name=k,
               model=m) for k in _KERAS for m in _MODELS]
_PER_KERAS = [dict(testcase_name="_" + k.replace(".", ""), keras_name=k)
              for k in _KERAS]


def _dense_layers(net):
  """The Dense layers in ``net`` (itself included), found by attribute."""
  if hasattr(net, "kernel"):
    return [net]
  found = []
  for layer in getattr(net, "layers", ()):
    found.extend(_dense_layers(layer))
  for name in ("block", "inner", "head"):
    if name in vars(net) or hasattr(type(net), name):
      found.extend(_dense_layers(getattr(net, name)))
  return found


def _optimizer():
  return tf.compat.v1.train.GradientDescentOptimizer(0.1)


class KerasRuleTest(parameterized.TestCase):
  """The rule's verdicts on Keras-regularized graphs."""

  def build(self, keras_name, model):
    keras = _keras_module(keras_name)
    x, y = _inputs()
    net, logits = _MODELS[model](keras, x)
    xent = tf.compat.v1.losses.sparse_softmax_cross_entropy(y, logits)
    return keras, net, xent

  @parameterized.named_parameters(_CASES)
  def test_left_out_raises_naming_the_variable(self, keras_name, model):
    with tf.Graph().as_default():
      _, net, xent = self.build(keras_name, model)
      error = helpers.assert_error(
          self, safetrain.MissingRegularizationError,
          r"leaves out \d+ of \d+ regularization losses.*variable \S*kernel",
          safetrain.create_train_op_safe, xent, _optimizer())
      names = {v for t in error.missing for v in t.variables}
      kernels = {_keras._tf_variable(l.kernel).op.name
                 for l in _dense_layers(net)}
      self.assertNotEmpty(kernels)
      self.assertEqual(kernels, kernels & names)

  @parameterized.named_parameters(_CASES)
  def test_model_losses_added_once_is_ok(self, keras_name, model):
    with tf.Graph().as_default():
      _, net, xent = self.build(keras_name, model)
      loss = xent + tf.add_n(net.losses)
      report = safetrain.check_regularization(loss, expected_coefficient=1.0)
      self.assertTrue(report.ok, report.to_text())
      self.assertNotEmpty(report.terms)
      safetrain.create_train_op_safe(loss, _optimizer())

  @parameterized.named_parameters(_CASES)
  def test_model_losses_added_twice_is_overcounted(self, keras_name, model):
    with tf.Graph().as_default():
      _, net, xent = self.build(keras_name, model)
      loss = xent + tf.add_n(net.losses) + tf.add_n(net.losses)
      report = safetrain.check_regularization(loss, expected_coefficient=1.0)
      self.assertLen(report.overcounted, len(report.terms))
      self.assertEqual({t.coefficient for t in report.overcounted}, {2.0})
      with self.assertRaises(safetrain.DoubleCountedRegularizationError):
        safetrain.create_train_op_safe(loss, _optimizer())

  @parameterized.named_parameters(_CASES)
  def test_total_loss_from_adds_each_term_once(self, keras_name, model):
    with tf.Graph().as_default():
      _, net, xent = self.build(keras_name, model)
      total = safetrain.total_loss_from(xent)
      report = safetrain.check_regularization(total, expected_coefficient=1.0)
      self.assertTrue(report.ok, report.to_text())
      added = safetrain.create_train_op_safe(xent, _optimizer(),
                                             on_missing="add")
      by_hand = xent + tf.add_n(net.losses)
      with tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        # Read both sums before the train op runs: in one session.run the
        # update may land between them.
        got, expected = session.run([total, by_hand])
        trained_on = session.run(added)
      self.assertAllClose(got, expected)
      self.assertAllClose(trained_on, expected)

  @parameterized.named_parameters(_CASES)
  def test_warn_warns(self, keras_name, model):
    with tf.Graph().as_default():
      _, _, xent = self.build(keras_name, model)
      with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        safetrain.create_train_op_safe(xent, _optimizer(), on_missing="warn")
      self.assertTrue(any(issubclass(w.category,
                                     safetrain.MissingRegularizationWarning)
                          for w in caught), [str(w.message) for w in caught])

  def assertAllClose(self, a, b):  # pylint: disable=invalid-name
    np.testing.assert_allclose(a, b, rtol=1e-5)


class KerasTermsTest(parameterized.TestCase):
  """What regularization_terms finds, and its value computed by hand."""

  @parameterized.named_parameters(_PER_KERAS)
  def test_value_is_the_regularizers_computed_by_hand(self, keras_name):
    keras = _keras_module(keras_name)
    with tf.Graph().as_default() as graph:
      x, y = _inputs()
      first = _dense(keras, 5, bias_regularizer=keras.regularizers.l1(0.2),
                     activity_regularizer=keras.regularizers.l2(0.3))
      second = _dense(keras, 3)
      hidden = first(x)
      xent = tf.compat.v1.losses.sparse_softmax_cross_entropy(
          y, second(hidden))
      terms = _keras.regularization_terms(graph)
      self.assertCountEqual([t.kind for t in terms],
                            ["weight", "weight", "activity", "weight"])
      self.assertEqual(
          sorted(t.layer for t in terms if t.kind == "weight"),
          sorted([first.name, first.name, second.name]))
      total = safetrain.total_loss_from(xent)
      # How an activity term is normalized changed across Keras releases
      # (per batch in Keras 2 and early Keras 3, not in Keras 3.12): its
      # value is Keras's own; the weight terms are computed here by hand.
      (activity,) = [t for t in terms if t.kind == "activity"]
      with tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        got, xent_value, activity_value, w1, b1, w2 = session.run(
            [total, xent, activity.op.outputs[activity.value_index]] +
            [_keras._tf_variable(v) for v in (
                first.kernel, first.bias, second.kernel)])
      expected = (xent_value + 0.1 * np.sum(w1**2) + 0.2 * np.sum(np.abs(b1))
                  + activity_value + 0.1 * np.sum(w2**2))
      np.testing.assert_allclose(got, expected, rtol=1e-5)
      self.assertGreater(activity_value, 0.0)
      del hidden

  @parameterized.named_parameters(_PER_KERAS)
  def test_shared_layer_is_one_term_built_once(self, keras_name):
    keras = _keras_module(keras_name)
    with tf.Graph().as_default() as graph:
      x, _ = _inputs()
      layer = _dense(keras, 3)
      layer(x)
      layer(x)
      terms = _keras.regularization_terms(graph)
      self.assertLen(terms, 1)
      self.assertIs(terms[0].variable, _keras._tf_variable(layer.kernel))
      ops = len(graph.get_operations())
      again = _keras.regularization_terms(graph)
      self.assertIs(again[0], terms[0])
      self.assertLen(graph.get_operations(), ops)

  @parameterized.named_parameters(_PER_KERAS)
  def test_layer_without_a_reference_still_counts(self, keras_name):
    keras = _keras_module(keras_name)
    with tf.Graph().as_default():
      x, y = _inputs()
      logits = _dense(keras, 3)(x)  # The example: no layer kept.
      gc.collect()
      xent = tf.compat.v1.losses.sparse_softmax_cross_entropy(y, logits)
      helpers.assert_error(
          self, safetrain.MissingRegularizationError,
          r"leaves out 1 of 1 .*variable \S*kernel",
          safetrain.create_train_op_safe, xent, _optimizer())

  @parameterized.named_parameters(_PER_KERAS)
  def test_terms_of_other_graphs_are_not_listed(self, keras_name):
    keras = _keras_module(keras_name)
    with tf.Graph().as_default():
      _dense(keras, 3)(_inputs()[0])
    with tf.Graph().as_default() as graph:
      self.assertEmpty(_keras.regularization_terms(graph))

  @parameterized.named_parameters(_PER_KERAS)
  def test_mixed_slim_and_keras_needs_both(self, keras_name):
    keras = _keras_module(keras_name)
    with tf.Graph().as_default():
      images, labels = helpers.images_and_labels()
      net = helpers.small_cnn(images)
      layer = _dense(keras, 3)
      xent = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels,
                                                              layer(net))
      slim_only = xent + tf.add_n(helpers.regularization())
      keras_only = xent + tf.add_n(layer.losses)
      for loss, count, left_out in ((slim_only, 1, "kernel"),
                                    (keras_only, 2, "weights")):
        helpers.assert_error(
            self, safetrain.MissingRegularizationError,
            rf"leaves out {count} of 3 .*variable \S*{left_out}",
            safetrain.create_train_op_safe, loss, _optimizer())
      both = safetrain.total_loss_from(xent)
      report = safetrain.check_regularization(both, expected_coefficient=1.0)
      self.assertTrue(report.ok, report.to_text())
      self.assertLen(report.terms, 3)

  def test_legacy_tf_layers_regularization_counted_once(self):
    with tf.Graph().as_default() as graph:
      images, labels = helpers.images_and_labels()
      net = slim.batch_norm(helpers.small_cnn(images),
                            param_regularizers={"beta": slim.l2_regularizer(1.)})
      xent = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, net)
      self.assertEmpty(_keras.regularization_terms(graph))
      total = tf.compat.v1.losses.get_total_loss()
      report = safetrain.check_regularization(total, expected_coefficient=1.0)
      self.assertTrue(report.ok, report.to_text())
      self.assertLen(report.terms, 3)
      del xent


class IneffectiveRegularizerTest(parameterized.TestCase):

  @parameterized.named_parameters(_PER_KERAS)
  def test_set_after_build_is_found_and_the_fix_works(self, keras_name):
    keras = _keras_module(keras_name)
    with tf.Graph().as_default() as graph:
      x, _ = _inputs()
      pretrained = keras.layers.Dense(3, name="pretrained")
      pretrained(x)
      self.assertEmpty(_keras.ineffective_regularizers(graph))
      pretrained.kernel_regularizer = keras.regularizers.l2(0.5)
      self.assertEmpty(pretrained.losses)  # Keras ignores it: the bug.
      found = _keras.ineffective_regularizers(graph)
      self.assertLen(found, 1)
      item = found[0]
      self.assertEqual((item.layer, item.attribute, item.weight),
                       ("pretrained", "kernel_regularizer", "kernel"))
      self.assertEqual(item.variable,
                       _keras._tf_variable(pretrained.kernel).op.name)
      self.assertEqual(item.keras, _generation(keras))
      message = _keras.ineffective_message("create_train_op_safe", found)
      self.assertRegex(message, "layer 'pretrained': kernel_regularizer set "
                       "after build")
      fix = message.split("Fix (for each):\n")[1].splitlines()[0].split("#")[0]
      layer = pretrained  # The fix's code runs as written, with this name.
      exec(fix.strip(), {"layer": layer})  # pylint: disable=exec-used
      self.assertEmpty(_keras.ineffective_regularizers(graph))
      self.assertLen(pretrained.losses, 1)
      self.assertLen(_keras.regularization_terms(graph), 1)

  @parameterized.named_parameters(_PER_KERAS)
  def test_every_entry_point_refuses_it_through_the_policy(self, keras_name):
    keras = _keras_module(keras_name)
    with tf.Graph().as_default():
      x, labels = _inputs()
      pretrained = keras.layers.Dense(3, name="pretrained")
      logits = pretrained(x)
      pretrained.kernel_regularizer = keras.regularizers.l2(0.5)
      loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
      sgd = tf.compat.v1.train.GradientDescentOptimizer(0.1)
      with self.assertRaises(safetrain.IneffectiveRegularizerError) as caught:
        safetrain.create_train_op_safe(loss, sgd)
      self.assertIsInstance(caught.exception, safetrain.RegularizationError)
      self.assertEqual(caught.exception.verdicts,
                       (safetrain.Verdict.INEFFECTIVE,))
      self.assertLen(caught.exception.ineffective, 1)
      self.assertRegex(str(caught.exception),
                       r"layer 'pretrained': kernel_regularizer set after "
                       r"build(.|\n)*Fix(.|\n)*on_missing=\"warn\"")
      with self.assertRaises(safetrain.IneffectiveRegularizerError):
        with safetrain.guard_optimizers():
          sgd.minimize(loss)
      with self.assertWarns(safetrain.MissingRegularizationWarning):
        safetrain.create_train_op_safe(loss, sgd, on_missing="warn")

  @parameterized.named_parameters(_PER_KERAS)
  def test_constructor_regularizer_is_not_reported(self, keras_name):
    keras = _keras_module(keras_name)
    with tf.Graph().as_default() as graph:
      _dense(keras, 3, bias_regularizer=keras.regularizers.l1(0.1))(
          _inputs()[0])
      self.assertEmpty(_keras.ineffective_regularizers(graph))


def _with_weight_summaries():
  for variable in slim.get_model_variables():
    slim.summaries.add_scalar_summary(tf.norm(variable),
                                      variable.op.name + "/norm")
    tf.compat.v1.summary.scalar(variable.op.name + "/sq",
                                0.5 * tf.reduce_sum(tf.square(variable)))


def _resnet():
  from tf_slim.nets import resnet_v1  # pylint: disable=g-import-not-at-top
  with slim.arg_scope(resnet_v1.resnet_arg_scope(weight_decay=1e-4)):
    return resnet_v1.resnet_v1_50(tf.zeros([1, 32, 32, 3]), 3)[0]


def _inception():
  from tf_slim.nets import inception_v1  # pylint: disable=g-import-not-at-top
  with slim.arg_scope(inception_v1.inception_v1_arg_scope(weight_decay=1e-4)):
    return inception_v1.inception_v1(tf.zeros([1, 224, 224, 3]), 3)[0]


def _vgg():
  from tf_slim.nets import vgg  # pylint: disable=g-import-not-at-top
  with slim.arg_scope(vgg.vgg_arg_scope(weight_decay=1e-4)):
    return vgg.vgg_16(tf.zeros([1, 224, 224, 3]), 3)[0]


def _mobilenet():
  from examples.nets import mobilenet_v2  # pylint: disable=g-import-not-at-top
  with slim.arg_scope(mobilenet_v2.training_scope(weight_decay=1e-4)):
    return mobilenet_v2.mobilenet(tf.zeros([1, 32, 32, 3]), 3,
                                  depth_multiplier=0.35)[0]


class NoFalsePositiveTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("resnet_v1_50", _resnet), ("inception_v1", _inception),
      ("vgg_16", _vgg), ("mobilenet_v2", _mobilenet))
  def test_slim_nets_with_weight_summaries(self, build):
    directory = helpers.make_tempdir(self)
    path = os.path.join(directory, "model.meta")
    with tf.Graph().as_default() as graph:
      logits = tf.reshape(build(), [1, 3])
      tf.compat.v1.losses.softmax_cross_entropy(tf.one_hot([0], 3), logits)
      _with_weight_summaries()
      before = len(graph.get_operations())
      self.assertEmpty(_keras.regularization_terms(graph))
      self.assertEmpty(_keras.saved_terms(graph))
      self.assertLen(graph.get_operations(), before)
      total = tf.compat.v1.losses.get_total_loss()
      report = safetrain.check_regularization(total, expected_coefficient=1.0)
      self.assertTrue(report.ok, report.to_text())
      self.assertLen(report.terms, len(helpers.regularization()))
      slim.learning.create_train_op(total, _optimizer())
      tf.compat.v1.train.export_meta_graph(filename=path)
    result = safetrain.audit_meta_graph(path)
    self.assertEqual(result.exit_code, 0, result.to_text())
    imported, _, _ = _audit.load_meta_graph(path)
    self.assertEmpty(_keras.saved_terms(imported))


class UserLayerTest(parameterized.TestCase):
  """Layers of the user's own still work once safetrain records layers."""

  @parameterized.parameters(*_KERAS)
  def test_a_layer_subclass_without_its_own_init(self, name):
    # safetrain wraps Layer.__init__ to record layers. Keras 3 reads the
    # __init__ of a subclass that defines none with getfullargspec (the
    # wrapper's *args, **kwargs) and binds it with signature (the
    # original's): Scale(name=...) raised KeyError: 'args' inside Keras.
    keras = _keras_module(name)
    _keras.live_layers()  # Starts recording, as any check of Keras does.

    class Scale(keras.layers.Layer):

      def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1],),
                                 initializer="ones")

      def call(self, inputs):
        return inputs * self.w

    for layer in (Scale(), Scale(name="scale", trainable=False)):
      layer(tf.ones([1, 3]))
      self.assertIn(layer, _keras.live_layers())
    self.assertEqual(layer.get_config()["name"], "scale")
    self.assertFalse(layer.get_config()["trainable"])
    self.assertEqual(inspect.signature(keras.layers.Layer.__init__),
                     inspect.signature(inspect.unwrap(
                         keras.layers.Layer.__init__)))


class AuditTest(parameterized.TestCase):
  """What a saved graph of a Keras model shows the audit."""

  def export(self, keras_name, *, activity, read_losses, include):
    import tf_slim  # pylint: disable=g-import-not-at-top
    keras = _keras_module(keras_name)
    path = os.path.join(helpers.make_tempdir(self), "model.meta")
    with tf.Graph().as_default():
      x, y = _inputs()
      kwargs = {"activity_regularizer": keras.regularizers.l2(0.3)} if (
          activity) else {}
      model = keras.Sequential([_dense(keras, 5, **kwargs), _dense(keras, 3)])
      loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(y, model(x))
      if read_losses:  # Logged, say, whether or not it is optimized.
        tf.compat.v1.summary.scalar("regularization", tf.add_n(model.losses))
      if include:
        loss += tf.add_n(model.losses)
      # tf_slim's own, unchecked: the audit sees what a plain run saves.
      tf_slim.learning.create_train_op(loss, _optimizer())
      tf.compat.v1.train.export_meta_graph(filename=path)
    return keras, safetrain.audit_meta_graph(path)

  @parameterized.named_parameters(_PER_KERAS)
  def test_included_terms_pass(self, keras_name):
    _, result = self.export(keras_name, activity=True, read_losses=True,
                            include=True)
    self.assertEqual(result.exit_code, 0, result.to_text())

  @parameterized.named_parameters(_PER_KERAS)
  def test_left_out_terms_the_graph_shows(self, keras_name):
    keras, result = self.export(keras_name, activity=True, read_losses=True,
                                include=False)
    self.assertEqual(result.exit_code, 1, result.to_text())
    variables = {v for t in result.missing for v in t.variables}
    self.assertTrue(any(v.endswith("kernel") for v in variables))
    names = " ".join(t.name for t in result.missing)
    if _generation(keras) == 2:  # Scoped: <weight>/Regularizer, Activity...
      self.assertIn("kernel/Regularizer", names)
      self.assertIn("ActivityRegularizer", names)
    else:
      # Keras 3 builds its terms unnamed; a weight term still shows what it
      # computes, l2 * sum(square(kernel)), summed with the activity term
      # into the logged regularization (terms/_penalties).
      self.assertEqual(len(result.missing), 2, names)

  @parameterized.named_parameters(_PER_KERAS)
  def test_terms_never_read_are_not_in_the_saved_graph(self, keras_name):
    _, result = self.export(keras_name, activity=False, read_losses=False,
                            include=False)
    # Documented limit: no Keras builds a weight term before .losses is read.
    self.assertEqual(result.exit_code, 0, result.to_text())
    self.assertEmpty([t for r in result.train_ops[0].reports for t in r.terms])


if __name__ == "__main__":
  absltest.main()
