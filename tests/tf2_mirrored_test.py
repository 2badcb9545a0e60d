"""MirroredStrategy with a TF2 custom loop: regularization counted once.

Two logical CPU devices must be configured before TensorFlow initializes,
which pytest's process has long done, so the training runs in a child
process (this file with ``--child``) that writes JSON; the tests judge it.

Each replica differentiates its loss with ``safetrain.GradientTape`` in a
``tf.function``; the Keras optimizer sums the replicas' gradients. The child
runs one step from the same start for each construction of the replica loss,
with 1 replica and with 2 (same global batch), for ``tf.keras`` (Keras 3, or
Keras 2 on TF 2.15) and tf_keras.
"""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np

BATCH = 8
WEIGHT_DECAY = 0.1
LEARNING_RATE = 0.5
CHILD_TIMEOUT_S = 300

# How a replica builds the loss it differentiates:
#   scaled: compute_average_loss + scale_regularization_loss(model.losses).
#   total_loss_from: safetrain.total_loss_from(compute_average_loss, model=).
#   unscaled: compute_average_loss + add_n(model.losses): decay N times.
#   left_out: compute_average_loss only.
CONSTRUCTIONS = ("scaled", "total_loss_from", "unscaled", "left_out")


def _child(out_path):
  """Runs in a fresh process: trains one step per case, writes JSON."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  cpu, = tf.config.list_physical_devices("CPU")
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  import tf_keras  # pylint: disable=g-import-not-at-top
  import safetrain  # pylint: disable=g-import-not-at-top

  rng = np.random.RandomState(0)
  x_all = rng.rand(BATCH, 3).astype(np.float32)
  y_all = rng.rand(BATCH, 2).astype(np.float32)

  def replica_loss(construction, model, x, y):
    per_example = tf.reduce_mean(tf.square(model(x) - y), axis=1)
    data = tf.nn.compute_average_loss(per_example, global_batch_size=BATCH)
    if construction == "scaled":
      return data + tf.nn.scale_regularization_loss(tf.add_n(model.losses))
    if construction == "total_loss_from":
      return safetrain.total_loss_from(data, model=model)
    if construction == "unscaled":
      return data + tf.add_n(model.losses)
    return data

  def run(keras, construction, devices, on_missing):
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
      init = keras.initializers.GlorotUniform(seed=1)
      model = keras.Sequential([
          keras.layers.Dense(4, activation="tanh", kernel_initializer=init,
                             kernel_regularizer=keras.regularizers.L2(
                                 WEIGHT_DECAY), input_shape=(3,)),
          keras.layers.Dense(2, kernel_initializer=init)])
      optimizer = keras.optimizers.SGD(LEARNING_RATE)
    dataset = tf.data.Dataset.from_tensor_slices((x_all, y_all)).batch(BATCH)
    x, y = next(iter(strategy.experimental_distribute_dataset(dataset)))

    def replica_step(x, y):
      with safetrain.GradientTape(on_missing=on_missing) as tape:
        loss = replica_loss(construction, model, x, y)
      variables = model.trainable_variables
      grads = tape.gradient(loss, variables)
      optimizer.apply_gradients(zip(grads, variables))

    record = {}
    try:
      tf.function(lambda x, y: strategy.run(replica_step, args=(x, y)))(x, y)
      record["result"] = "ok"
    except safetrain.Error as error:
      record["result"] = type(error).__name__
      record["message"] = str(error)
      record["rule"] = error.report.rule
      record["coefficients"] = [t.coefficient for t in error.report.terms]
    record["weights"] = [np.asarray(v.numpy()).tolist()
                         for v in model.trainable_variables]
    return record

  results = {"devices": [d.name for d in tf.config.list_logical_devices("CPU")]}
  for name, keras in (("tf.keras", tf.keras), ("tf_keras", tf_keras)):
    for construction in CONSTRUCTIONS:
      for replicas in (1, 2):
        devices = ["/cpu:0", "/cpu:1"][:replicas]
        key = f"{name}/{construction}/{replicas}"
        results[key] = run(keras, construction, devices, "raise")
        if results[key]["result"] != "ok":  # What it would have trained.
          results[key + "/warn"] = run(keras, construction, devices, "warn")
  with open(out_path, "w") as f:
    json.dump(results, f)


def _close(a, b):
  """Whether two runs' weights agree; both must have the same, nonzero count."""
  if not len(a) == len(b) > 0:
    raise AssertionError(f"weights to compare: {len(a)} and {len(b)}")
  return all(np.allclose(x, y, rtol=1e-5, atol=1e-6) for x, y in zip(a, b))


class MirroredTF2Test(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    with tempfile.TemporaryDirectory() as directory:
      out = os.path.join(directory, "results.json")
      env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
      root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
      env["PYTHONPATH"] = os.pathsep.join(
          [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                    if p])
      completed = subprocess.run(
          [sys.executable, os.path.abspath(__file__), "--child", out],
          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, env=env,
          check=False)
      if completed.returncode != 0:
        raise AssertionError("the child failed:\n" + completed.stderr[-5000:])
      with open(out) as f:
        cls.results = json.load(f)

  def test_two_logical_devices(self):
    self.assertLen(self.results["devices"], 2)

  def test_scaled_two_replicas_update_as_one(self):
    for keras in ("tf.keras", "tf_keras"):
      for construction in ("scaled", "total_loss_from"):
        one = self.results[f"{keras}/{construction}/1"]
        two = self.results[f"{keras}/{construction}/2"]
        self.assertEqual((one["result"], two["result"]), ("ok", "ok"),
                         two.get("message"))
        self.assertTrue(_close(one["weights"], two["weights"]),
                        f"{keras}/{construction}")

  def test_unscaled_raises_and_would_decay_n_times(self):
    for keras in ("tf.keras", "tf_keras"):
      two = self.results[f"{keras}/unscaled/2"]
      self.assertEqual(two["result"], "DoubleCountedRegularizationError")
      self.assertRegex(two["message"], r"counted x1 \(expected x0.5\)")
      self.assertRegex(two["rule"], r"replica rule: 2 replicas.*x1/2.*"
                       r"scale_regularization_loss")
      self.assertIn(two["rule"], two["message"])
      self.assertEqual(two["coefficients"], [1.0])
      # On one replica the same loss is right; on two it trains otherwise.
      self.assertEqual(self.results[f"{keras}/unscaled/1"]["result"], "ok")
      self.assertFalse(_close(self.results[f"{keras}/unscaled/2/warn"]
                              ["weights"],
                              self.results[f"{keras}/scaled/1"]["weights"]))

  def test_left_out_raises(self):
    for keras in ("tf.keras", "tf_keras"):
      for replicas in (1, 2):
        record = self.results[f"{keras}/left_out/{replicas}"]
        self.assertEqual(record["result"], "MissingRegularizationError")
        self.assertRegex(record["message"], r"leaves out 1 of 1")
      self.assertRegex(self.results[f"{keras}/left_out/2"]["rule"],
                       r"replica rule: 2 replicas")
      self.assertFalse(_close(
          self.results[f"{keras}/left_out/2/warn"]["weights"],
          self.results[f"{keras}/scaled/2"]["weights"]))


if __name__ == "__main__":
  if len(sys.argv) == 3 and sys.argv[1] == "--child":
    _child(sys.argv[2])
  else:
    absltest.main()
