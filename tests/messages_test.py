"""What the policy's messages tell a user to do, and where a warning points.

Each message ends with the ways out that work where it was raised: the fix
as code, ``on_missing="add"`` when adding the left-out terms is all it takes
(and the entry point can add), and ``on_missing="warn"`` to keep the graph
as it is. A warning, which the user asked for, does not repeat the last one,
and it names the user's line, not a line inside safetrain or TensorFlow.
"""

import warnings

from absl.testing import absltest
import tensorflow as tf
import tf_keras
import tf_slim

import safetrain

import helpers

ADD = 'To add them without changing the loss, pass on_missing="add".'
WARN = 'To leave them out on purpose, pass on_missing="warn".'


def _sgd():
  return tf.compat.v1.train.GradientDescentOptimizer(0.1)


def _message(error_type, function, *args, **kwargs) -> str:
  try:
    function(*args, **kwargs)
  except error_type as e:
    return str(e)
  raise AssertionError(f"{error_type.__name__} not raised")


class ErrorMessageTest(absltest.TestCase):

  def test_left_out_terms_offer_add_and_warn(self):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      text = _message(safetrain.MissingRegularizationError,
                      safetrain.create_train_op_safe, loss, _sgd())
    self.assertIn("Fix:", text)
    self.assertTrue(text.endswith(ADD + "\n" + WARN), text)

  def test_add_is_offered_only_where_it_fixes_the_update(self):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      reg = tf.add_n(helpers.regularization())
      doubled = _message(safetrain.DoubleCountedRegularizationError,
                         safetrain.create_train_op_safe, loss + 2.0 * reg,
                         _sgd())
      blocked = _message(safetrain.MissingRegularizationError,
                         safetrain.create_train_op_safe,
                         loss + tf.stop_gradient(reg), _sgd())
    self.assertIn('pass on_missing="warn"', doubled)
    self.assertIn('pass on_missing="warn"', blocked)
    self.assertNotIn("on_missing=\"add\"", doubled)
    self.assertNotIn("on_missing=\"add\"", blocked)

  def test_clones_are_named_only_where_there_are_clones(self):
    # A single-device loss that counts its terms twice or half: the fix is
    # total_loss_from, with no word of clones. The same counts over
    # model_deploy's clones name sum_clone_losses.
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      reg = tf.add_n(helpers.regularization())
      doubled = _message(safetrain.DoubleCountedRegularizationError,
                         safetrain.create_train_op_safe, loss + 2.0 * reg,
                         _sgd())
      weak = _message(safetrain.TooWeakRegularizationError,
                      safetrain.create_train_op_safe, loss + 0.5 * reg,
                      _sgd())
    for text in (doubled, weak):
      self.assertIn("safetrain.total_loss_from(data_loss)", text)
      self.assertNotIn("clone", text)
    with tf.Graph().as_default():
      with tf.name_scope("clone_0"):  # model_deploy's first clone.
        loss = helpers.cross_entropy()
        loss = tf.add(loss, 0.5 * tf.add_n(helpers.regularization()),
                      name="clone_loss")
      report = safetrain.check_regularization(loss, expected_coefficient=1.0)
    self.assertIn("sum_clone_losses", report.undercounted_message("check"))

  def test_ledger_which_builds_nothing_does_not_offer_add(self):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      train_op = tf_slim.learning.create_train_op(loss, _sgd())
      text = _message(safetrain.MissingRegularizationError, safetrain.ledger,
                      train_op, on_missing="raise")
    self.assertIn('pass on_missing="warn"', text)
    self.assertNotIn("on_missing=\"add\"", text)

  def test_the_guard_block_names_itself(self):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      with safetrain.guard_optimizers():
        text = _message(safetrain.MissingRegularizationError,
                        tf_slim.learning.create_train_op, loss, _sgd())
    self.assertIn('pass on_missing="add" to guard_optimizers.', text)
    self.assertIn('pass on_missing="warn" to guard_optimizers.', text)


class WarningTest(absltest.TestCase):

  def assert_warned_here(self, function, *args, **kwargs) -> str:
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      function(*args, **kwargs)
    ours = [w for w in caught
            if issubclass(w.category, safetrain.MissingRegularizationWarning)]
    self.assertLen(ours, 1)
    # The user's line: in this file, not in safetrain, tf_slim or TensorFlow.
    self.assertEqual(ours[0].filename, __file__)
    return str(ours[0].message)

  def test_a_warning_does_not_offer_the_mode_in_use(self):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      text = self.assert_warned_here(safetrain.create_train_op_safe, loss,
                                     _sgd(), on_missing="warn")
    self.assertIn("leaves out 2 of 2", text)
    self.assertNotIn("on_missing=\"warn\"", text)
    self.assertTrue(text.endswith(ADD), text)

  def test_through_tf_slim_under_the_guard(self):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      with safetrain.guard_optimizers(on_missing="warn"):
        text = self.assert_warned_here(tf_slim.learning.create_train_op, loss,
                                       _sgd())
    self.assertIn("GradientDescentOptimizer.apply_gradients", text)

  def test_through_the_drop_in(self):
    with tf.Graph().as_default():
      loss = helpers.cross_entropy()
      self.assert_warned_here(safetrain.slim.learning.create_train_op, loss,
                              _sgd(), on_missing="warn")

  def _model(self):
    model = tf_keras.Sequential([tf_keras.layers.Dense(
        2, kernel_regularizer=tf_keras.regularizers.L2(0.1),
        input_shape=(3,))])
    model(tf.zeros((1, 3)))
    return model

  def test_an_eager_tape(self):
    model = self._model()

    def step():
      with safetrain.GradientTape(on_missing="warn") as tape:
        loss = tf.reduce_mean(tf.square(model(tf.ones((4, 3)))))
      return tape.gradient(loss, model.trainable_variables)
    self.assert_warned_here(step)

  def test_a_traced_step(self):
    model = self._model()

    @tf.function
    def step():
      with safetrain.GradientTape(on_missing="warn") as tape:
        loss = tf.reduce_mean(tf.square(model(tf.ones((4, 3)))))
      return tape.gradient(loss, model.trainable_variables)
    self.assert_warned_here(step)


if __name__ == "__main__":
  absltest.main()
