"""``on_missing="add"`` says what it added, at warning level (shown by default).

The notice names how many terms, the loss they were left out of, and the
first terms. ``command_test`` shows it under ``safetrain run
--on_missing=add`` in a real process.
"""

from absl.testing import absltest
import tensorflow as tf

import helpers
import safetrain


def _sgd():
  return tf.compat.v1.train.GradientDescentOptimizer(0.1)


class AddNoticeTest(absltest.TestCase):

  def test_add_warns_with_count_loss_and_names(self):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      names = sorted(t.name for t in helpers.regularization())
      with self.assertLogs(logger="absl", level="WARNING") as logs:
        safetrain.create_train_op_safe(loss, _sgd(), on_missing="add")
    notice, = logs.output
    self.assertTrue(notice.startswith(
        "WARNING:absl:[safetrain] create_train_op_safe: added 2 "
        f"regularization losses that the loss '{loss.name}' left out "
        '(on_missing="add"): '), notice)
    for name in names:
      self.assertIn(repr(name), notice)

  def test_many_terms_name_the_first_three(self):
    with tf.Graph().as_default():
      x = tf.ones([2, 3])
      for i in range(5):
        weight = tf.compat.v1.get_variable(
            f"w{i}", [3, 3], regularizer=tf.keras.regularizers.L2(0.1))
        x = tf.matmul(x, weight)
      loss = tf.reduce_sum(x)
      with self.assertLogs(logger="absl", level="WARNING") as logs:
        safetrain.create_train_op_safe(loss, _sgd(), on_missing="add")
    notice, = logs.output
    self.assertIn("added 5 regularization losses", notice)
    self.assertTrue(notice.endswith(" and 2 more"), notice)
    self.assertEqual(notice.count("Regularizer"), 3)


if __name__ == "__main__":
  absltest.main()
