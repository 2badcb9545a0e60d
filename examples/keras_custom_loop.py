r"""A TF2 custom training loop for a Keras CNN on the digits, checked.

The public bug, as TF2 quickstarts and many ports write it:

    with tf.GradientTape() as tape:
      loss = loss_fn(labels, model(images, training=True))   # no model.losses
    grads = tape.gradient(loss, model.trainable_variables)

trains with no weight decay at all. ``--loop=broken`` runs exactly that
with ``safetrain.GradientTape``, which stops it at the first step;
``--loop=fixed`` adds the regularization once, scaled for the strategy:

    loss = safetrain.total_loss_from(data_loss, model=model)

Usage:
  python examples/keras_custom_loop.py --train_dir=/tmp/tf2_digits \
      --steps=300 --learning_rate=0.05 [--kernel_l2=1e-3] \
      [--strategy=mirrored] [--loop=fixed|broken] \
      [--on_missing=raise|add|warn]

``--strategy=mirrored`` trains on 2 logical CPU devices (MirroredStrategy);
``--batch_size`` is each replica's batch, as it is each clone's in the
trainer (and in TF-Slim's): a step reads batch_size x replicas images.
Progress and ETA go to stderr (tqdm),
TensorBoard scalars (data, regularization and total loss) and checkpoints
(``tf.train.CheckpointManager``) to ``--train_dir``; a restarted run resumes
from the last checkpoint, also after SIGKILL. Exit status: 0 trained,
1 the loss left out regularization, 2 bad flags.
"""

import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

if __package__ in (None, ""):  # Run as a script: make `examples` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

# pylint: disable=g-import-not-at-top
from examples import data_flags
from examples import model_flags
from examples import policy_flags
from examples import training_flags
from examples import datasets

# --train_dir, --batch_size (per replica), --learning_rate and --on_missing
# are the trainers' shared flags (examples/data_flags.py, model_flags.py,
# training_flags.py, policy_flags.py); --on_missing defaults to raise here.
_TRAIN_DIR = data_flags.TRAIN_DIR
_BATCH_SIZE = model_flags.BATCH_SIZE
_LEARNING_RATE = training_flags.LEARNING_RATE
_ON_MISSING = policy_flags.ON_MISSING
_STEPS = flags.DEFINE_integer("steps", 300, "Total training steps.",
                              lower_bound=1)
_WEIGHT_DECAY = flags.DEFINE_float("kernel_l2", 1e-3,
                                   "L2 regularizer factor on the kernels.")
_STRATEGY = flags.DEFINE_enum("strategy", "default", ["default", "mirrored"],
                              "mirrored: 2 logical CPU devices.")
_LOOP = flags.DEFINE_enum("loop", "fixed", ["fixed", "broken"],
                          "broken: the public bug (model.losses left out).")
_CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", 50,
                                         "Steps between checkpoints.",
                                         lower_bound=1)
_SECONDS_PER_STEP = flags.DEFINE_float(
    "seconds_per_step", 0.0, "Sleep per step (tests use it to kill a run "
    "mid-way).")

IMAGE_SIZE = 8
REPLICAS = 2


def configure_devices(strategy: str) -> None:
  """Two logical CPUs for MirroredStrategy; before TensorFlow starts."""
  import tensorflow as tf
  if strategy == "mirrored":
    cpu, = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS)


def make_strategy(strategy: str):
  import tensorflow as tf
  if strategy == "mirrored":
    return tf.distribute.MirroredStrategy(
        [f"/cpu:{i}" for i in range(REPLICAS)])
  return tf.distribute.get_strategy()


def build_model(weight_decay: float, seed: int = 0):
  import tensorflow as tf
  keras = tf.keras
  l2 = keras.regularizers.L2(weight_decay)
  init = keras.initializers.GlorotUniform(seed=seed)
  return keras.Sequential([
      keras.layers.Conv2D(8, 3, activation="relu", kernel_regularizer=l2,
                          kernel_initializer=init,
                          input_shape=(IMAGE_SIZE, IMAGE_SIZE, 1)),
      keras.layers.Flatten(),
      keras.layers.Dense(datasets.DIGITS_NUM_CLASSES, kernel_regularizer=l2,
                         kernel_initializer=init),
  ])


def make_step(model, optimizer, strategy, *, loop: str, on_missing: str,
              global_batch: int):
  """The distributed train step; returns (data, regularization, total)."""
  import tensorflow as tf
  import safetrain
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(
      from_logits=True, reduction="none")

  def replica_step(images, labels):
    with safetrain.GradientTape(on_missing=on_missing) as tape:
      per_example = loss_fn(labels, model(images, training=True))
      data = tf.nn.compute_average_loss(per_example,
                                        global_batch_size=global_batch)
      if loop == "fixed":
        loss = safetrain.total_loss_from(data, model=model)
      else:
        loss = data  # The bug: model.losses left out.
    variables = model.trainable_variables
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    regularization = tf.nn.scale_regularization_loss(tf.add_n(model.losses))
    return data, regularization, loss

  @tf.function
  def step(images, labels):
    results = strategy.run(replica_step, args=(images, labels))
    return tuple(strategy.reduce("SUM", r, axis=None) for r in results)
  return step


