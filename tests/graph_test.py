"""The gradient rules the graph walk relies on, checked against TensorFlow."""

import inspect

from absl.testing import absltest
from absl.testing import parameterized
import tensorflow as tf

from safetrain.graph import _graph

_FLOAT_OPS = {
    "Ceil": tf.math.ceil,
    "Floor": tf.math.floor,
    "FloorDiv": lambda x: tf.math.floordiv(x, 2.0),
    "Rint": tf.math.rint,
    "Round": tf.math.round,
    "TruncateDiv": lambda x: tf.truncatediv(x, 2.0),
}
# One op of every type in NONE_GRADIENT_OPS, built from a float vector.
_TABLE_OPS = {
    **_FLOAT_OPS,
    "ArgMax": lambda x: tf.math.argmax(x, 0),
    "ArgMin": lambda x: tf.math.argmin(x, 0),
    "LoopCond": lambda x: tf.raw_ops.LoopCond(input=tf.reduce_all(x > 0.0)),
}
# Differentiable ops, the control: the same check must find a gradient.
_DIFFERENTIABLE_OPS = {
    "Identity": tf.identity,
    "Mul": lambda x: x * 3.0,
    "Sin": tf.math.sin,
}


def _registered_gradients(op):
  """What the gradient function registered for ``op``'s type returns."""
  function = _graph._GRADIENT_REGISTRY.lookup(op.type)  # pylint: disable=protected-access
  # LoopCond's takes the op alone; the others, the op and output gradients.
  arity = len(inspect.signature(function).parameters) - 1
  out_grads = [tf.ones_like(o) for o in op.outputs][:arity]
  result = function(op, *out_grads)
  return list(result) if isinstance(result, (list, tuple)) else [result]


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

  def test_every_table_entry_has_a_gradient_that_gives_none(self):
    # The table lists ops whose *registered* gradient returns None for every
    # input: build one op of each type and call that gradient.
    self.assertEqual(set(_TABLE_OPS), set(_graph.NONE_GRADIENT_OPS))
    with tf.Graph().as_default():
      x = tf.compat.v1.placeholder(tf.float32, [3])
      for op_type, build in sorted(_TABLE_OPS.items()):
        op = build(x).op
        self.assertEqual(op.type, op_type)
        self.assertEqual(_registered_gradients(op), [None] * len(op.inputs),
                         op_type)
        self.assertFalse(_graph.op_is_differentiable(op), op_type)
        self.assertNotIn(_graph.key(x),
                         _graph.Walk(op.outputs, differentiable=True),
                         op_type)

  @parameterized.named_parameters((name, name) for name in _DIFFERENTIABLE_OPS)
  def test_a_differentiable_op_passes_the_same_checks(self, op_type):
    with tf.Graph().as_default():
      x = tf.compat.v1.placeholder(tf.float32, [3])
      y = _DIFFERENTIABLE_OPS[op_type](x)
      self.assertEqual(y.op.type, op_type)
      self.assertIsNotNone(_registered_gradients(y.op)[0])
      self.assertIsNotNone(tf.compat.v1.gradients(tf.reduce_sum(y), x)[0])
      self.assertTrue(_graph.op_is_differentiable(y.op))
      self.assertIn(_graph.key(x), _graph.Walk([y], differentiable=True))

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


class FunctionCallTest(absltest.TestCase):
  """A tf.function called in a graph: its body decides, per output."""

  def _call(self):
    x = tf.compat.v1.placeholder(tf.float32, [], name="x")
    y = tf.compat.v1.placeholder(tf.float32, [], name="y")

    @tf.function
    def frozen(value):
      return tf.stop_gradient(value)

    @tf.function
    def pair(a, b):
      return a + frozen(b), b * 2.0
    return x, y, pair(x, y)

  def test_each_output_reaches_the_inputs_its_gradient_reaches(self):
    with tf.Graph().as_default() as graph:
      x, y, (first, second) = self._call()
      version = graph.version
      self.assertEqual(_graph.call_gradient_inputs(first.op),
                       (frozenset({0}), frozenset({1})))
      self.assertEqual(graph.version, version)  # Read, never changed.
      walk = _graph.Walk([first], differentiable=True)
      self.assertIn(_graph.key(x), walk)
      self.assertNotIn(_graph.key(y), walk)  # A stop-gradient in the body.
      self.assertIn(_graph.key(y), _graph.Walk([second], differentiable=True))
      self.assertIn(_graph.key(y), _graph.Walk([first], differentiable=False))
      # As tf.gradients has it: y's gradient through the first output is 0.
      grad_x, grad_y = tf.gradients(first, [x, y])
      with tf.compat.v1.Session() as session:
        self.assertEqual(session.run([grad_x, grad_y], {x: 1.0, y: 1.0}),
                         [1.0, 0.0])

  def test_a_body_that_cannot_be_read_counts_every_float_input(self):
    with tf.Graph().as_default() as graph:
      x, y, (first, _) = self._call()
      name = first.op.get_attr("f").name
      real = graph._get_function  # pylint: disable=protected-access
      graph._get_function = lambda n: None if n == name else real(n)  # pylint: disable=protected-access
      self.assertIsNone(_graph.call_gradient_inputs(first.op))
      walk = _graph.Walk([first], differentiable=True)
      self.assertIn(_graph.key(x), walk)
      self.assertIn(_graph.key(y), walk)


