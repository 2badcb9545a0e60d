"""tf_slim 1.1.0 on current TensorFlow: every path the compat module fixes.

Each test runs the slim path for real (a session step, a decoded record),
not only builds it. ``BrokenWithoutSafetrainTest`` shows, in a fresh process
that never imports safetrain, that these same paths fail on this TensorFlow.
"""

import subprocess
import sys
import textwrap

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import safetrain  # pylint: disable=unused-import
import tf_slim as slim
from tf_slim.data import tfexample_decoder

import helpers


def _run(fetches, feed_dict=None):
  with tf.compat.v1.Session() as sess:
    sess.run([tf.compat.v1.global_variables_initializer(),
              tf.compat.v1.local_variables_initializer()])
    return sess.run(fetches, feed_dict)


def _images():
  return tf.constant(np.random.RandomState(0).rand(4, 6, 6, 3), tf.float32)


class BatchNormTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("default", {}),
      ("not_fused", {"fused": False}),
      ("updates_in_place", {"updates_collections": None}),
      ("updates_in_place_inference", {"updates_collections": None,
                                      "is_training": False}),
  )
  def test_batch_norm(self, kwargs):
    with tf.Graph().as_default():
      out = slim.batch_norm(_images(), **kwargs)
      value = _run(out)
    self.assertEqual(value.shape, (4, 6, 6, 3))
    self.assertTrue(np.all(np.isfinite(value)))


def _loss():
  return safetrain.total_loss_from(helpers.cross_entropy())


_LEARNING_RATE = 0.1
_CLIP = 0.01  # Below every gradient's norm here, so clipping must act.


def _gradients_and_update(loss, train_op):
  """(gradient, update) of each trainable variable for one step."""
  variables = tf.compat.v1.trainable_variables()
  gradients = tf.gradients(loss, variables)
  with tf.compat.v1.Session() as sess:
    sess.run(tf.compat.v1.global_variables_initializer())
    before, values = sess.run([variables, gradients])
    sess.run(train_op)
    after = sess.run(variables)
  return [(g, a - b) for g, b, a in zip(values, before, after, strict=True)]


def _clipped(gradient):
  norm = np.linalg.norm(gradient)
  return gradient * min(1.0, _CLIP / norm)


# How each option must change the plain SGD update -lr * g.
_EFFECTS = {
    "clip": _clipped,
    "multiply": lambda g: 0.5 * g,
    "summarize": lambda g: g,
}


class CreateTrainOpTest(parameterized.TestCase):

  def _assert_effect(self, loss, train_op, what):
    pairs = _gradients_and_update(loss, train_op)
    if what == "clip":  # Otherwise the test could not tell clipping apart.
      self.assertTrue(all(np.linalg.norm(g) > _CLIP for g, _ in pairs))
    for gradient, update in pairs:
      np.testing.assert_allclose(
          update, -_LEARNING_RATE * _EFFECTS[what](gradient), rtol=1e-4,
          atol=1e-7)
    if what == "summarize":
      names = [s.name for s in tf.compat.v1.get_collection(
          tf.compat.v1.GraphKeys.SUMMARIES)]
      self.assertTrue(any("gradient" in n for n in names), names)

  @parameterized.named_parameters(
      ("clip_gradient_norm", "clip"),
      ("gradient_multipliers", "multiply"),
      ("summarize_gradients", "summarize"),
  )
  def test_learning_create_train_op(self, what):
    with tf.Graph().as_default():
      loss = _loss()
      kwargs = {
          "clip": {"clip_gradient_norm": _CLIP},
          "multiply": {"gradient_multipliers": {
              v: 0.5 for v in tf.compat.v1.trainable_variables()}},
          "summarize": {"summarize_gradients": True},
      }[what]
      train_op = slim.learning.create_train_op(
          loss, tf.compat.v1.train.GradientDescentOptimizer(_LEARNING_RATE),
          global_step=None, **kwargs)
      self._assert_effect(loss, train_op, what)

  @parameterized.named_parameters(
      ("clip", "clip"), ("multiply", "multiply"), ("summarize", "summarize"))
  def test_training_create_train_op(self, what):
    with tf.Graph().as_default():
      loss = _loss()
      kwargs = {}
      if what == "clip":
        kwargs["transform_grads_fn"] = lambda grads: (
            slim.training.clip_gradient_norms(grads, _CLIP))
      elif what == "multiply":
        kwargs["transform_grads_fn"] = lambda grads: (
            slim.training.multiply_gradients(
                grads, {v: 0.5 for v in tf.compat.v1.trainable_variables()}))
      else:
        kwargs["summarize_gradients"] = True
      train_op = slim.training.create_train_op(
          loss, tf.compat.v1.train.GradientDescentOptimizer(_LEARNING_RATE),
          global_step=None, **kwargs)
      self._assert_effect(loss, train_op, what)

  def test_clip_gradient_norms(self):
    with tf.Graph().as_default():
      variable = tf.Variable([1.0, 1.0])
      gradient = tf.constant([3.0, 4.0])
      sparse = tf.IndexedSlices(tf.constant([[3.0, 4.0]]), tf.constant([0]))
      clipped = slim.training.clip_gradient_norms(
          [(gradient, variable), (sparse, variable)], 1.0)
      dense, sliced = _run([clipped[0][0], clipped[1][0].values])
    np.testing.assert_allclose(dense, [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(sliced, [[0.6, 0.8]], rtol=1e-6)


class VariablesTest(absltest.TestCase):

  def test_local_and_global_variable(self):
    with tf.Graph().as_default():
      local = slim.local_variable(3.0, name="loc")
      global_ = slim.global_variable(4.0, name="glob")
      self.assertIn(local, tf.compat.v1.local_variables())
      self.assertIn(global_, tf.compat.v1.global_variables())
      self.assertEqual(_run([local, global_]), [3.0, 4.0])


class StreamingMetricsTest(absltest.TestCase):

  def _labels_and_predictions(self):
    return (tf.constant([0, 0, 1, 1]),
            tf.constant([0.1, 0.6, 0.4, 0.9]))

  def test_streaming_dynamic_auc(self):
    with tf.Graph().as_default():
      labels, predictions = self._labels_and_predictions()
      auc, update = slim.metrics.streaming_dynamic_auc(labels, predictions)
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.local_variables_initializer())
        sess.run(update)
        self.assertAlmostEqual(sess.run(auc), 0.75)

  def test_streaming_concat(self):
    with tf.Graph().as_default():
      value, update = slim.metrics.streaming_concat(tf.constant([1, 2]))
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.local_variables_initializer())
        sess.run(update)
        sess.run(update)
        np.testing.assert_array_equal(sess.run(value), [1, 2, 1, 2])

  def test_streaming_curve_points(self):
    with tf.Graph().as_default():
      labels, predictions = self._labels_and_predictions()
      points, update = slim.metrics.streaming_curve_points(
          labels, predictions, num_thresholds=5)
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.local_variables_initializer())
        sess.run(update)
        value = sess.run(points)
    self.assertEqual(value.shape, (5, 2))

  def test_recall_at_precision(self):
    with tf.Graph().as_default():
      labels, predictions = self._labels_and_predictions()
      recall, update = slim.metrics.recall_at_precision(
          labels, predictions, precision=0.5)
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.local_variables_initializer())
        sess.run(update)
        self.assertAlmostEqual(sess.run(recall), 1.0)


