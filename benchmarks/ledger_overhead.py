r"""What the weight-decay ledger costs next to the check, on one graph.

Builds tf_slim's resnet_v1_152 with weight decay and a momentum train op
(as benchmarks/check_overhead.py does), then times, best of --repeats, two
pairs that start from the same input:

1. from the loss: the check ``create_train_op_safe`` runs before building
   (``_train.update_report`` of the loss and the trained variables) against
   ``safetrain.ledger(loss, variables, optimizer=...)``, which makes that
   report and adds the per-variable rows and findings;
2. from the built train op: the check ``slim.learning.train`` and the audit
   run (``_train.check_train_op``: trace the op, then the same report)
   against ``safetrain.ledger(train_op)``.

Prints the times and each ratio. Target: ledger / check <= 2 for both.

Usage:
    python benchmarks/ledger_overhead.py [--repeats=5] [--image_size=64]
"""

import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import safetrain
from safetrain.rule import _trace
from safetrain.tf1 import _train
import safetrain.slim as slim
from tf_slim.nets import resnet_v1

_BATCH = flags.DEFINE_integer("batch_size", 2, "Images per step.")
_IMAGE = flags.DEFINE_integer("image_size", 64, "Image height and width.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timings per measurement.")


def _best(function, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return min(times)


def measure():
  graph = tf.Graph()
  with graph.as_default():
    rng = np.random.RandomState(0)
    images = tf.constant(rng.rand(_BATCH.value, _IMAGE.value, _IMAGE.value,
                                  3).astype(np.float32))
    labels = tf.constant(rng.randint(0, 10, _BATCH.value))
    with slim.arg_scope(resnet_v1.resnet_arg_scope(weight_decay=1e-4)):
      logits, _ = resnet_v1.resnet_v1_152(images, 10, is_training=True)
    logits = tf.reshape(logits, [_BATCH.value, 10])
    xent = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
    train_op = safetrain.create_train_op_safe(
        safetrain.total_loss_from(xent),
        tf.compat.v1.train.MomentumOptimizer(0.01, 0.9))
    loss = _trace.trace_train_op(train_op).losses[0]
    variables = tf.compat.v1.trainable_variables()
    optimizer = tf.compat.v1.train.MomentumOptimizer(0.01, 0.9)

    def check_loss():
      return _train.update_report([loss], variables)

    def ledger_loss():
      return safetrain.ledger(loss, variables, optimizer=optimizer)

    def check_train_op():
      return _train.check_train_op(train_op, "raise", "benchmark")

    def ledger_train_op():
      return safetrain.ledger(train_op)

    assert check_loss().ok
    for ledger in (ledger_loss(), ledger_train_op()):
      assert not ledger.verdicts, ledger.to_text()
    found = {"ops": len(graph.get_operations()),
             "variables": len(ledger.rows),
             "decayed": sum(r.decayed for r in ledger.rows)}
    for name, function in (("check_loss", check_loss),
                           ("ledger_loss", ledger_loss),
                           ("check_train_op", check_train_op),
                           ("ledger_train_op", ledger_train_op)):
      found[name] = _best(function, _REPEATS.value)
  found["ratio_loss"] = found["ledger_loss"] / found["check_loss"]
  found["ratio_train_op"] = (found["ledger_train_op"] /
                             found["check_train_op"])
  return found


def main(argv):
  del argv
  found = measure()
  print(f"resnet_v1_152: {found['ops']} ops, {found['variables']} trainable "
        f"variables, {found['decayed']} decayed")
  for start in ("loss", "train_op"):
    print(f"from the {start}: check {found['check_' + start] * 1e3:.1f} ms, "
          f"ledger {found['ledger_' + start] * 1e3:.1f} ms, ratio ledger / "
          f"check {found['ratio_' + start]:.2f} (target <= 2)")


if __name__ == "__main__":
  app.run(main)
