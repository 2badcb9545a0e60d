"""Shared test helpers: graphs with slim regularizers, and message matching."""

import re
import shutil
import tempfile
from typing import Optional, Sequence, Type

from absl import flags
from absl.testing import absltest
from absl.testing import flagsaver
import numpy as np
import tensorflow as tf

import safetrain.slim as slim

NUM_CLASSES = 3


def images_and_labels(batch: int = 8, size: int = 8, seed: int = 0):
  rng = np.random.RandomState(seed)
  images = tf.constant(rng.rand(batch, size, size, 1).astype(np.float32))
  labels = tf.constant(np.arange(batch) % NUM_CLASSES)
  return images, labels


def small_cnn(images, weight_decay: float = 0.01, *, use_resource=None):
  """A two-layer slim CNN whose weights carry slim L2 regularizers."""
  with slim.arg_scope([slim.conv2d, slim.fully_connected],
                      weights_regularizer=slim.l2_regularizer(weight_decay)):
    with tf.compat.v1.variable_scope("", use_resource=use_resource):
      net = slim.conv2d(images, 4, [3, 3], scope="conv1")
      net = slim.flatten(net)
      return slim.fully_connected(net, NUM_CLASSES, activation_fn=None,
                                  scope="logits")


def cross_entropy(weight_decay: float = 0.01, **kwargs):
  """The seed's loss: sparse softmax cross entropy of a regularized CNN."""
  images, labels = images_and_labels()
  logits = small_cnn(images, weight_decay, **kwargs)
  return tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)


def regularization() -> Sequence[tf.Tensor]:
  return tf.compat.v1.get_collection(
      tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES)


def assert_error(testcase, error_type: Type[BaseException], pattern: str,
                 function, *args, **kwargs) -> BaseException:
  """Calls ``function``; it must raise ``error_type`` matching ``pattern``.

  Every safetrain message starts with the "[safetrain] " prefix; the pattern
  is searched in the rest, across lines.
  """
  with testcase.assertRaises(error_type) as context:
    function(*args, **kwargs)
  message = str(context.exception)
  testcase.assertTrue(message.startswith("[safetrain] "), message)
  testcase.assertRegex(message, re.compile(pattern, re.S))
  return context.exception


def raised_verdicts(function) -> tuple:
  """The verdicts a call raises (every RegularizationError says them)."""
  import safetrain  # pylint: disable=g-import-not-at-top
  try:
    function()
  except safetrain.RegularizationError as e:
    return tuple(e.verdicts)
  return ()


def session_config() -> tf.compat.v1.ConfigProto:
  """Single-threaded, so repeated runs give bit-identical results."""
  return tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1,
                                  inter_op_parallelism_threads=1)


def count_ops(graph: Optional[tf.Graph] = None) -> int:
  graph = graph or tf.compat.v1.get_default_graph()
  return len(graph.get_operations())


def make_tempdir(test: absltest.TestCase, prefix: str = "safetrain_") -> str:
  """A fresh directory, removed after the test (works unparsed, in pytest)."""
  path = tempfile.mkdtemp(prefix=prefix)
  test.addCleanup(shutil.rmtree, path, ignore_errors=True)
  return path


def parse_flags(test: absltest.TestCase, argv) -> None:
  """Parses argv into the global flags; the test's cleanup restores them."""
  saved = flagsaver.save_flag_values()
  was_parsed = flags.FLAGS.is_parsed()

  def restore():
    flags.FLAGS.unparse_flags()
    flagsaver.restore_flag_values(saved)
    if was_parsed:
      flags.FLAGS.mark_as_parsed()

  test.addCleanup(restore)
  flags.FLAGS.unparse_flags()
  flags.FLAGS(argv)
