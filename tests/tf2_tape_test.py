"""safetrain.GradientTape and total_loss_from(model=) on TF2 loops.

A scenario table drives one test body: each way a custom loop builds the
loss it differentiates, what the check must say, for Keras models of each
Keras this TensorFlow has (``tf.keras``: Keras 3 on TF >= 2.16, Keras 2 on
TF 2.15; and tf_keras), run eagerly and in a ``tf.function``.
"""

import warnings

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tf_keras

import safetrain
from safetrain.tf2 import _tape
from tests import helpers

WEIGHT_DECAY = 0.1
KERASES = (("tf_keras_" + tf.keras.__name__.split(".")[0], tf.keras),
           ("tf_keras", tf_keras))
MODES = ("eager", "function")

# Each construction: (name, the loss, the error it must raise or None).
def _data(model, x, y):
  return tf.reduce_mean(tf.square(model(x) - y))


CONSTRUCTIONS = {
    "fixed": (lambda m, x, y: _data(m, x, y) + tf.add_n(m.losses), None),
    "total_loss_from": (
        lambda m, x, y: safetrain.total_loss_from(_data(m, x, y), model=m),
        None),
    "left_out": (_data, safetrain.MissingRegularizationError),
    "doubled": (lambda m, x, y: _data(m, x, y) + 2.0 * tf.add_n(m.losses),
                safetrain.DoubleCountedRegularizationError),
    "read_not_added": (  # model.losses computed (for logging), not added.
        lambda m, x, y: _data(m, x, y) + 0.0 * len(m.losses),
        safetrain.MissingRegularizationError),
    "stop_gradient": (
        lambda m, x, y: _data(m, x, y) + tf.stop_gradient(tf.add_n(m.losses)),
        safetrain.MissingRegularizationError),
}


def _model(keras, seed=0):
  """Dense(4, L2 kernel) -> Dense(2, no regularizer): 1 regularized of 4."""
  init = keras.initializers.GlorotUniform(seed=seed)
  model = keras.Sequential([
      keras.layers.Dense(4, activation="tanh", kernel_initializer=init,
                         kernel_regularizer=keras.regularizers.L2(
                             WEIGHT_DECAY), input_shape=(3,)),
      keras.layers.Dense(2, kernel_initializer=init),
  ])
  model(tf.zeros((1, 3)))
  return model


def _batch():
  rng = np.random.RandomState(0)
  return (tf.constant(rng.rand(8, 3).astype(np.float32)),
          tf.constant(rng.rand(8, 2).astype(np.float32)))


def _step(build, model, mode, tape_type=safetrain.GradientTape, **kwargs):
  x, y = _batch()

  def step():
    with tape_type(**kwargs) as tape:
      loss = build(model, x, y)
    return tape.gradient(loss, model.trainable_variables)
  if mode == "function":
    step = tf.function(step)
  return [g.numpy() for g in step()]


def _cases():
  for kname, keras in KERASES:
    for mode in MODES:
      for cname in CONSTRUCTIONS:
        yield (f"{kname}_{mode}_{cname}", keras, mode, cname)


class GradientTapeTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    _tape.clear_cache()

  @parameterized.named_parameters(*_cases())
  def test_scenario(self, keras, mode, construction):
    build, error = CONSTRUCTIONS[construction]
    model = _model(keras)
    if error is None:
      grads = _step(build, model, mode)
      plain = _step(build, model, mode, tape_type=tf.GradientTape)
      for a, b in zip(grads, plain):
        np.testing.assert_allclose(a, b, rtol=1e-6)
      return
    pattern = (r"leaves out 1 of 1 regularization.*L2\(.*dense.*kernel\).*"
               r"(total_loss_from\(data_loss, model=model\)|"
               r"stop_gradient.*data_loss \+ tf.add_n\(model.losses\))"
               if error is safetrain.MissingRegularizationError else
               r"counts 1 regularization loss more often than once.*"
               r"counted x2 \(expected x1\)")
    e = helpers.assert_error(self, error, pattern, _step, build, model, mode)
    self.assertIsInstance(e, ValueError)
    self.assertIn("single device: each term counted x1", str(e))
    self.assertEqual(e.report.expected_coefficient, 1.0)
    self.assertEqual(len(e.report.terms), 1)
    self.assertEqual(e.report.terms[0].variables,
                     (_name(model.layers[0].kernel),))
    if error is safetrain.DoubleCountedRegularizationError:
      self.assertAlmostEqual(e.overcounted[0].coefficient, 2.0, places=5)
    else:
      self.assertLen(e.missing, 1)
      self.assertEqual(e.report.to_dict()["rule"],
                       "single device: each term counted x1")

  @parameterized.named_parameters(*KERASES)
  def test_a_traced_step_reads_the_whole_loss_scale_as_the_graph_api(
      self, keras):
    halved = lambda m, x, y: 0.5 * (_data(m, x, y) + tf.add_n(m.losses))
    weak = lambda m, x, y: _data(m, x, y) + 0.5 * tf.add_n(m.losses)
    batch = [v.numpy() for v in _batch()]
    # 0.5 * (data + decay) keeps their balance: the graph API passes it ...
    with tf.Graph().as_default():
      x, y = (tf.constant(v) for v in batch)
      graph_model = _model(keras)
      report = safetrain.check_regularization(
          halved(graph_model, x, y), expected_coefficient=1.0)
    self.assertTrue(report.ok, report.to_text())
    # (tf_keras: a model made before a v1 graph's layers is invalid after.)
    model = _model(keras)
    # ... and so does a traced step; halving the decay alone is refused.
    _step(halved, model, "function")
    with self.assertRaises(safetrain.TooWeakRegularizationError):
      _step(weak, model, "function")
    # Eagerly only the gradient is seen, which cannot tell the two apart
    # (README, "TF2 training loops").
    with self.assertRaises(safetrain.TooWeakRegularizationError):
      _step(halved, model, "eager")

  @parameterized.product(keras=[k for _, k in KERASES], mode=MODES)
  def test_add_gives_the_fixed_gradients(self, keras, mode):
    model = _model(keras)
    added = _step(CONSTRUCTIONS["left_out"][0], model, mode, on_missing="add")
    fixed = _step(CONSTRUCTIONS["fixed"][0], model, mode,
                  tape_type=tf.GradientTape)
    left_out = _step(CONSTRUCTIONS["left_out"][0], model, mode,
                     tape_type=tf.GradientTape)
    for a, b in zip(added, fixed):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    self.assertFalse(np.allclose(added[0], left_out[0]))

  @parameterized.product(keras=[k for _, k in KERASES], mode=MODES)
  def test_add_tells_apart_variables_with_the_same_name(self, keras, mode):
    # Two models whose layers share names (an encoder and its copy, say):
    # their kernels have the same name, and each needs its own term.
    def make(seed):
      init = keras.initializers.GlorotUniform(seed=seed)
      model = keras.Sequential([keras.layers.Dense(
          2, name="proj", kernel_initializer=init,
          kernel_regularizer=keras.regularizers.L2(WEIGHT_DECAY))])
      model(tf.zeros((1, 3)))
      return model
    first, second = make(1), make(2)
    x, y = _batch()
    variables = first.trainable_variables + second.trainable_variables

    def data(m1, m2):
      return tf.reduce_mean(tf.square(m1(x) + m2(x) - y))

    def step(tape_type, regularized, **kwargs):
      def run():
        with tape_type(**kwargs) as tape:
          loss = data(first, second)
          if regularized:
            loss += tf.add_n(first.losses + second.losses)
        return tape.gradient(loss, variables)
      run = tf.function(run) if mode == "function" else run
      return [g.numpy() for g in run()]

    added = step(safetrain.GradientTape, False, on_missing="add")
    fixed = step(tf.GradientTape, True)
    for a, b in zip(added, fixed, strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)

  @parameterized.product(keras=[k for _, k in KERASES], mode=MODES)
  def test_warn(self, keras, mode):
    model = _model(keras)
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      grads = _step(CONSTRUCTIONS["left_out"][0], model, mode,
                    on_missing="warn")
    self.assertTrue(any(issubclass(w.category,
                                   safetrain.MissingRegularizationWarning)
                        for w in caught))
    plain = _step(CONSTRUCTIONS["left_out"][0], model, mode,
                  tape_type=tf.GradientTape)
    np.testing.assert_allclose(grads[0], plain[0], rtol=1e-6)

  @parameterized.product(keras=[k for _, k in KERASES], mode=MODES)
  def test_frozen_regularized_layer_is_not_required(self, keras, mode):
    model = _model(keras)
    x, y = _batch()

    def step():
      with safetrain.GradientTape() as tape:
        loss = _data(model, x, y)
      return tape.gradient(loss, model.layers[1].trainable_variables)
    step = tf.function(step) if mode == "function" else step
    self.assertLen(step(), 2)

  def test_eager_checks_the_first_step_of_a_structure_only(self):
    model = _model(tf.keras)
    x, y = _batch()
    checks = []
    original = _tape._tf2.regularized_variables

    def counted(variables):
      checks.append(len(variables))
      return original(variables)
    _tape._tf2.regularized_variables = counted
    try:
      def step(build):
        with safetrain.GradientTape() as tape:
          loss = build(model, x, y)
        return tape.gradient(loss, model.trainable_variables)
      for _ in range(3):
        step(CONSTRUCTIONS["fixed"][0])
      self.assertEqual(checks, [4])
      # Another structure (model.losses no longer computed) is checked.
      helpers.assert_error(self, safetrain.MissingRegularizationError,
                           r"leaves out 1 of 1", step,
                           CONSTRUCTIONS["left_out"][0])
      self.assertEqual(checks, [4, 4])
    finally:
      _tape._tf2.regularized_variables = original

  def test_function_checks_once_per_trace(self):
    model = _model(tf.keras)
    checks = []
    original = _tape._tf2.regularized_variables

    def counted(variables):
      checks.append(len(variables))
      return original(variables)

    @tf.function
    def step(x, y):
      with safetrain.GradientTape() as tape:
        loss = _data(model, x, y) + tf.add_n(model.losses)
      return tape.gradient(loss, model.trainable_variables)
    _tape._tf2.regularized_variables = counted
    try:
      x, y = _batch()
      for _ in range(3):
        step(x, y)
      self.assertEqual(checks, [4])
      step(x[:4], y[:4])  # A new shape: a new trace, checked again.
      self.assertEqual(checks, [4, 4])
    finally:
      _tape._tf2.regularized_variables = original

  def test_bad_on_missing(self):
    helpers.assert_error(self, safetrain.InvalidArgumentError,
                         r"on_missing", safetrain.GradientTape,
                         on_missing="ignore")

  def test_plain_tf_tape_unchanged_without_guard(self):
    model = _model(tf.keras)
    grads = _step(CONSTRUCTIONS["left_out"][0], model, "eager",
                  tape_type=tf.GradientTape)
    self.assertLen(grads, 4)


