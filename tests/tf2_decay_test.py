"""Keras optimizers' decoupled weight decay: doubled decay, useless exclusions.

Parametrized over the Keras optimizers this TensorFlow has: ``tf.keras``
(Keras 3 on TF >= 2.16, Keras 2 on TF 2.15) and tf_keras; each has
``weight_decay`` and ``exclude_from_weight_decay``.
"""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tf_keras

import safetrain
from safetrain.tf2 import _tape
from tests import helpers

KERASES = (("tf_keras_module", tf.keras), ("tf_keras", tf_keras))


def _is_keras3(keras) -> bool:
  return str(getattr(keras, "__version__", "2")).startswith("3")


def _model(keras, regularized=True):
  regularizer = keras.regularizers.L2(0.01) if regularized else None
  model = keras.Sequential([
      keras.layers.Dense(4, kernel_regularizer=regularizer, name="body",
                         input_shape=(3,)),
      keras.layers.Dense(2, name="head")])
  model(tf.zeros((1, 3)))
  return model


def _train(model, optimizer, mode="eager"):
  x = tf.ones((4, 3))
  y = tf.zeros((4, 2))

  def step():
    with tf.GradientTape() as tape:
      loss = safetrain.total_loss_from(
          tf.reduce_mean(tf.square(model(x) - y)), model=model)
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
  if mode == "function":
    step = tf.function(step)
  step()


def _cases():
  for kname, keras in KERASES:
    for optimizer in ("AdamW", "SGD"):
      for mode in ("eager", "function"):
        yield f"{kname}_{optimizer}_{mode}", keras, optimizer, mode


def _optimizer(keras, name, **kwargs):
  if name == "AdamW":
    return keras.optimizers.AdamW(0.01, weight_decay=0.004, **kwargs)
  return keras.optimizers.SGD(0.01, weight_decay=0.004, **kwargs)


class DecayTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    _tape.clear_cache()

  @parameterized.named_parameters(*_cases())
  def test_decay_and_l2_in_the_loss_is_doubled(self, keras, name, mode):
    model = _model(keras)
    with safetrain.guard_optimizers():
      e = helpers.assert_error(
          self, safetrain.DoubleCountedRegularizationError,
          r"counts 1 regularization loss more often than once.*"
          r"decoupled weight decay counts as one.*"
          r"counted x2 \(expected x1\): 'L2\(.*body.*kernel\) \+ "
          r".*weight_decay=0.004\)'.*exclude_from_weight_decay",
          _train, model, _optimizer(keras, name), mode)
    self.assertLen(e.overcounted, 1)

  @parameterized.named_parameters(*_cases())
  def test_decay_alone_or_excluded_passes(self, keras, name, mode):
    with safetrain.guard_optimizers():
      _train(_model(keras, regularized=False), _optimizer(keras, name), mode)
      model = _model(keras)
      optimizer = _optimizer(keras, name)
      optimizer.exclude_from_weight_decay(
          var_list=[model.get_layer("body").kernel])
      _train(model, optimizer, mode)

  @parameterized.named_parameters(*_cases())
  def test_exclusion_that_matches_nothing_raises(self, keras, name, mode):
    model = _model(keras, regularized=False)
    optimizer = _optimizer(keras, name)
    optimizer.exclude_from_weight_decay(var_names=["no_such_layer"])
    with safetrain.guard_optimizers():
      e = helpers.assert_error(
          self, safetrain.UnmatchedExclusionError,
          r"var_names=\['no_such_layer'\]\) matches none of the 4 variables",
          _train, model, optimizer, mode)
    self.assertIsInstance(e, ValueError)
    self.assertIsInstance(e, safetrain.RegularizationError)
    self.assertEqual(e.verdicts, (safetrain.Verdict.UNMATCHED,))

  @parameterized.named_parameters(
      (kname, keras) for kname, keras in KERASES)
  def test_layer_name_pattern(self, keras):
    # Keras 3 matches var_names against the short name ('kernel'), so a
    # layer name excludes nothing: refused. Keras 2 matches 'head/kernel:0',
    # so there the pattern works and the decayed set shrinks.
    model = _model(keras)
    optimizer = _optimizer(keras, "AdamW")
    optimizer.exclude_from_weight_decay(var_names=["body"])
    if _is_keras3(keras):
      helpers.assert_error(
          self, safetrain.UnmatchedExclusionError,
          r"var_names=\['body'\]\) matches none.*\(bias, kernel\)",
          safetrain.check_weight_decay, optimizer,
          model.trainable_variables)
    else:
      report = safetrain.check_weight_decay(optimizer,
                                            model.trainable_variables)
      self.assertEqual(report.overcounted, ())
      self.assertFalse(optimizer._use_weight_decay(  # pylint: disable=protected-access
          model.get_layer("body").kernel))

  def test_warn(self):
    with self.assertWarns(safetrain.MissingRegularizationWarning):
      report = safetrain.check_weight_decay(
          _optimizer(tf.keras, "AdamW"), _model(tf.keras).trainable_variables,
          on_missing="warn")
    self.assertEqual([t.coefficient for t in report.overcounted], [2.0])

  def test_no_decay(self):
    self.assertIsNone(safetrain.check_weight_decay(
        tf.keras.optimizers.Adam(0.01), _model(tf.keras).trainable_variables))

  def test_decay_really_shrinks_the_kernel(self):
    # What "doubled" means: with L2 in the loss, decay on top shrinks more.
    shrunk = []
    for decay in (None, 0.5):
      model = _model(tf.keras)
      model.set_weights([np.ones_like(w) for w in model.get_weights()])
      optimizer = tf.keras.optimizers.SGD(0.1, weight_decay=decay)
      _train(model, optimizer)
      shrunk.append(float(tf.reduce_sum(model.get_layer("body").kernel)))
    self.assertLess(shrunk[1], shrunk[0])


if __name__ == "__main__":
  absltest.main()
