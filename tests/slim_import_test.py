"""``safetrain.slim`` imports like ``tf_slim``, module by module, name by name.

The cases are generated from tf_slim's own module tree (pkgutil), so a
module or name that tf_slim has and the drop-in misses fails here. Modules
named ``*_test`` (tf_slim's wheel ships its tests) are left out.
"""

import importlib
import inspect
import pkgutil
import warnings

from absl.testing import absltest
from absl.testing import parameterized
import tensorflow as tf
import tf_slim

import safetrain
import safetrain.slim as slim


def _tf_slim_modules():
  names = ["tf_slim"]
  for info in pkgutil.walk_packages(tf_slim.__path__, "tf_slim."):
    if not info.name.endswith("_test"):
      names.append(info.name)
  return sorted(names)


_MODULES = _tf_slim_modules()


def _ours(name):
  return "safetrain.slim" + name[len("tf_slim"):]


def _replaced():
  """tf_slim's functions that safetrain replaces, by identity."""
  learning = importlib.import_module("tf_slim.learning")
  training = importlib.import_module("tf_slim.training.training")
  loss_ops = importlib.import_module("tf_slim.losses.loss_ops")
  return {id(learning.create_train_op), id(learning.train),
          id(training.create_train_op), id(training.train),
          id(loss_ops.get_total_loss)}


class ModuleTreeTest(parameterized.TestCase):

  def test_the_tree_is_tf_slims(self):
    # The generated cases cover the tree: nets, training.evaluation, ...
    for name in ("tf_slim.nets.resnet_v1", "tf_slim.training.evaluation",
                 "tf_slim.data.tfexample_decoder", "tf_slim.ops.variables"):
      self.assertIn(name, _MODULES)
    self.assertGreater(len(_MODULES), 35)

  @parameterized.parameters(*_MODULES)
  def test_module_imports_with_every_name(self, name):
    theirs = importlib.import_module(name)
    ours = importlib.import_module(_ours(name))
    missing = [n for n in dir(theirs) if not n.startswith("__")
               and not hasattr(ours, n)]
    self.assertEqual(missing, [], f"{_ours(name)} lacks these names")
    replaced = _replaced()
    for attr in dir(theirs):
      value = getattr(ours, attr)
      self.assertNotIn(id(value), replaced,
                       f"{_ours(name)}.{attr} is tf_slim's, not safetrain's")

  @parameterized.parameters(*_MODULES)
  def test_module_is_reached_by_attribute(self, name):
    ours = importlib.import_module(_ours(name))
    reached = slim
    for part in name.split(".")[1:]:
      reached = getattr(reached, part)
    self.assertIs(reached, ours)


class ImportFormsTest(absltest.TestCase):
  """The forms the issue names, and the replaced functions however reached."""

  def test_issue_examples(self):
    import safetrain.slim.nets  # pylint: disable=g-import-not-at-top
    from safetrain.slim.nets import resnet_v1  # pylint: disable=g-import-not-at-top
    from safetrain.slim.training import evaluation  # pylint: disable=g-import-not-at-top
    self.assertIs(safetrain.slim.nets, importlib.import_module("tf_slim.nets"))
    self.assertTrue(callable(resnet_v1.resnet_v1_50))
    self.assertTrue(callable(evaluation.evaluate_once))

  def test_replaced_functions_by_dotted_import(self):
    # pylint: disable=g-import-not-at-top
    from safetrain.slim.learning import create_train_op as l_create
    from safetrain.slim.learning import train as l_train
    from safetrain.slim.losses import get_total_loss as total
    from safetrain.slim.losses.loss_ops import get_total_loss as ops_total
    from safetrain.slim.training import create_train_op as t_create
    from safetrain.slim.training import train as t_train
    from safetrain.slim.training.training import train as tt_train
    # pylint: enable=g-import-not-at-top
    for function in (l_create, l_train, total, ops_total, t_create, t_train,
                     tt_train):
      self.assertTrue(function.__module__.startswith("safetrain.slim"),
                      function)
    self.assertIs(slim.training.train, tt_train)
    self.assertIs(slim.losses.get_total_loss, ops_total)


