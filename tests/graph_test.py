"""The gradient rules the graph walk relies on, checked against TensorFlow."""

from absl.testing import absltest
from absl.testing import parameterized
import tensorflow as tf

from safetrain import _graph

_FLOAT_OPS = {
    "Ceil": tf.math.ceil,
    "Floor": tf.math.floor,
    "FloorDiv": lambda x: tf.math.floordiv(x, 2.0),
    "Rint": tf.math.rint,
    "Round": tf.math.round,
}


class NoneGradientTableTest(parameterized.TestCase):

  @parameterized.named_parameters((name, name) for name in _FLOAT_OPS)
  def test_tf_gradients_gives_none(self, op_type):
    self.assertIn(op_type, _graph.NONE_GRADIENT_OPS)
    with tf.Graph().as_default():
      x = tf.compat.v1.placeholder(tf.float32, [3])
      y = _FLOAT_OPS[op_type](x)
      self.assertEqual(y.op.type, op_type)
      self.assertEqual(tf.compat.v1.gradients(tf.reduce_sum(y), x), [None])
      self.assertFalse(_graph.op_is_differentiable(y.op))

  def test_every_table_entry_has_a_registered_gradient(self):
    # The table lists ops whose *registered* gradient returns None; if
    # TensorFlow dropped a registration, lookup raising is fine too, but the
    # name must be a real op type.
    for op_type in _graph.NONE_GRADIENT_OPS:
      self.assertIsNotNone(tf.raw_ops.__dict__.get(op_type), op_type)

  def test_identity_and_call_ops_are_differentiable(self):
    with tf.Graph().as_default():
      x = tf.compat.v1.placeholder(tf.float32, [])
      self.assertTrue(_graph.op_is_differentiable(tf.identity(x).op))
      self.assertFalse(_graph.op_is_differentiable(tf.stop_gradient(x).op))


class WalkTest(absltest.TestCase):

  def test_control_inputs_are_not_data(self):
    with tf.Graph().as_default():
      a = tf.constant(1.0)
      b = tf.constant(2.0)
      with tf.control_dependencies([b]):
        c = tf.identity(a)
      walk = _graph.Walk([c], differentiable=False)
      self.assertIn(_graph.key(a), walk)
      self.assertNotIn(_graph.key(b), walk)

  def test_integer_edges_carry_no_gradient(self):
    with tf.Graph().as_default():
      a = tf.compat.v1.placeholder(tf.float32, [])
      b = tf.cast(tf.cast(a, tf.int32), tf.float32)
      self.assertNotIn(_graph.key(a), _graph.Walk([b], differentiable=True))
      self.assertIn(_graph.key(a), _graph.Walk([b], differentiable=False))


if __name__ == "__main__":
  absltest.main()