def _example(**features):
  def feature(value):
    if isinstance(value, bytes):
      return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
  return tf.train.Example(features=tf.train.Features(
      feature={k.replace("__", "/"): feature(v) for k, v in features.items()}
  )).SerializeToString()


class TfExampleDecoderTest(absltest.TestCase):

  def test_image_decodes_png(self):
    pixels = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    png = tf.io.encode_png(pixels).numpy()
    with tf.Graph().as_default():
      keys = {
          "image/encoded": tf.io.FixedLenFeature((), tf.string, ""),
          "image/format": tf.io.FixedLenFeature((), tf.string, "png"),
      }
      decoder = tfexample_decoder.TFExampleDecoder(
          keys, {"image": tfexample_decoder.Image(shape=(2, 2, 3))})
      image, = decoder.decode(
          tf.constant(_example(image__encoded=png, image__format=b"png")),
          ["image"])
      np.testing.assert_array_equal(_run(image), pixels)

  def test_backup_handler_falls_back(self):
    with tf.Graph().as_default():
      # A missing VarLen feature decodes to no elements: then the backup.
      keys = {"a": tf.io.VarLenFeature(tf.int64),
              "b": tf.io.VarLenFeature(tf.int64)}
      handler = tfexample_decoder.BackupHandler(
          tfexample_decoder.Tensor("a"), tfexample_decoder.Tensor("b"))
      decoder = tfexample_decoder.TFExampleDecoder(keys, {"x": handler})
      only_b, = decoder.decode(tf.constant(_example(b=7)), ["x"])
      both, = decoder.decode(tf.constant(_example(a=3, b=7)), ["x"])
      got_b, got_a = _run([only_b, both])
    np.testing.assert_array_equal(got_b, [7])
    np.testing.assert_array_equal(got_a, [3])


_BROKEN = textwrap.dedent("""
    import tensorflow as tf
    import tf_slim as slim
    failures = []
    for name, build in [
        ("batch_norm", lambda: slim.batch_norm(tf.ones([2, 3]))),
        ("local_variable", lambda: slim.local_variable(1.0)),
        ("streaming_concat",
         lambda: slim.metrics.streaming_concat(tf.constant([1]))),
    ]:
      with tf.Graph().as_default():
        try:
          build()
        except (AttributeError, ImportError) as e:
          failures.append(name)
    print(",".join(failures))
""")


class BrokenWithoutSafetrainTest(absltest.TestCase):

  def test_tf_slim_alone_fails_on_this_tensorflow(self):
    result = subprocess.run([sys.executable, "-c", _BROKEN], check=True,
                            capture_output=True, text=True, timeout=300)
    self.assertEqual(result.stdout.strip().splitlines()[-1],
                     "batch_norm,local_variable,streaming_concat")


if __name__ == "__main__":
  absltest.main()
