r"""What the TF2 check costs, measured side by side in one run.

Usage:
  python benchmarks/tf2_overhead.py [--blocks=8] [--steps=30] [--repeats=5]

On a Keras ResNet-style model (residual blocks of L2-regularized convs):

1. a ``tf.function`` train step with ``tf.GradientTape`` and with
   ``safetrain.GradientTape``, after tracing: time per step, ratio (target
   1.00 within noise);
2. the check at trace time against the trace itself: the time the check
   spends inside the first call, over that call's time (target <= 5%);
3. eager steps after the first, plain and checked (target <= 2% overhead).

Steps alternate between the two variants so drift hits both alike; each
figure is the median of ``--repeats`` rounds.
"""

import statistics
import time

from absl import app
from absl import flags

_BLOCKS = flags.DEFINE_integer("blocks", 8, "Residual blocks.")
_STEPS = flags.DEFINE_integer("steps", 30, "Steps per round.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Rounds (the median is kept).")
_BATCH = flags.DEFINE_integer("batch", 16, "Batch size.")


def resnet(keras, blocks: int):
  l2 = keras.regularizers.L2(1e-4)
  inputs = keras.Input((32, 32, 3))
  x = keras.layers.Conv2D(32, 3, padding="same", kernel_regularizer=l2)(inputs)
  for _ in range(blocks):
    y = keras.layers.Conv2D(32, 3, padding="same", activation="relu",
                            kernel_regularizer=l2)(x)
    y = keras.layers.Conv2D(32, 3, padding="same", kernel_regularizer=l2)(y)
    x = keras.layers.Activation("relu")(keras.layers.Add()([x, y]))
  x = keras.layers.GlobalAveragePooling2D()(x)
  outputs = keras.layers.Dense(10, kernel_regularizer=l2)(x)
  return keras.Model(inputs, outputs)


def main(argv):
  del argv
  import tensorflow as tf
  import safetrain
  from safetrain.tf2 import _tape

  keras = tf.keras
  model = resnet(keras, _BLOCKS.value)
  optimizer = keras.optimizers.SGD(0.01)
  images = tf.random.uniform((_BATCH.value, 32, 32, 3), seed=0)
  labels = tf.random.uniform((_BATCH.value,), 0, 10, tf.int64, seed=0)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  def make(tape_type):
    def step(x, y):
      with tape_type() as tape:
        loss = safetrain.total_loss_from(loss_fn(y, model(x, training=True)),
                                         model=model)
      variables = model.trainable_variables
      optimizer.apply_gradients(zip(tape.gradient(loss, variables),
                                    variables))
      return loss
    return step

  # The time the check spends: wrap the one function that does the work.
  spent = [0.0]
  original_check = _tape._checked  # pylint: disable=protected-access

  def timed_check(tape, original, *args):
    start = time.perf_counter()
    grads_start = [0.0]
    def timed_original(*a):
      t = time.perf_counter()
      result = original(*a)
      grads_start[0] += time.perf_counter() - t
      return result
    result = original_check(tape, timed_original, *args)
    spent[0] += time.perf_counter() - start - grads_start[0]
    return result
  _tape._checked = timed_check  # pylint: disable=protected-access

  # 2. Trace: first call of each, the check's own time inside the checked.
  traces = {}
  functions = {}
  for name, tape_type in (("plain", tf.GradientTape),
                          ("checked", safetrain.GradientTape)):
    functions[name] = tf.function(make(tape_type))
    spent[0] = 0.0
    start = time.perf_counter()
    functions[name](images, labels).numpy()
    traces[name] = (time.perf_counter() - start, spent[0])
  n_terms = len(model.losses)

  def rounds(fns):
    medians = {name: [] for name in fns}
    for _ in range(_REPEATS.value):
      per = {name: 0.0 for name in fns}
      for _ in range(_STEPS.value):
        for name, fn in fns.items():
          start = time.perf_counter()
          fn(images, labels).numpy()
          per[name] += time.perf_counter() - start
      for name in fns:
        medians[name].append(per[name] / _STEPS.value)
    return {name: statistics.median(v) for name, v in medians.items()}

  # 1. tf.function steps after tracing.
  function_times = rounds(functions)
  # 3. Eager steps after the first (the first of each checks and caches).
  eager = {"plain": make(tf.GradientTape), "checked": make(
      safetrain.GradientTape)}
  for fn in eager.values():
    fn(images, labels)
  spent[0] = 0.0
  eager_times = rounds(eager)
  eager_check = spent[0] / (_REPEATS.value * _STEPS.value)

  print(f"Keras {keras.__version__}, TF {tf.__version__}: ResNet-style, "
        f"{_BLOCKS.value} blocks, {len(model.trainable_variables)} variables, "
        f"{n_terms} regularization terms, batch {_BATCH.value}")
  ratio = function_times["checked"] / function_times["plain"]
  print(f"tf.function step after tracing: checked "
        f"{function_times['checked'] * 1e3:.2f} ms / plain "
        f"{function_times['plain'] * 1e3:.2f} ms = {ratio:.3f}   "
        "(target 1.00 within noise)")
  trace_time, check_time = traces["checked"]
  print(f"check at trace time: {check_time * 1e3:.1f} ms / first call "
        f"(trace) {trace_time * 1e3:.0f} ms = {check_time / trace_time:.4f}   "
        f"(target <= 0.05; plain first call {traces['plain'][0] * 1e3:.0f} ms)")
  ratio = eager_times["checked"] / eager_times["plain"]
  print(f"eager step after the first: checked "
        f"{eager_times['checked'] * 1e3:.2f} ms / plain "
        f"{eager_times['plain'] * 1e3:.2f} ms = {ratio:.3f}   "
        f"(target <= 1.02); check's own time per step "
        f"{eager_check * 1e6:.1f} us = "
        f"{eager_check / eager_times['plain']:.5f} of a step")


if __name__ == "__main__":
  app.run(main)
