"""Tests for the examples' nets: MobileNetV2, LeNet and the factory.

Graph building dominates here, so each test builds one network and checks
what that network should show.
"""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import safetrain
import safetrain.slim as slim
from examples.nets import mobilenet_v2
from examples.nets import nets_factory


class MobilenetV2Test(parameterized.TestCase):

  def test_inference_on_small_inputs(self):
    with tf.Graph().as_default():
      images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3])
      with slim.arg_scope(mobilenet_v2.training_scope(is_training=False)):
        logits, end_points = mobilenet_v2.mobilenet(images, num_classes=10,
                                                    depth_multiplier=0.35)
      self.assertEqual(logits.shape.as_list(), [None, 10])
      # 17 inverted residual blocks, as published; 32x32 ends at 1x1.
      self.assertLen([k for k in end_points if k.startswith("expanded_conv")],
                     17)
      self.assertEqual(end_points["Conv_1"].shape.as_list()[1:], [1, 1, 1280])
      self.assertEqual(end_points["Conv"].shape[-1], 16)  # 32 * 0.35 -> 16.
      self.assertEqual(end_points["expanded_conv_16"].shape[-1], 112)
      # Batch norm in inference mode: no moving-average updates.
      self.assertEmpty(
          tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS))
      # The default weight decay, 0.00004, on the stem's kernel.
      kernel, = [v for v in tf.compat.v1.global_variables()
                 if v.op.name == "MobilenetV2/Conv/weights"]
      term, = [t for t in tf.compat.v1.losses.get_regularization_losses()
               if t.name.startswith("MobilenetV2/Conv/")]
      with tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        values, kernel_value, term_value = session.run(
            [logits, kernel, term],
            {images: np.random.RandomState(0).uniform(-1, 1, (2, 32, 32, 3))})
    self.assertEqual(values.shape, (2, 10))
    self.assertTrue(np.all(np.isfinite(values)))
    # slim.l2_regularizer: scale * sum(w ** 2) / 2.
    np.testing.assert_allclose(
        term_value, 0.00004 * np.sum(np.square(kernel_value)) / 2, rtol=1e-5)

  @parameterized.parameters(
      (32, 1.0, 32), (32, 0.35, 16), (320, 0.35, 112), (16, 0.35, 8),
      (24, 0.5, 16), (1280, 1.4, 1792))
  def test_channel_rounding(self, channels, multiplier, expected):
    # pylint: disable-next=protected-access
    make_divisible = mobilenet_v2._make_divisible
    self.assertEqual(make_divisible(channels * multiplier), expected)

  def test_l2_on_conv_kernels_only_and_the_seed_bug_caught(self):
    with tf.Graph().as_default():
      images = tf.zeros([4, 32, 32, 3])
      labels = tf.constant([0, 1, 2, 3], tf.int64)
      with slim.arg_scope(mobilenet_v2.training_scope(weight_decay=0.01)):
        logits, _ = mobilenet_v2.mobilenet(images, 10, depth_multiplier=0.35)
      cross_entropy = tf.reduce_mean(
          tf.compat.v1.losses.sparse_softmax_cross_entropy(labels=labels,
                                                           logits=logits))
      report = safetrain.check_regularization(cross_entropy)
      names = [v.op.name for v in tf.compat.v1.global_variables()]
      # Two moving averages for each of the 52 batch norm layers.
      self.assertLen(
          tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS), 104)
      # The seed's code, with the drop-in slim: the bug is caught.
      with self.assertRaisesRegex(safetrain.MissingRegularizationError,
                                  "leaves out 36 of 36"):
        slim.learning.create_train_op(
            cross_entropy, tf.compat.v1.train.GradientDescentOptimizer(0.1))
    regularized = {name for term in report.terms for name in term.variables}
    conv_kernels = {n for n in names
                    if n.endswith("/weights") and "depthwise" not in n}
    self.assertEqual(regularized, conv_kernels)
    # Stem, 17 projections, 16 expansions, the last conv and the logits.
    self.assertLen(regularized, 36)
    self.assertLen([n for n in names if n.endswith("depthwise_weights")], 17)
    for name in regularized:
      self.assertNotRegex(name, r"depthwise|biases|BatchNorm")
    self.assertTrue(any(n.endswith("/biases") for n in names))
    self.assertTrue(any("BatchNorm/gamma" in n for n in names))

  def test_bad_arguments(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(ValueError, "depth_multiplier must be "
                                  "positive"):
        mobilenet_v2.mobilenet(tf.zeros([1, 32, 32, 3]), 10,
                               depth_multiplier=0.0)
      with self.assertRaisesRegex(ValueError, r"\[batch, height, width"):
        mobilenet_v2.mobilenet(tf.zeros([32, 32, 3]), 10)


class NetsFactoryTest(parameterized.TestCase):

  @parameterized.parameters(
      ("resnet_v1_50", 224, 54),
      ("vgg_16", 224, 16),
  )
  def test_tf_slim_network_under_its_arg_scope(self, name, size,
                                               num_regularized):
    with tf.Graph().as_default():
      network_fn = nets_factory.get_network_fn(name, num_classes=5,
                                               weight_decay=1e-4,
                                               is_training=True)
      self.assertEqual(network_fn.default_image_size, size)
      images = tf.compat.v1.placeholder(tf.float32, [2, size, size, 3])
      logits, _ = network_fn(images)
      self.assertEqual(logits.shape.as_list(), [2, 5])
      self.assertLen(tf.compat.v1.losses.get_regularization_losses(),
                     num_regularized)

  def test_eval_tower_reuses_variables(self):
    with tf.Graph().as_default():
      images = tf.constant(
          np.random.RandomState(0).uniform(-1, 1, (2, 32, 32, 3)), tf.float32)
      logits, _ = nets_factory.get_network_fn(
          "lenet", 10, weight_decay=1e-4, is_training=True,
          depth_multiplier=0.25)(images)
      count = len(tf.compat.v1.global_variables())
      self.assertLen(tf.compat.v1.losses.get_regularization_losses(), 4)
      eval_logits, _ = nets_factory.get_network_fn(
          "lenet", 10, weight_decay=1e-4, depth_multiplier=0.25)(images,
                                                                 reuse=True)
      self.assertLen(tf.compat.v1.global_variables(), count)
      self.assertLen(tf.compat.v1.losses.get_regularization_losses(), 4)
      self.assertEqual(eval_logits.shape.as_list(), [2, 10])
      with tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        a, b = session.run([eval_logits, eval_logits])
        c = session.run(logits)
    np.testing.assert_array_equal(a, b)  # No dropout in the eval tower.
    self.assertFalse(np.array_equal(a, c))  # Dropout (0.5) in training.

  def test_zero_weight_decay_adds_no_regularization(self):
    with tf.Graph().as_default():
      nets_factory.get_network_fn("lenet", 10, weight_decay=0.0,
                                  depth_multiplier=0.25)(
                                      tf.zeros([1, 32, 32, 3]))
      self.assertEmpty(tf.compat.v1.losses.get_regularization_losses())

  def test_unknown_name_and_unsupported_multiplier(self):
    with self.assertRaisesRegex(ValueError, "Unknown model_name 'lenet5'.*"
                                "mobilenet_v2"):
      nets_factory.get_network_fn("lenet5", 10)
    with self.assertRaisesRegex(ValueError, "lenet and mobilenet_v2 only"):
      nets_factory.get_network_fn("vgg_16", 10, depth_multiplier=0.5)

  def test_default_image_sizes(self):
    sizes = {name: nets_factory.default_image_size(name)
             for name in nets_factory.NETWORKS}
    self.assertEqual(sizes["lenet"], 32)
    self.assertEqual(sizes["mobilenet_v2"], 32)
    self.assertEqual(sizes["inception_v3"], 299)
    self.assertEqual(sizes["resnet_v2_50"], 224)


if __name__ == "__main__":
  absltest.main()