def _signature_parameters(function):
  return [(p.name, p.kind, p.default)
          for p in inspect.signature(function).parameters.values()]


class SignatureTest(parameterized.TestCase):

  @parameterized.parameters(
      ("learning", "train"), ("learning", "create_train_op"),
      ("training.training", "train"), ("training.training", "create_train_op"),
      ("losses.loss_ops", "get_total_loss"))
  def test_same_parameters_plus_keyword_only_on_missing(self, module, name):
    theirs = getattr(importlib.import_module("tf_slim." + module), name)
    ours = getattr(importlib.import_module("safetrain.slim." + module), name)
    ours_params = _signature_parameters(ours)
    if name != "get_total_loss":
      self.assertEqual(ours_params[-1][:2],
                       ("on_missing", inspect.Parameter.KEYWORD_ONLY))
      ours_params = ours_params[:-1]
    self.assertEqual(ours_params, _signature_parameters(theirs))

  def test_a_misspelt_keyword_is_a_type_error(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(TypeError, "number_of_step"):
        slim.learning.train(tf.constant(1.0), None, number_of_step=1)  # pylint: disable=unexpected-keyword-arg


class DuplicateLossTest(absltest.TestCase):
  """A loss listed twice counts once, with a warning naming it."""

  def _graph_with_a_doubled_loss(self):
    loss = tf.constant(2.0, name="data_loss")
    tf.compat.v1.losses.add_loss(loss)
    tf.compat.v1.losses.add_loss(loss)

  def test_tf_slim_counts_it_twice(self):
    with tf.Graph().as_default():
      self._graph_with_a_doubled_loss()
      with tf.compat.v1.Session() as sess:
        self.assertEqual(sess.run(tf_slim.losses.get_total_loss()), 4.0)

  def test_safetrain_counts_it_once_and_warns_naming_it(self):
    for add_regularization in (True, False):
      with tf.Graph().as_default():
        self._graph_with_a_doubled_loss()
        with warnings.catch_warnings(record=True) as caught:
          warnings.simplefilter("always")
          total = slim.losses.get_total_loss(add_regularization)
        with tf.compat.v1.Session() as sess:
          self.assertEqual(sess.run(total), 2.0)
      messages = [str(w.message) for w in caught
                  if issubclass(w.category, slim.losses.DuplicateLossWarning)]
      self.assertLen(messages, 1)
      self.assertRegex(messages[0], r"^\[safetrain\] slim.losses."
                       r"get_total_loss: 'data_loss:0' is listed more than "
                       r"once in the losses collection; safetrain counts "
                       r"each loss once \(tf_slim would add it 2 times\)")

  def test_no_warning_without_duplicates(self):
    with tf.Graph().as_default():
      tf.compat.v1.losses.add_loss(tf.constant(2.0))
      with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slim.losses.get_total_loss()
      self.assertEmpty([w for w in caught if issubclass(
          w.category, slim.losses.DuplicateLossWarning)])


class EagerModeTest(absltest.TestCase):

  def test_eager_error_is_the_value_error_tf_slim_raises(self):
    # tf_slim's get_total_loss raises ValueError in eager mode; a script
    # catching it must keep working under safetrain.
    self.assertTrue(tf.executing_eagerly())
    with self.assertRaises(ValueError):
      tf_slim.losses.get_total_loss()
    with self.assertRaises(ValueError) as caught:
      slim.losses.get_total_loss()
    self.assertIsInstance(caught.exception, safetrain.Error)
    with self.assertRaises(ValueError):
      slim.learning.create_train_op(
          tf.constant(1.0), tf.compat.v1.train.GradientDescentOptimizer(0.1))


if __name__ == "__main__":
  absltest.main()
