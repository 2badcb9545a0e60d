r"""What the weight-decay ledger costs next to the check, on one graph.

Builds tf_slim's resnet_v1_152 with weight decay and a momentum train op
(as benchmarks/check_overhead.py does), then times, best of --repeats:

* the check: the update's report, exactly what create_train_op_safe and the
  audit run (``_train.update_report`` on the traced loss and variables);
* the ledger: ``safetrain.ledger(train_op)``, which traces the train op,
  makes that same report and adds the per-variable rows and findings.

Prints both times and their ratio. Target: ledger / check <= 2.

Usage:
    python benchmarks/ledger_overhead.py [--repeats=5] [--image_size=64]
"""

import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import safetrain
from safetrain import _check
from safetrain import _graph
from safetrain import _trace
from safetrain import _train
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
    trace = _trace.trace_train_op(train_op)
    owners = _graph.variable_key_ops(_check.all_variables(graph))
    variables = [owners[op] for op in trace.variable_ops if op in owners]

    def check():
      return _train.update_report(list(trace.losses), variables)

    def ledger():
      return safetrain.ledger(train_op)

    assert check().ok
    result = ledger()
    assert not result.verdicts, result.to_text()
    check_s = _best(check, _REPEATS.value)
    ledger_s = _best(ledger, _REPEATS.value)
  return {"ops": len(graph.get_operations()), "variables": len(result.rows),
          "decayed": sum(r.decayed for r in result.rows),
          "check_s": check_s, "ledger_s": ledger_s,
          "ratio": ledger_s / check_s}


def main(argv):
  del argv
  found = measure()
  print(f"resnet_v1_152: {found['ops']} ops, {found['variables']} trainable "
        f"variables, {found['decayed']} decayed")
  print(f"check  (update report): {found['check_s'] * 1e3:.1f} ms")
  print(f"ledger (rows+findings): {found['ledger_s'] * 1e3:.1f} ms")
  print(f"ratio ledger / check: {found['ratio']:.2f} (target <= 2)")


if __name__ == "__main__":
  app.run(main)
