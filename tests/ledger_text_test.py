"""The ledger's text: every variable name in full, whatever its length."""

from absl.testing import absltest
import tensorflow as tf

import safetrain
import safetrain.slim as slim
from examples.nets import mobilenet_v2


def _ledger(build):
  with tf.Graph().as_default():
    images, labels = tf.zeros([2, 32, 32, 3]), tf.zeros([2], tf.int32)
    logits = build(images)
    loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
    return safetrain.ledger(slim.learning.create_train_op(
        safetrain.total_loss_from(loss),
        tf.compat.v1.train.GradientDescentOptimizer(0.01)))


def _mobilenet_v2(images):
  with slim.arg_scope(mobilenet_v2.training_scope(weight_decay=4e-5)):
    return mobilenet_v2.mobilenet(images, 10, depth_multiplier=0.35)[0]


def _small(images):
  with slim.arg_scope([slim.conv2d, slim.fully_connected],
                      weights_regularizer=slim.l2_regularizer(1e-3)):
    net = slim.conv2d(images, 4, [3, 3], scope="conv1")
    return slim.fully_connected(slim.flatten(net), 10, activation_fn=None,
                                scope="logits")


class LedgerTextTest(absltest.TestCase):

  def test_every_mobilenet_v2_name_in_full(self):
    # The seed's MobileNetV2: 158 variables, names up to 56 characters.
    ledger = _ledger(_mobilenet_v2)
    text = ledger.to_text()
    words = set(text.split())
    self.assertLen(ledger.rows, 158)
    self.assertEqual([r.variable for r in ledger.rows
                      if r.variable not in words], [])
    self.assertNotIn("\u2026", text)
    self.assertIn("MobilenetV2/expanded_conv_16/depthwise/depthwise_weights "
                  "3x3x336x1", text)
    # One row per variable, its cells lined up: wider than 100 columns.
    header, *rows = text.splitlines()[1:159]
    self.assertGreater(len(header), 100)
    for row in rows:
      self.assertEqual(row.index(row.split()[1]), header.index("shape"), row)

  def test_short_names_keep_the_width(self):
    # The names' column fills the table out to the width, as it always did:
    # the other five columns take 55, the gaps 5.
    ledger = _ledger(_small)
    for width in (100, 80):
      table = ledger.to_text(width=width).splitlines()[1:6]
      self.assertEqual(table[0].index("shape"), width - 60 + 1)
      self.assertLessEqual(max(len(line) for line in table), width)

  def test_findings_wrap_at_the_width(self):
    ledger = _ledger(_small)
    self.assertTrue(all(len(line) <= 60 for line in
                        ledger.to_text(width=60).splitlines()
                        if line.startswith(("PROBLEM", "INFO", "    "))))


if __name__ == "__main__":
  absltest.main()
