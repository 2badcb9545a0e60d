"""Unchanged ``import tf_slim as slim`` scripts under ``safetrain run``.

Each script runs as a real subprocess three ways: plain (it fails on this
TensorFlow, which proves the bug is real), under ``safetrain run`` (the run
hook fixes tf_slim when the script first imports it), and with the import
replaced by ``import safetrain.slim as slim``.
"""

import os
import subprocess
import sys
import tempfile
import textwrap

from absl.testing import absltest
from absl.testing import parameterized

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A TF1-style script as people wrote them: the graph in a tf.Graph() block,
# eager execution never turned off, slim's Supervisor with its threads.
_TRAIN = textwrap.dedent("""
    import sys, tempfile
    import numpy as np
    import tensorflow as tf
    import tf_slim as slim

    with tf.Graph().as_default():
      x = tf.constant(np.random.RandomState(0).rand(8, 4), tf.float32)
      y = tf.constant([0, 1, 0, 1, 0, 1, 0, 1])
      logits = slim.fully_connected(
          x, 2, activation_fn=None,
          weights_regularizer=slim.l2_regularizer(0.1))
      slim.losses.sparse_softmax_cross_entropy(logits, y)
      train_op = slim.learning.create_train_op(
          slim.losses.get_total_loss(),
          tf.compat.v1.train.GradientDescentOptimizer(0.1))
      final = slim.learning.train(train_op, tempfile.mkdtemp(),
                                  number_of_steps=3, save_summaries_secs=60,
                                  save_interval_secs=600)
    print("SCRIPT DONE", final > 0)
""")

# tfexample_decoder.Image decodes through control_flow_ops.case, which
# TF 2.16 moved: the script dies at graph build without the fixes.
_DECODE = textwrap.dedent("""
    import numpy as np
    import tensorflow as tf
    import tf_slim as slim
    from tf_slim.data import tfexample_decoder

    pixels = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    png = tf.io.encode_png(pixels).numpy()
    example = tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[png]))}))
    with tf.Graph().as_default():
      keys = {"image/encoded": tf.io.FixedLenFeature((), tf.string, ""),
              "image/format": tf.io.FixedLenFeature((), tf.string, "png")}
      decoder = tfexample_decoder.TFExampleDecoder(
          keys, {"image": tfexample_decoder.Image(shape=(2, 2, 3))})
      image, = decoder.decode(tf.constant(example.SerializeToString()),
                              ["image"])
      with tf.compat.v1.Session() as sess:
        decoded = sess.run(image)
    print("SCRIPT DONE", bool((decoded == pixels).all()))
""")

_SCRIPTS = {"train": _TRAIN, "decode": _DECODE}


def _run(script_name, how):
  source = _SCRIPTS[script_name]
  if how == "safetrain.slim":
    source = source.replace("import tf_slim as slim",
                            "import safetrain.slim as slim")
  directory = tempfile.mkdtemp()
  path = os.path.join(directory, script_name + ".py")
  with open(path, "w") as f:
    f.write(source)
  command = [sys.executable, path]
  if how == "safetrain run":
    command = [sys.executable, "-m", "safetrain", "run", "--"] + command
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (_ROOT, env.get("PYTHONPATH")) if p)
  env.pop("SAFETRAIN_RUN_ON_MISSING", None)
  return subprocess.run(command, capture_output=True, text=True, env=env,
                        timeout=300, check=False, cwd=directory)


class UnchangedScriptTest(parameterized.TestCase):

  @parameterized.parameters(
      ("train", r"global_step:0.* is out of scope"),
      ("decode", r"AttributeError: .*control_flow_ops.* has no attribute "
                 r"'case'"),
  )
  def test_fails_on_this_tensorflow_without_safetrain(self, script, error):
    result = _run(script, "plain")
    self.assertNotEqual(result.returncode, 0)
    self.assertNotIn("SCRIPT DONE", result.stdout)
    self.assertRegex(result.stderr, error)

  @parameterized.product(script=("train", "decode"),
                         how=("safetrain run", "safetrain.slim"))
  def test_works_with_safetrain(self, script, how):
    result = _run(script, how)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("SCRIPT DONE True", result.stdout)
    self.assertNotIn("nothing was checked", result.stderr)


class HookModuleTest(absltest.TestCase):

  def test_hook_awaits_tf_slim_and_the_optimizer_module(self):
    # The hook is a real module: importing it under its package name has no
    # side effects; only Python's start-up import (as sitecustomize) acts.
    code = textwrap.dedent("""
        from safetrain.guard._run_hook import sitecustomize
        from safetrain.compat import _on_import
        print(sorted(_on_import.watching().items()))  # import safetrain's.
        sitecustomize.watch("raise")
        print(sorted(_on_import.watching().items()))
        """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=120, check=True, cwd=_ROOT)
    self.assertEqual(result.stdout.splitlines(), [
        "[('tf_slim', 1)]",
        "[('tensorflow.python.training.optimizer', 1), ('tf_slim', 2)]"])

  def test_env_name_matches_the_guard(self):
    from safetrain.guard import _install  # pylint: disable=g-import-not-at-top
    from safetrain.guard._run_hook import sitecustomize  # pylint: disable=g-import-not-at-top
    self.assertEqual(sitecustomize.ON_MISSING_ENV, _install.ON_MISSING_ENV)


if __name__ == "__main__":
  absltest.main()
