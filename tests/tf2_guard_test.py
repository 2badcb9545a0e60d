"""The guard on TF2 code: plain tf.GradientTape loops and Keras fit overrides.

``guard_optimizers()`` (and ``safetrain run``) put the check on
``tf.GradientTape`` itself. Keras's ``fit`` computes its gradients with a
``tf.GradientTape`` in ``train_step``, so an override of ``compute_loss`` or
``train_step`` that drops ``self.losses`` is caught at the first step (the
trace of the train function), and Keras's own ``fit`` passes.
"""

import os
import subprocess
import sys
import tempfile
import warnings

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tf_keras

import safetrain
from safetrain.tf2 import _tape
from tests import helpers

KERASES = ((tf.keras.__name__.split(".")[0], tf.keras), ("tf_keras", tf_keras))


def _model_class(keras, override):
  """A Sequential-like model; ``override`` drops ``self.losses`` or not."""

  class Model(keras.Model):

    def __init__(self):
      super().__init__()
      self.dense = keras.layers.Dense(
          2, kernel_regularizer=keras.regularizers.L2(0.1),
          kernel_initializer=keras.initializers.GlorotUniform(seed=0))

    def call(self, x):
      return self.dense(x)

  if override == "compute_loss":
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     **kwargs):
      del x, sample_weight, kwargs
      return tf.reduce_mean(tf.square(y_pred - y))  # self.losses dropped
    Model.compute_loss = compute_loss
  elif override == "train_step":
    def train_step(self, data):
      x, y = data
      with tf.GradientTape() as tape:
        y_pred = self(x, training=True)
        loss = tf.reduce_mean(tf.square(y_pred - y))  # self.losses dropped
      grads = tape.gradient(loss, self.trainable_variables)
      self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
      return {"loss": loss}
    Model.train_step = train_step
  elif override == "train_step_fixed":
    def train_step(self, data):
      x, y = data
      with tf.GradientTape() as tape:
        y_pred = self(x, training=True)
        loss = safetrain.total_loss_from(
            tf.reduce_mean(tf.square(y_pred - y)), model=self)
      grads = tape.gradient(loss, self.trainable_variables)
      self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
      return {"loss": loss}
    Model.train_step = train_step
  return Model


def _fit(keras, override, run_eagerly=False):
  model = _model_class(keras, override)()
  model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse",
                run_eagerly=run_eagerly)
  rng = np.random.RandomState(0)
  x = rng.rand(16, 3).astype(np.float32)
  y = rng.rand(16, 2).astype(np.float32)
  model.fit(x, y, batch_size=8, epochs=1, verbose=0)
  return model


def _cases():
  for kname, keras in KERASES:
    for eager in (False, True):
      mode = "eager" if eager else "function"
      yield (f"{kname}_{mode}", keras, eager)


class FitTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    _tape.clear_cache()

  @parameterized.named_parameters(*_cases())
  def test_keras_fit_passes(self, keras, eager):
    with safetrain.guard_optimizers():
      _fit(keras, None, eager)
      _fit(keras, "train_step_fixed", eager)

  @parameterized.named_parameters(*_cases())
  def test_compute_loss_override_dropping_losses_raises(self, keras, eager):
    with safetrain.guard_optimizers():
      e = helpers.assert_error(
          self, safetrain.MissingRegularizationError,
          r"leaves out 1 of 1.*L2\(.*kernel\)", _fit, keras, "compute_loss",
          eager)
    self.assertLen(e.missing, 1)

  @parameterized.named_parameters(*_cases())
  def test_train_step_override_dropping_losses_raises(self, keras, eager):
    with safetrain.guard_optimizers():
      helpers.assert_error(
          self, safetrain.MissingRegularizationError,
          r"leaves out 1 of 1.*L2\(.*kernel\)", _fit, keras, "train_step",
          eager)

  def test_without_guard_the_override_trains_silently(self):
    # The bug the guard catches: decay is configured, the override drops
    # it, and without the guard nothing says anything.
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      model = _fit(tf.keras, "compute_loss")
    self.assertNotEmpty(model.losses)
    self.assertEqual(
        [w for w in caught
         if issubclass(w.category, safetrain.MissingRegularizationWarning)],
        [])

  def test_guard_warn_and_unpatch(self):
    with safetrain.guard_optimizers(on_missing="warn"):
      with self.assertWarns(safetrain.MissingRegularizationWarning):
        _fit(tf.keras, "train_step")
    self.assertIs(tf.GradientTape.gradient, _tape._ORIGINALS["gradient"])  # pylint: disable=protected-access


_SCRIPT = """
import numpy as np, tensorflow as tf
keras = tf.keras
model = keras.Sequential([keras.layers.Dense(
    2, kernel_regularizer=keras.regularizers.L2(0.1), input_shape=(3,))])
x, y = np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32)
with tf.GradientTape() as tape:
  loss = tf.reduce_mean(tf.square(model(x) - y))   # model.losses left out
tape.gradient(loss, model.trainable_variables)
print("trained without regularization")
"""


class RunTest(absltest.TestCase):

  def test_safetrain_run_checks_an_unchanged_tf2_script(self):
    with tempfile.TemporaryDirectory() as tmp:
      script = os.path.join(tmp, "train.py")
      with open(script, "w") as f:
        f.write(_SCRIPT)
      env = dict(os.environ)
      env["PYTHONPATH"] = os.pathsep.join(
          [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))] +
          [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
      plain = subprocess.run([sys.executable, script], env=env,
                             capture_output=True, text=True, timeout=300)
      self.assertEqual(plain.returncode, 0, plain.stderr[-2000:])
      self.assertIn("trained without regularization", plain.stdout)
      run = subprocess.run(
          [sys.executable, "-m", "safetrain", "run", "--", sys.executable,
           script], env=env, capture_output=True, text=True, timeout=300)
      self.assertNotEqual(run.returncode, 0)
      self.assertIn("MissingRegularizationError", run.stderr)
      self.assertRegex(run.stderr, r"leaves out 1 of 1")
      self.assertNotIn("trained without regularization", run.stdout)


if __name__ == "__main__":
  absltest.main()
