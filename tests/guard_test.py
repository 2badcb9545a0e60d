"""Tests for safetrain.tf1._guard: the check on each TF1 optimizer update."""

import os
import shutil
import tempfile
import warnings

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tf_slim

import safetrain
from safetrain.audit import _audit
from safetrain.guard import _install
from safetrain.rule import _installed
from safetrain.tf1 import _guard

_Optimizer = tf.compat.v1.train.Optimizer
_ORIGINAL_COMPUTE_GRADIENTS = _Optimizer.__dict__["compute_gradients"]
_ORIGINAL_APPLY_GRADIENTS = _Optimizer.__dict__["apply_gradients"]


def _model():
  """A regularized two-layer net; returns (cross-entropy-like loss, reg)."""
  x = tf.constant(np.random.RandomState(0).rand(6, 4).astype(np.float32))
  with tf_slim.arg_scope([tf_slim.fully_connected],
                         weights_regularizer=tf_slim.l2_regularizer(0.5)):
    hidden = tf_slim.fully_connected(x, 3, scope="body")
    y = tf_slim.fully_connected(hidden, 2, activation_fn=None, scope="head")
  loss = tf.reduce_mean(tf.square(y - 1.0), name="task_loss")
  return loss, tf.add_n(tf.compat.v1.losses.get_regularization_losses())


def _sgd():
  return tf.compat.v1.train.GradientDescentOptimizer(0.1)


def _minimize(loss, opt):
  return opt.minimize(loss)


def _slim_create_train_op(loss, opt):
  return tf_slim.learning.create_train_op(loss, opt)


def _hand_written(loss, opt):
  return opt.apply_gradients(opt.compute_gradients(loss))


def _tf_gradients(loss, opt):
  # No compute_gradients: the guard finds the loss from the gradients, as
  # the audit does.
  variables = tf.compat.v1.trainable_variables()
  return opt.apply_gradients(zip(tf.gradients(loss, variables), variables))


def _sync_replicas(loss, opt):
  sync = tf.compat.v1.train.SyncReplicasOptimizer(opt, replicas_to_aggregate=1)
  # Its update goes through accumulators: the applied gradients no longer
  # show the loss, which the inner optimizer's record still names.
  return sync.apply_gradients(
      sync.compute_gradients(loss),
      global_step=tf.compat.v1.train.get_or_create_global_step())


def _one_step(build_train_op):
  """The weights after one step of ``build_train_op()``, by variable name."""
  tf.compat.v1.set_random_seed(0)  # The same start in every graph.
  train_op = build_train_op()
  with tf.compat.v1.Session() as session:
    session.run(tf.compat.v1.global_variables_initializer())
    session.run(train_op)
    variables = tf.compat.v1.trainable_variables()
    return dict(zip([v.op.name for v in variables], session.run(variables)))


# Every TF1 training path reaches Optimizer.compute_gradients and
# apply_gradients.
_PATHS = (
    ("minimize", _minimize),
    ("slim_create_train_op", _slim_create_train_op),
    ("hand_written", _hand_written),
    ("tf_gradients", _tf_gradients),
    ("sync_replicas", _sync_replicas),
)


def _gradients(*grads_and_vars_lists):
  """Evaluates gradients by variable name, all from one initialization."""
  pairs = [[(g, v) for g, v in grads_and_vars if g is not None]
           for grads_and_vars in grads_and_vars_lists]
  with tf.compat.v1.Session() as session:
    session.run(tf.compat.v1.global_variables_initializer())
    values = session.run([[g for g, _ in p] for p in pairs])
  return [{v.op.name: value for (_, v), value in zip(p, vals)}
          for p, vals in zip(pairs, values)]