def _name(variable):
  return safetrain.tf2._tf2.variable_name(variable)  # pylint: disable=protected-access


class UnrecordableRegularizerTest(parameterized.TestCase):
  """A plain function as kernel_regularizer is not a false 'missing'."""

  @parameterized.product(keras=KERASES, mode=MODES)
  def test_plain_function_regularizer_is_not_refused(self, keras, mode):
    _, keras = keras
    function = lambda w: WEIGHT_DECAY * tf.reduce_sum(w * w)  # noqa: E731
    try:  # Building the kernel gives it its regularizer.
      model = keras.Sequential([keras.layers.Dense(
          2, kernel_regularizer=function, input_shape=(3,))])
      model(tf.zeros((1, 3)))
    except ValueError as e:
      # Keras 3 before 3.13 (the Python 3.10 lanes' 3.12) takes Regularizer
      # objects only: there the case cannot arise, and Keras says so.
      self.assertIn("Regularizer", str(e))
      return
    x, y = _batch()

    def step():
      with safetrain.GradientTape() as tape:
        loss = _data(model, x, y) + tf.add_n(model.losses)
      return tape.gradient(loss, model.trainable_variables)

    if mode == "function":
      step = tf.function(step)
    with self.assertLogs(level="WARNING") as logs:
      grads = step()
    self.assertTrue(all(g is not None for g in grads))
    self.assertIn("is not a Keras Regularizer", "\n".join(logs.output))


class TotalLossFromModelTest(parameterized.TestCase):

  @parameterized.product(keras=[k for _, k in KERASES], mode=MODES)
  def test_adds_each_term_once(self, keras, mode):
    model = _model(keras)
    x, y = _batch()

    def values():
      data = _data(model, x, y)
      return data, safetrain.total_loss_from(data, model=model)
    fn = tf.function(values) if mode == "function" else values
    data, total = fn()
    kernel = model.layers[0].kernel
    expected = data + WEIGHT_DECAY * tf.reduce_sum(tf.square(kernel))
    np.testing.assert_allclose(total.numpy(), expected.numpy(), rtol=1e-6)

  def test_eager_without_model_raises(self):
    helpers.assert_error(
        self, safetrain.EagerModeError,
        r"eager.*total_loss_from\(data_loss, model=model\)",
        safetrain.total_loss_from, tf.constant(1.0))

  def test_bad_model(self):
    helpers.assert_error(self, safetrain.InvalidArgumentTypeError,
                         r"model must be a Keras model",
                         safetrain.total_loss_from, tf.constant(1.0),
                         model=object())

  def test_no_loss(self):
    helpers.assert_error(self, safetrain.InvalidArgumentError,
                         r"pass the data loss",
                         safetrain.total_loss_from, model=_model(tf.keras))


if __name__ == "__main__":
  absltest.main()
