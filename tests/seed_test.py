"""The seed story as behaviour: train a few steps and measure the weights.

A slim CNN under ``arg_scope(weights_regularizer=l2(wd))`` is trained from the
same start for several weight decays. Plain tf_slim, given the cross entropy
(the seed's code), trains identically whatever the weight decay: the bug.
safetrain refuses that train op, and with ``total_loss_from`` the weights
shrink more as weight decay grows: the fix.
"""

from absl.testing import absltest
import numpy as np
import tensorflow as tf
import tf_slim

import safetrain
import safetrain.slim as slim

import helpers

STEPS = 25
WEIGHT_DECAYS = (0.0, 0.01, 0.1)


def _train(weight_decay: float, mode: str) -> np.ndarray:
  """Trains from a fixed start; returns the regularized weights, flattened."""
  with tf.Graph().as_default():
    tf.compat.v1.set_random_seed(1234)
    loss = helpers.cross_entropy(weight_decay)
    optimizer = tf.compat.v1.train.GradientDescentOptimizer(0.2)
    if mode == "plain":  # The seed: tf_slim given the cross entropy only.
      train_op = tf_slim.learning.create_train_op(loss, optimizer)
    elif mode == "safe_unchanged":
      train_op = slim.learning.create_train_op(loss, optimizer)
    else:
      train_op = slim.learning.create_train_op(
          safetrain.total_loss_from(loss), optimizer)
    weights = [v for v in tf.compat.v1.trainable_variables()
               if v.op.name.endswith("weights")]
    with tf.compat.v1.Session(config=helpers.session_config()) as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      for _ in range(STEPS):
        sess.run(train_op)
      values = sess.run(weights)
  return np.concatenate([v.ravel() for v in values])


class SeedStoryTest(absltest.TestCase):

  def test_plain_slim_ignores_weight_decay(self):
    runs = [_train(wd, "plain") for wd in WEIGHT_DECAYS]
    for run in runs[1:]:
      np.testing.assert_array_equal(run, runs[0])

  def test_safetrain_refuses_the_seed_train_op(self):
    with self.assertRaisesRegex(safetrain.MissingRegularizationError,
                                "leaves out 2 of 2 regularization losses"):
      _train(0.01, "safe_unchanged")

  def test_weights_shrink_as_weight_decay_rises(self):
    norms = [np.linalg.norm(_train(wd, "safe")) for wd in WEIGHT_DECAYS]
    self.assertGreater(norms[0], norms[1])
    self.assertGreater(norms[1], norms[2])
    # And weight decay 0 trains exactly as plain slim does.
    np.testing.assert_allclose(_train(0.0, "safe"), _train(0.0, "plain"),
                               rtol=1e-6)


if __name__ == "__main__":
  absltest.main()
