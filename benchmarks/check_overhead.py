r"""What the regularization check costs, measured side by side in one run.

Prints three ratios (each measured against its baseline in the same process,
so machine noise affects both sides alike):

1. On tf_slim's resnet_v1_152 with weight decay, topped by two Keras heads
   (tf.keras and tf_keras Dense layers with kernel regularizers, whose terms
   live in layer.losses): the time of the check that create_train_op_safe
   runs (Keras terms and ineffective regularizers included) / the time
   slim's create_train_op takes to build the train op. Target: at most 0.01.
2. Per-step time of the safe train op / a hand-built correct one
   (get_total_loss + slim create_train_op), both in one graph and session,
   run alternately. Target: 1.00 within noise (no per-step work is added).
3. Check time per op on generated graphs of --sizes ops. Target: the same
   per-op cost at every size.

Usage:
    python benchmarks/check_overhead.py [--steps=10] [--sizes=10000,100000]
"""

import statistics
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import safetrain
from safetrain.rule import _check
from safetrain.tf1 import _train
import safetrain.slim as slim
import tf_slim
from tf_slim.nets import resnet_v1

_STEPS = flags.DEFINE_integer("steps", 10, "Train steps per train op.")
_BATCH = flags.DEFINE_integer("batch_size", 2, "Images per step.")
_IMAGE = flags.DEFINE_integer("image_size", 64, "Image height and width.")
_SIZES = flags.DEFINE_list("sizes", ["10000", "100000"],
                           "Op counts of the generated graphs.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timings per measurement.")


def _best(function, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return min(times)


def resnet_ratios():
  """Ratios 1 and 2 on resnet_v1_152."""
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.set_random_seed(0)
    rng = np.random.RandomState(0)
    images = tf.constant(rng.rand(_BATCH.value, _IMAGE.value, _IMAGE.value,
                                  3).astype(np.float32))
    labels = tf.constant(rng.randint(0, 10, _BATCH.value))
    with slim.arg_scope(resnet_v1.resnet_arg_scope(weight_decay=1e-4)):
      logits, _ = resnet_v1.resnet_v1_152(images, 10, is_training=True)
    logits = tf.reshape(logits, [_BATCH.value, 10])
    heads = _keras_heads()
    for head in heads:
      logits = head(logits)
    xent = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
    keras_terms = [t for head in heads for t in head.losses]
    total = tf.add_n([tf.compat.v1.losses.get_total_loss()] + keras_terms)
    variables = tf.compat.v1.trainable_variables()
    num_ops = len(graph.get_operations())
    num_reg = len(_check.regularization_losses(graph))

    def check():  # What create_train_op_safe runs before building.
      return _train.update_report([total], variables)

    check_time = _best(check, _REPEATS.value)
    report = check()
    assert report.ok, report.to_text()

    optimizer = tf.compat.v1.train.MomentumOptimizer(0.01, 0.9)
    start = time.perf_counter()
    hand = tf_slim.learning.create_train_op(total, optimizer)
    build_time = time.perf_counter() - start

    safe = safetrain.create_train_op_safe(
        safetrain.total_loss_from(xent), optimizer, global_step=None)

    with tf.compat.v1.Session(graph=graph) as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      sess.run([hand, safe])  # Warm up both.
      hand_times, safe_times = [], []
      for _ in range(_STEPS.value):
        for train_op, times in ((hand, hand_times), (safe, safe_times)):
          start = time.perf_counter()
          sess.run(train_op)
          times.append(time.perf_counter() - start)
  return {
      "ops": num_ops,
      "regularization_losses": num_reg,
      "check_s": check_time,
      "create_train_op_s": build_time,
      "check_over_build": check_time / build_time,
      "hand_step_s": statistics.median(hand_times),
      "safe_step_s": statistics.median(safe_times),
      "step_ratio": statistics.median(safe_times) /
                    statistics.median(hand_times),
  }


def _keras_heads():
  """Dense layers of each Keras this TensorFlow has, L2-regularized."""
  heads = [tf.keras.layers.Dense(
      10, kernel_regularizer=tf.keras.regularizers.l2(1e-4))]
  try:
    import tf_keras  # pylint: disable=g-import-not-at-top
  except ImportError:
    return heads
  heads.append(tf_keras.layers.Dense(
      10, kernel_regularizer=tf_keras.regularizers.l2(1e-4)))
  return heads


def generated_graph(num_ops: int):
  """A graph of about ``num_ops`` ops: regularized variables, a long loss.

  Every 20 ops or so a new regularized variable joins a running sum, so the
  check meets regularization terms throughout the graph, as in a deep net.
  """
  graph = tf.Graph()
  with graph.as_default():
    x = tf.constant(1.0)
    while len(graph.get_operations()) < num_ops:
      w = tf.compat.v1.get_variable(
          f"w{len(graph.get_operations())}", shape=[4],
          regularizer=lambda v: 1e-4 * tf.nn.l2_loss(v))
      for _ in range(4):
        x = x * 1.0001 + tf.reduce_sum(w)
    total = tf.add_n([x] + tf.compat.v1.get_collection(
        tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES))
  return graph, total


def scale_rows():
  rows = []
  for size in (int(s) for s in _SIZES.value):
    graph, total = generated_graph(size)
    with graph.as_default():
      variables = tf.compat.v1.trainable_variables()
      def check():
        return _check.analyze(total, variables, expected_coefficient=1.0,
                              with_coefficients=True)
      seconds = _best(check, max(1, _REPEATS.value // 2))
      assert check().ok
    ops = len(graph.get_operations())
    rows.append((ops, seconds, seconds / ops * 1e6))
  return rows


def main(argv):
  del argv
  print("# check_overhead\n")
  r = resnet_ratios()
  print(f"resnet_v1_152 + Keras heads ({r['ops']} ops, "
        f"{r['regularization_losses']} regularization losses):")
  print(f"  check {r['check_s']:.3f} s / create_train_op "
        f"{r['create_train_op_s']:.2f} s = {r['check_over_build']:.4f}"
        "   (target <= 0.01)")
  print(f"  step: safe {r['safe_step_s']:.3f} s / hand-built "
        f"{r['hand_step_s']:.3f} s = {r['step_ratio']:.3f}"
        "   (target 1.00 within noise)")
  print("\ngenerated graphs:")
  print("  ops       check s   us/op")
  rows = scale_rows()
  for ops, seconds, per_op in rows:
    print(f"  {ops:<9} {seconds:<9.3f} {per_op:.2f}")
  if len(rows) > 1:
    print(f"  per-op cost, largest / smallest graph: "
          f"{rows[-1][2] / rows[0][2]:.2f}   (target about 1)")


if __name__ == "__main__":
  app.run(main)