class GuardOptimizersTest(parameterized.TestCase):

  def tearDown(self):
    super().tearDown()
    # Every block must leave the class as it found it.
    self.assertIs(_Optimizer.__dict__["compute_gradients"],
                  _ORIGINAL_COMPUTE_GRADIENTS)
    self.assertIs(_Optimizer.__dict__["apply_gradients"],
                  _ORIGINAL_APPLY_GRADIENTS)

  @parameterized.named_parameters(*_PATHS)
  def test_raises_when_the_loss_leaves_out_regularization(self, build):
    with tf.Graph().as_default():
      loss, _ = _model()
      with safetrain.guard_optimizers():
        with self.assertRaises(safetrain.MissingRegularizationError) as caught:
          build(loss, _sgd())
    error = caught.exception
    self.assertLen(error.missing, 2)
    self.assertEqual(error.loss_name, "task_loss:0")
    self.assertRegex(
        str(error), r"^\[safetrain\] \w+Optimizer\.apply_gradients: the loss "
        r"being optimized leaves out 2 of 2 regularization losses")

  def test_names_the_users_loss_under_slims_update_ops_identity(self):
    # With update ops (batch norm), slim differentiates an Identity that
    # waits for them; the message names the loss the user built.
    with tf.Graph().as_default():
      loss, _ = _model()
      counter = tf.Variable(0, trainable=False)
      tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.UPDATE_OPS,
                                     counter.assign_add(1))
      with safetrain.guard_optimizers():
        with self.assertRaises(safetrain.MissingRegularizationError) as caught:
          tf_slim.learning.create_train_op(loss, _sgd())
    self.assertEqual(caught.exception.loss_name, "task_loss:0")

  @parameterized.named_parameters(*_PATHS)
  def test_complete_loss_passes(self, build):
    with tf.Graph().as_default():
      loss, regularization = _model()
      with safetrain.guard_optimizers():
        self.assertIsNotNone(build(loss + regularization, _sgd()))

  def test_add_applies_the_update_of_the_augmented_loss(self):
    def guarded():
      loss, _ = _model()
      with safetrain.guard_optimizers(on_missing="add"):
        return _sgd().minimize(loss)

    def by_hand():
      loss, regularization = _model()
      return _sgd().minimize(loss + regularization)

    def plain():
      loss, _ = _model()
      return _sgd().minimize(loss)

    results = []
    for build in (guarded, by_hand, plain):
      with tf.Graph().as_default():
        results.append(_one_step(build))
    guarded, expected, plain = results
    self.assertEqual(sorted(guarded), sorted(expected))
    for name in expected:
      np.testing.assert_allclose(guarded[name], expected[name], rtol=1e-5)
    # The decay term matters: the weights differ from the plain loss's step,
    # so this test can tell the two apart.
    self.assertFalse(np.allclose(plain["head/weights"],
                                 guarded["head/weights"]))

  def test_warn_warns_once_and_leaves_the_loss(self):
    with tf.Graph().as_default():
      loss, _ = _model()
      with safetrain.guard_optimizers(on_missing="warn"):
        with warnings.catch_warnings(record=True) as caught:
          warnings.simplefilter("always")
          _sync_replicas(loss, _sgd())  # Wrapper and inner: one check.
    relevant = [w for w in caught
                if issubclass(w.category, safetrain.MissingRegularizationWarning)]
    self.assertLen(relevant, 1)

  def test_blocks_nest_and_the_innermost_policy_applies(self):
    with tf.Graph().as_default():
      loss, _ = _model()
      with safetrain.guard_optimizers():
        with safetrain.guard_optimizers(on_missing="warn"):
          with self.assertWarns(safetrain.MissingRegularizationWarning):
            _sgd().minimize(loss)
        with self.assertRaises(safetrain.MissingRegularizationError):
          _sgd().minimize(loss)

  def test_no_check_outside_the_block(self):
    with tf.Graph().as_default():
      loss, _ = _model()
      with safetrain.guard_optimizers():
        pass
      self.assertLen(_sgd().compute_gradients(loss), 4)

  def test_a_vector_loss_trains_as_before(self):
    # TF1 optimizers sum a vector loss; the guard cannot check it and must
    # not fail a script that works.
    with tf.Graph().as_default():
      loss, regularization = _model()
      vector = tf.stack([loss, regularization])
      with safetrain.guard_optimizers():
        self.assertLen(_sgd().compute_gradients(vector), 4)

  def test_unknown_policy(self):
    with self.assertRaisesRegex(safetrain.InvalidArgumentError,
                                r"on_missing='drop' is not one of"):
      with safetrain.guard_optimizers(on_missing="drop"):
        pass

  def test_graph_built_with_add_audits_ok(self):
    # The audit traces what the apply ops differentiate, not the value a
    # slim train op returns (the user's loss, without the added terms).
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory)
    path = os.path.join(directory, "model.meta")
    with tf.Graph().as_default():
      loss, _ = _model()
      with safetrain.guard_optimizers(on_missing="add"):
        tf_slim.learning.create_train_op(loss, _sgd())
      tf.compat.v1.train.export_meta_graph(filename=path)
    self.assertEqual(_audit.audit_meta_graph(path).exit_code, 0)