class CopiesTest(absltest.TestCase):
  """``copies``: the other tensors computing what a term does, the same way."""

  def _names(self, master, memo=None):
    return sorted(k[0].name for k in _graph.copies(master, memo))

  def test_finds_rebuilt_terms_and_nothing_else(self):
    with tf.Graph().as_default():
      w = tf.compat.v1.get_variable("w", [3], use_resource=True)
      x = tf.ones([3])

      def term(scale, name):
        return tf.multiply(scale, tf.nn.l2_loss(w), name=name)

      master = term(1e-4, "master")
      term(1e-4, "copy")  # What converting a lazy regularizer builds again.
      term(5e-4, "stronger")  # Another constant: another term.
      tf.multiply(1e-4, tf.nn.l2_loss(w * 2.0), name="of_a_product")
      tf.multiply(1e-4, tf.reduce_sum(x * w), name="layer")  # Not a norm.
      self.assertEqual(self._names(master), ["copy"])

  def test_a_copy_that_shares_the_masters_read_is_found(self):
    # Every op between the variable and a copy is of a type the master has,
    # shared ops included: the search enters nothing else.
    with tf.Graph().as_default():
      w = tf.compat.v1.get_variable("w", [3], use_resource=False)
      read = tf.cast(tf.identity(w), tf.float64)
      master = tf.multiply(tf.constant(1e-4, tf.float64),
                           tf.nn.l2_loss(read), name="master")
      tf.multiply(tf.constant(1e-4, tf.float64), tf.nn.l2_loss(read),
                  name="sharing")
      tf.multiply(tf.constant(1e-4, tf.float64),
                  tf.nn.l2_loss(tf.cast(tf.identity(w), tf.float64)),
                  name="own_read")
      truncating = tf.raw_ops.Cast(x=tf.identity(w), DstT=tf.float64,
                                   Truncate=True)  # Differs in an attr only.
      tf.multiply(tf.constant(1e-4, tf.float64), tf.nn.l2_loss(truncating),
                  name="other_cast")
      self.assertEqual(self._names(master), ["own_read", "sharing"])

  def test_an_attribute_read_from_dtypes_still_tells_ops_apart(self):
    # Bitcast's attributes are its input's and its output's dtypes: the
    # comparison reads dtypes instead of the NodeDef, and must still see
    # an output dtype that differs.
    with tf.Graph().as_default():
      x = tf.compat.v1.placeholder(tf.float32, [3])
      self.assertTrue(_graph.same_computation(tf.bitcast(x, tf.int32),
                                              tf.bitcast(x, tf.int32)))
      self.assertFalse(_graph.same_computation(tf.bitcast(x, tf.uint32),
                                               tf.bitcast(x, tf.int32)))

  def test_a_memo_keeps_the_whole_answer(self):
    with tf.Graph().as_default():
      w = tf.compat.v1.get_variable("w", [3], use_resource=True)
      master = tf.multiply(1e-4, tf.nn.l2_loss(w), name="master")
      copy = tf.multiply(1e-4, tf.nn.l2_loss(w), name="copy")
      memo = _graph.Memo()
      self.assertEqual(
          _graph.copies(master, memo, within=lambda k: False), [])
      # A narrower question first does not narrow the kept answer.
      self.assertEqual(_graph.copies(master, memo),
                       [_graph.key(copy)])


if __name__ == "__main__":
  absltest.main()
