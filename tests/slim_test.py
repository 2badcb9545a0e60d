"""``import safetrain.slim as slim`` is a drop-in for ``import tf_slim``."""

import inspect
import os
import subprocess
import sys
import textwrap

from absl.testing import absltest
import tensorflow as tf
import tf_slim

import safetrain
import safetrain.slim as slim

import helpers


def _public_names(module):
  return [n for n in dir(module) if not n.startswith("_")]


class DropInTest(absltest.TestCase):

  def test_every_public_tf_slim_name_resolves(self):
    for name in _public_names(tf_slim):
      self.assertIsNotNone(getattr(slim, name), name)
    for module_name in ("learning", "losses"):
      theirs = getattr(tf_slim, module_name)
      ours = getattr(slim, module_name)
      for name in _public_names(theirs):
        self.assertIsNotNone(getattr(ours, name), f"{module_name}.{name}")
    for name in _public_names(tf_slim.training):
      self.assertIsNotNone(getattr(slim.training, name), name)

  def test_unchanged_names_are_tf_slims_objects(self):
    self.assertIs(slim.conv2d, tf_slim.conv2d)
    self.assertIs(slim.arg_scope, tf_slim.arg_scope)
    self.assertIs(slim.learning.train_step, tf_slim.learning.train_step)
    self.assertIs(slim.losses.softmax_cross_entropy,
                  tf_slim.losses.softmax_cross_entropy)
    from tf_slim.nets import resnet_v1  # pylint: disable=g-import-not-at-top
    self.assertIs(slim.nets.resnet_v1, resnet_v1)

  def test_safe_versions_keep_slims_signatures(self):
    pairs = ((slim.learning.create_train_op, tf_slim.learning.create_train_op),
             (slim.training.create_train_op, tf_slim.training.create_train_op),
             (slim.losses.get_total_loss, tf_slim.losses.get_total_loss))
    for ours, theirs in pairs:
      ours_params = [p for p in inspect.signature(ours).parameters.values()
                     if p.kind != p.KEYWORD_ONLY]
      theirs_params = list(inspect.signature(theirs).parameters.values())
      self.assertEqual([(p.name, p.default) for p in ours_params],
                       [(p.name, p.default) for p in theirs_params])

  def test_unknown_name_is_an_attribute_error(self):
    with self.assertRaisesRegex(AttributeError, "no_such_thing"):
      slim.no_such_thing  # pylint: disable=pointless-statement


def _sgd():
  return tf.compat.v1.train.GradientDescentOptimizer(0.1)


class SafeFunctionsTest(absltest.TestCase):

  def test_learning_create_train_op_raises_in_its_own_name(self):
    with tf.Graph().as_default():
      helpers.assert_error(
          self, safetrain.MissingRegularizationError,
          r"^\[safetrain\] slim.learning.create_train_op: the loss being "
          r"optimized leaves out 2 of 2",
          slim.learning.create_train_op, helpers.cross_entropy(), _sgd())

  def test_training_create_train_op_raises_with_transform(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(safetrain.MissingRegularizationError,
                                  "slim.training.create_train_op"):
        slim.training.create_train_op(
            helpers.cross_entropy(), _sgd(),
            transform_grads_fn=lambda g: slim.training.clip_gradient_norms(
                g, 1.0))

  def test_training_create_train_op_add(self):
    with tf.Graph().as_default():
      train_op = slim.training.create_train_op(
          helpers.cross_entropy(), _sgd(), on_missing="add")
      loss, = safetrain.trace_train_op(train_op).losses
      self.assertTrue(safetrain.check_regularization(loss).ok)

  def test_get_total_loss_includes_regularization(self):
    with tf.Graph().as_default():
      helpers.cross_entropy()
      total = slim.losses.get_total_loss()
      self.assertTrue(safetrain.check_regularization(total).ok)
      without = slim.losses.get_total_loss(add_regularization_losses=False)
      self.assertLen(safetrain.check_regularization(without).missing, 2)


# slim.learning.train drives a tf.compat.v1.train.Supervisor, which needs
# eager execution off for the whole process; so it runs in a child process.
_TRAIN_SCRIPT = textwrap.dedent("""
    import sys, tempfile, warnings
    import tensorflow as tf
    tf.compat.v1.disable_eager_execution()
    import tf_slim
    import safetrain
    import safetrain.slim as slim
    sys.path.insert(0, %r)
    import helpers

    def sgd():
      return tf.compat.v1.train.GradientDescentOptimizer(0.1)

    def run(case):
      with tf.Graph().as_default():
        loss = helpers.cross_entropy()
        if case == "complete":
          train_op = slim.learning.create_train_op(
              safetrain.total_loss_from(loss), sgd())
        else:
          train_op = tf_slim.learning.create_train_op(loss, sgd())
        logdir = tempfile.mkdtemp()
        kwargs = {"on_missing": "warn"} if case == "warn" else {}
        if case == "training":
          return slim.training.train(train_op, logdir)
        return slim.learning.train(train_op, logdir, number_of_steps=2,
                                   save_summaries_secs=0, **kwargs)

    for case in ("plain", "complete", "warn", "training"):
      with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
          value = run(case)
          outcome = "loss>0" if value > 0 else "loss<=0"
        except safetrain.MissingRegularizationError as e:
          outcome = "raised:" + str(e).split(":")[0].split("] ")[1]
      warned = any(issubclass(w.category,
                              safetrain.MissingRegularizationWarning)
                   for w in caught)
      print(f"RESULT {case} {outcome} warned={warned}")
""")


class TrainTest(absltest.TestCase):

  def test_train_checks_the_train_op_it_is_handed(self):
    script = _TRAIN_SCRIPT % os.path.dirname(os.path.abspath(__file__))
    result = subprocess.run([sys.executable, "-c", script],
                            capture_output=True, text=True, timeout=600)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    lines = [l for l in result.stdout.splitlines() if l.startswith("RESULT")]
    self.assertEqual(lines, [
        "RESULT plain raised:slim.learning.train warned=False",
        "RESULT complete loss>0 warned=False",
        "RESULT warn loss>0 warned=True",
        "RESULT training raised:slim.training.train warned=False",
    ])


if __name__ == "__main__":
  absltest.main()