class SafeOptimizerTest(absltest.TestCase):

  def test_minimize_raises(self):
    with tf.Graph().as_default():
      loss, _ = _model()
      with self.assertRaises(safetrain.MissingRegularizationError):
        safetrain.SafeOptimizer(_sgd()).minimize(loss)

  def test_slim_with_add_trains_with_decay(self):
    def safe():
      loss, _ = _model()
      inner = tf.compat.v1.train.MomentumOptimizer(0.1, 0.9)
      optimizer = safetrain.SafeOptimizer(inner, on_missing="add")
      train_op = tf_slim.learning.create_train_op(loss, optimizer)
      # Slots are the wrapped optimizer's.
      self.assertEqual(optimizer.get_slot_names(), ["momentum"])
      self.assertIsNotNone(inner.get_slot(
          tf.compat.v1.trainable_variables("head/weights")[0], "momentum"))
      return train_op

    def by_hand():
      loss, regularization = _model()
      return tf_slim.learning.create_train_op(
          loss + regularization, tf.compat.v1.train.MomentumOptimizer(0.1, 0.9))

    results = []
    for build in (safe, by_hand):
      with tf.Graph().as_default():
        results.append(_one_step(build))
    for name in results[1]:
      np.testing.assert_allclose(results[0][name], results[1][name],
                                 rtol=1e-5)

  def test_inside_the_guard_checks_once(self):
    with tf.Graph().as_default():
      loss, _ = _model()
      with safetrain.guard_optimizers(on_missing="warn"):
        with warnings.catch_warnings(record=True) as caught:
          warnings.simplefilter("always")
          safetrain.SafeOptimizer(_sgd(), on_missing="warn").minimize(loss)
    relevant = [w for w in caught
                if issubclass(w.category, safetrain.MissingRegularizationWarning)]
    self.assertLen(relevant, 1)
    self.assertIn("SafeOptimizer.apply_gradients", str(relevant[0].message))
    # The innermost policy's way in names itself (a warning offers "add";
    # it does not offer "warn", which is in use).
    self.assertIn('pass on_missing="add" to SafeOptimizer',
                  str(relevant[0].message))

  def test_rejects_what_is_not_an_optimizer(self):
    with self.assertRaisesRegex(safetrain.InvalidArgumentTypeError,
                                r"SafeOptimizer: optimizer is None"):
      safetrain.SafeOptimizer(None)


class InstallTest(absltest.TestCase):

  def test_sitecustomize_guards_the_optimizer_module_when_it_loads(self):
    # The trampoline the run hook puts on the class installs the real guard
    # on the first call, with the policy from the environment.
    from safetrain.guard._run_hook import sitecustomize  # pylint: disable=g-import-not-at-top
    with tf.Graph().as_default():
      loss, _ = _model()
      sitecustomize.patch(_Optimizer, "raise")
      try:
        self.assertIsNone(_install.installed())
        with self.assertRaises(safetrain.MissingRegularizationError):
          _sgd().minimize(loss)
        self.assertEqual(_install.installed(), "raise")
      finally:
        _installed.clear()
        _install._unpatch()  # pylint: disable=protected-access
    self.assertIs(_Optimizer.__dict__["compute_gradients"],
                  _ORIGINAL_COMPUTE_GRADIENTS)


if __name__ == "__main__":
  absltest.main()