def write_scalar(tag: str, value: float, step: int) -> None:
  """A TensorBoard scalar, without needing the tensorboard package."""
  import tensorflow as tf
  metadata = tf.compat.v1.SummaryMetadata(
      plugin_data=tf.compat.v1.SummaryMetadata.PluginData(
          plugin_name="scalars"))
  tf.summary.write(tag, tf.constant(value, tf.float32), step=step,
                   metadata=metadata.SerializeToString())


def train(train_dir: str, *, steps: int, batch_size: int,
          learning_rate: float, weight_decay: float, strategy_name: str,
          loop: str, on_missing: str, checkpoint_every: int,
          seconds_per_step: float = 0.0, images=None, labels=None,
          progress: bool = True):
  """Trains to ``steps``, resuming from ``train_dir``; returns the last losses.

  ``images``/``labels`` replace the digits (tests pass tiny arrays).
  ``batch_size`` is each replica's; the global batch is that times the
  strategy's replicas.
  """
  import tensorflow as tf
  import tqdm
  strategy = make_strategy(strategy_name)
  if images is None:
    images, labels = datasets.load_digits_split("train")
  images = (np.asarray(images, np.float32)[..., None] / 16.0)
  global_batch = batch_size * strategy.num_replicas_in_sync
  dataset = tf.data.Dataset.from_tensor_slices(
      (images, np.asarray(labels, np.int64))).shuffle(
          len(labels), seed=0).repeat().batch(global_batch,
                                              drop_remainder=True)
  with strategy.scope():
    model = build_model(weight_decay)
    optimizer = tf.keras.optimizers.SGD(learning_rate)
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False)
  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer,
                                   step=step_var)
  manager = tf.train.CheckpointManager(checkpoint, train_dir, max_to_keep=3)
  if manager.latest_checkpoint:
    checkpoint.restore(manager.latest_checkpoint)
    logging.info("resumed from step %d (%s)", int(step_var.numpy()),
                 manager.latest_checkpoint)
  start = int(step_var.numpy())
  step = make_step(model, optimizer, strategy, loop=loop,
                   on_missing=on_missing, global_batch=global_batch)
  writer = tf.summary.create_file_writer(os.path.join(train_dir, "train"))
  batches = iter(strategy.experimental_distribute_dataset(dataset))
  data = regularization = total = float("nan")
  with tqdm.tqdm(total=steps, initial=start, disable=not progress,
                 desc="train", unit="step", file=sys.stderr) as bar:
    for _ in range(start, steps):
      x, y = next(batches)
      data, regularization, total = (float(v) for v in step(x, y))
      step_var.assign_add(1)
      current = int(step_var.numpy())
      with writer.as_default():
        for tag, value in (("loss/data", data),
                           ("loss/regularization", regularization),
                           ("loss/total", total)):
          write_scalar(tag, value, current)
      bar.set_postfix(data=f"{data:.3f}", reg=f"{regularization:.4f}")
      bar.update(1)
      if current % checkpoint_every == 0 or current == steps:
        manager.save(checkpoint_number=current)
      if seconds_per_step:
        time.sleep(seconds_per_step)
  writer.flush()
  return {"step": int(step_var.numpy()), "start": start, "data": data,
          "regularization": regularization, "total": total}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _TRAIN_DIR.value:
    raise app.UsageError("--train_dir is required")
  configure_devices(_STRATEGY.value)
  import safetrain
  try:
    result = train(
        _TRAIN_DIR.value, steps=_STEPS.value, batch_size=_BATCH_SIZE.value,
        learning_rate=_LEARNING_RATE.value, weight_decay=_WEIGHT_DECAY.value,
        strategy_name=_STRATEGY.value, loop=_LOOP.value,
        on_missing=_ON_MISSING.value,
        checkpoint_every=_CHECKPOINT_EVERY.value,
        seconds_per_step=_SECONDS_PER_STEP.value)
  except safetrain.MissingRegularizationError as e:
    print(f"{e}\nIn this program: --on_missing=add adds them.",
          file=sys.stderr)
    return 1
  except safetrain.DoubleCountedRegularizationError as e:
    print(e, file=sys.stderr)
    return 1
  print(f"step {result['step']}: data {result['data']:.4f} regularization "
        f"{result['regularization']:.4f} total {result['total']:.4f}")
  return 0


if __name__ == "__main__":
  flags.FLAGS.set_default(_ON_MISSING.name, "raise")
  app.run(main)
