"""Real slim training runs that write MetaGraphs, for the audit tests.

``SEED_SCRIPT`` is the seed story's training script, shrunk: a small slim
CNN under ``arg_scope(weights_regularizer=l2(weight_decay))``, trained with
plain ``tf_slim``. With ``--fixed`` it optimizes
``slim.losses.get_total_loss()`` as the story's fix does; without it the
cross-entropy alone, the bug. ``slim.learning.train`` writes
``model.ckpt-N.meta`` beside each checkpoint, as every slim run does.
"""

import functools
import os
import subprocess
import sys
import tempfile

SEED_SCRIPT = r'''
"""The seed story's script: slim CNN with weight decay, trained a few steps."""
import sys

from absl import app
from absl import flags
import tensorflow as tf
import tf_slim as slim

_LOGDIR = flags.DEFINE_string("logdir", None, "Where slim writes checkpoints.")
_FIXED = flags.DEFINE_bool("fixed", False, "Optimize get_total_loss().")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 0.001, "L2 scale.")
_STEPS = flags.DEFINE_integer("steps", 2, "Training steps.")


def build(fixed, weight_decay):
  images = tf.random.stateless_uniform([8, 8, 8, 3], seed=[1, 2])
  labels = tf.constant([0, 1, 2, 3, 0, 1, 2, 3], dtype=tf.int64)
  with slim.arg_scope([slim.conv2d, slim.fully_connected],
                      weights_regularizer=slim.l2_regularizer(weight_decay)):
    net = slim.conv2d(images, 4, [3, 3], scope="conv1")
    net = slim.flatten(net)
    logits = slim.fully_connected(net, 4, activation_fn=None, scope="logits")
  cross_entropy = tf.compat.v1.losses.sparse_softmax_cross_entropy(
      labels=labels, logits=logits)
  cross_entropy = tf.reduce_mean(cross_entropy)
  global_step = tf.compat.v1.train.get_or_create_global_step()
  opt = tf.compat.v1.train.MomentumOptimizer(0.01, 0.9)
  loss = slim.losses.get_total_loss() if fixed else cross_entropy
  return slim.learning.create_train_op(loss, opt, global_step=global_step)


def main(argv):
  print("seed script argv:", " ".join(argv[1:]))
  tf.compat.v1.disable_eager_execution()
  with tf.Graph().as_default():
    train_op = build(_FIXED.value, _WEIGHT_DECAY.value)
    slim.learning.train(train_op, _LOGDIR.value,
                        number_of_steps=_STEPS.value,
                        save_summaries_secs=3600, save_interval_secs=0)
  print("seed script finished")


if __name__ == "__main__":
  app.run(main)
'''


def write_seed_script(directory: str) -> str:
  path = os.path.join(directory, "seed_train.py")
  with open(path, "w") as f:
    f.write(SEED_SCRIPT)
  return path


# slim.learning.train drives a tf.compat.v1.train.Supervisor, which needs
# eager execution off for the whole process, so the runs happen in a child.
# save_interval_secs=0 turns off the Supervisor's checkpoint thread. With it
# on, the thread saves model.ckpt-0 as training starts while the main thread
# saves model.ckpt-2 at the end; on a loaded machine ckpt-0.meta can be
# written last (it was, once, in CI on TF 2.20 with Python 3.13), and the
# newest .meta in the directory then depends on thread timing. Now slim's
# final save, at step 2, is the only one.
_DRIVER = r"""
import os, runpy, sys
import tensorflow as tf
tf.compat.v1.disable_eager_execution()
import tf_slim as slim
script, root = sys.argv[1:]
seed = runpy.run_path(script, run_name="seed_train")  # Not __main__: no app.run.
for name, fixed in (("buggy", False), ("fixed", True)):
  logdir = os.path.join(root, name)
  with tf.Graph().as_default():
    train_op = seed["build"](fixed, 0.001)
    slim.learning.train(train_op, logdir, number_of_steps=2,
                        save_summaries_secs=3600, save_interval_secs=0)
"""


@functools.lru_cache(maxsize=None)
def seed_runs() -> dict:
  """Trains the buggy and the fixed seed script once per test process.

  Returns:
    {"buggy": logdir, "fixed": logdir, "script": path of SEED_SCRIPT}; each
    logdir holds the model.ckpt-N.meta files slim wrote.
  """
  root = tempfile.mkdtemp(prefix="safetrain_audit_")
  script = write_seed_script(root)
  result = subprocess.run([sys.executable, "-c", _DRIVER, script, root],
                          capture_output=True, text=True, timeout=600,
                          check=False)
  if result.returncode != 0:
    raise RuntimeError("seed training runs failed:\n" + result.stderr[-3000:])
  runs = {"script": script}
  for name in ("buggy", "fixed"):
    runs[name] = os.path.join(root, name)
    if not any(f.endswith(".meta") for f in os.listdir(runs[name])):
      raise RuntimeError(f"slim wrote no .meta file in {runs[name]}")
  return runs


def newest_meta(logdir: str) -> str:
  metas = [os.path.join(logdir, f) for f in os.listdir(logdir)
           if f.endswith(".meta")]
  return max(metas, key=os.path.getmtime)
