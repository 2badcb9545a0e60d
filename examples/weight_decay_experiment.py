r"""The seed story, measured: does weight decay change training?

Trains the same model (MobileNetV2, depth multiplier 0.35, on the digits
scaled to 32x32) from the same initial weights, on the same batches, for each
weight decay in --weight_decays, two ways:

* ``plain``: the seed's code, ``tf_slim.learning.create_train_op(
  cross_entropy, optimizer)``. The regularization losses are built but never
  optimized, so every weight decay gives the very same run.
* ``safetrain``: ``safetrain.total_loss_from(cross_entropy)`` and
  ``safetrain.create_train_op_safe``. Weight decay now acts.

Shows one progress bar per run on stderr (step, loss, time left), then
prints a markdown table to stdout (final training and validation accuracy,
the L2 norm of the regularized weights, the regularization loss and a digest
of the final weights) and writes it, with a PNG plot of the same, to
--output_dir. TensorFlow's startup lines and its TF1 layers' deprecation
notices are left out (``examples/program.py``).

    python examples/weight_decay_experiment.py --output_dir=out

Runs are deterministic: fixed seeds, one shared start, a fixed batch order,
and single-threaded sessions (--num_threads), so equal rows are equal to the
last bit, not merely close.
"""

import dataclasses
import hashlib
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

if __package__ in (None, ""):  # Run as a script: make `examples` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,g-bad-import-order,wrong-import-position
from examples import program

if __name__ == "__main__":
  program.import_tensorflow_quietly()

import tensorflow as tf
import tqdm

import safetrain
import tf_slim  # The plain runs use tf_slim itself, as the seed did.

from examples import datasets
from examples import model_flags
from examples import train_image_classifier
from examples import training_flags
from examples.nets import nets_factory

MODES = ("plain", "safetrain")
DEFAULT_WEIGHT_DECAYS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)

_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", "out", "Where the table (.md) and plot (.png) are written.")
_WEIGHT_DECAYS = flags.DEFINE_list(
    "weight_decays", [str(w) for w in DEFAULT_WEIGHT_DECAYS],
    "The weight decays to compare.")
# Not --train_steps: examples/ps_worker.py defines that, and the tests import
# both programs into one process, where absl flags are global.
_STEPS_PER_RUN = flags.DEFINE_integer(
    "steps_per_run", 200, "Training steps of each run.", lower_bound=1)
_NUM_THREADS = flags.DEFINE_integer(
    "num_threads", 1,
    "Session threads; 1 makes runs bit-for-bit repeatable.", lower_bound=1)

flags.adopt_module_key_flags(model_flags)
flags.adopt_module_key_flags(training_flags)

_EVAL_BATCH = 512


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """One experiment: the model, training and the weight decays compared."""

  model_name: str = model_flags.MODEL_NAME.default
  depth_multiplier: float = 0.35  # This program's --depth_multiplier.
  weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS
  train_steps: int = _STEPS_PER_RUN.default
  batch_size: int = model_flags.BATCH_SIZE.default
  optimizer: str = training_flags.OPTIMIZER.default
  learning_rate: float = training_flags.LEARNING_RATE.default
  momentum: float = training_flags.MOMENTUM.default
  seed: int = 0  # This program's --seed.
  image_size: Optional[int] = model_flags.TRAIN_IMAGE_SIZE.default
  bn_decay: float = 0.9  # Moving averages that settle within a short run.
  num_threads: int = _NUM_THREADS.default
  modes: Sequence[str] = MODES


@dataclasses.dataclass(frozen=True)
class Row:
  """The outcome of one run."""

  mode: str
  weight_decay: float
  train_accuracy: float
  validation_accuracy: float
  l2_norm: float  # Of the weights the model's arg scope regularizes.
  regularization_loss: float  # The graph's, whether optimized or not.
  weights_digest: str  # sha1 of every final trainable weight.
  weights: Dict[str, np.ndarray] = dataclasses.field(
      default=None, compare=False, repr=False)
  # Per layer (a variable's scope), the L2 factor c of c*sum(w^2) that the
  # optimized loss applies to its kernels, from safetrain.ledger: 0 where
  # the terms are left out.
  applied_decay: Dict[str, float] = dataclasses.field(
      default_factory=dict, compare=False, repr=False)


def applied_decay(ledger: safetrain.Ledger) -> Dict[str, float]:
  """Per layer, the L2 factor the update actually applies to its kernels."""
  found: Dict[str, float] = {}
  for row in ledger.rows:
    if row.kind != "kernel":
      continue
    layer = row.variable.rsplit("/", 1)[0]
    found[layer] = found.get(layer, 0.0) + sum(
        (m.l2 or 0.0) * (m.coefficient or 0.0) for m in row.mechanisms
        if m.acts and m.l2 is not None)
  return found


def _network_fn(config: ExperimentConfig, weight_decay: float,
                is_training: bool):
  extra = ({"bn_decay": config.bn_decay}
           if config.model_name == "mobilenet_v2" else None)
  return nets_factory.get_network_fn(
      config.model_name, num_classes=datasets.DIGITS_NUM_CLASSES,
      weight_decay=weight_decay, is_training=is_training,
      depth_multiplier=config.depth_multiplier, arg_scope_kwargs=extra)


def _image_size(config: ExperimentConfig) -> int:
  return config.image_size or nets_factory.default_image_size(
      config.model_name)


def _session(config: ExperimentConfig, graph: tf.Graph):
  return tf.compat.v1.Session(graph=graph, config=tf.compat.v1.ConfigProto(
      intra_op_parallelism_threads=config.num_threads,
      inter_op_parallelism_threads=config.num_threads))


def _build_model(config: ExperimentConfig, weight_decay: float,
                 images: tf.Tensor, is_training: bool,
                 reuse: Optional[bool] = None):
  """The network on preprocessed digits; dropout gets a fixed op seed.

  An op seed keeps dropout masks independent of how many ops (such as
  regularizers) were built before it, so only weight decay differs.
  """
  with tf_slim.arg_scope([tf_slim.dropout], seed=config.seed + 1):
    logits, _ = _network_fn(config, weight_decay, is_training)(
        datasets.preprocess_digits(images, _image_size(config)), reuse=reuse)
  return logits


def initial_weights(config: ExperimentConfig) -> Dict[str, np.ndarray]:
  """The one start every run begins from: every model variable's value."""
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.set_random_seed(config.seed)
    images = tf.compat.v1.placeholder(tf.uint8, [None, 8, 8])
    _build_model(config, 0.0, images, is_training=True)
    variables = tf.compat.v1.global_variables()
    with _session(config, graph) as session:
      session.run(tf.compat.v1.global_variables_initializer())
      values = session.run(variables)
  return {v.op.name: value for v, value in zip(variables, values)}


def regularized_variable_names(config: ExperimentConfig) -> List[str]:
  """The variables the model's arg scope regularizes, found by safetrain."""
  with tf.Graph().as_default():
    images = tf.compat.v1.placeholder(tf.uint8, [None, 8, 8])
    logits = _build_model(config, 1.0, images, is_training=True)
    loss = tf.reduce_mean(logits)
    report = safetrain.check_regularization(loss)
  return sorted({name for term in report.terms for name in term.variables})


def _batch_order(config: ExperimentConfig, num_examples: int) -> np.ndarray:
  """The index of every training example of every step, shuffled per epoch."""
  rng = np.random.RandomState(config.seed)
  needed = config.train_steps * config.batch_size
  epochs = -(-needed // num_examples)
  order = np.concatenate([rng.permutation(num_examples)
                          for _ in range(epochs)])
  return order[:needed].reshape(config.train_steps, config.batch_size)


def _accuracy(session, predictions, images_ph, images, labels) -> float:
  correct = 0
  for start in range(0, len(labels), _EVAL_BATCH):
    predicted = session.run(predictions, {
        images_ph: images[start:start + _EVAL_BATCH]})
    correct += int(np.sum(predicted == labels[start:start + _EVAL_BATCH]))
  return correct / len(labels)


def run_one(config: ExperimentConfig, mode: str, weight_decay: float,
            start: Dict[str, np.ndarray], regularized: Sequence[str],
            progress: bool = False) -> Row:
  """Trains one model from ``start`` and measures it.

  With ``progress``, shows a bar on stderr: step, loss, time left, and at
  the end the run's accuracies.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
  train_x, train_y = datasets.load_digits_split("train")
  val_x, val_y = datasets.load_digits_split("validation")
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.set_random_seed(config.seed)
    images = tf.compat.v1.placeholder(tf.uint8, [None, 8, 8], name="images")
    labels = tf.compat.v1.placeholder(tf.int64, [None], name="labels")
    logits = _build_model(config, weight_decay, images, is_training=True)
    cross_entropy = tf.compat.v1.losses.sparse_softmax_cross_entropy(
        labels=labels, logits=logits)
    global_step = tf.compat.v1.train.get_or_create_global_step()
    optimizer = train_image_classifier.configure_optimizer(
        config.optimizer, config.learning_rate, config.momentum)
    if mode == "plain":  # The seed's code.
      train_op = tf_slim.learning.create_train_op(
          cross_entropy, optimizer, global_step=global_step)
    else:
      total_loss = safetrain.total_loss_from(cross_entropy)
      train_op = safetrain.create_train_op_safe(
          total_loss, optimizer, global_step=global_step)
    applied = applied_decay(safetrain.ledger(train_op))
    regularization = tf.compat.v1.losses.get_regularization_losses()
    regularization_loss = (tf.add_n(regularization) if regularization
                           else tf.constant(0.0))
    eval_logits = _build_model(config, weight_decay, images,
                               is_training=False, reuse=True)
    predictions = tf.argmax(eval_logits, axis=1)
    by_name = {v.op.name: v for v in tf.compat.v1.global_variables()}
    assigns, feed = [], {}
    for name, value in start.items():
      value_ph = tf.compat.v1.placeholder(value.dtype, value.shape)
      assigns.append(by_name[name].assign(value_ph))
      feed[value_ph] = value
    trainable = tf.compat.v1.trainable_variables()
    init = tf.compat.v1.global_variables_initializer()
    graph.finalize()
    bar = tqdm.tqdm(total=config.train_steps, disable=not progress,
                    desc=f"{mode:>9} weight decay {weight_decay:<6g}",
                    unit="step", file=sys.stderr, dynamic_ncols=True)
    with bar, _session(config, graph) as session:
      session.run(init)
      session.run(assigns, feed)
      for batch in _batch_order(config, len(train_y)):
        loss = session.run(train_op, {images: train_x[batch],
                                      labels: train_y[batch]})
        bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
        bar.update()
      train_accuracy = _accuracy(session, predictions, images, train_x,
                                 train_y)
      validation_accuracy = _accuracy(session, predictions, images, val_x,
                                      val_y)
      bar.set_postfix_str(f"loss {loss:.4f}, train {train_accuracy:.4f}, "
                          f"validation {validation_accuracy:.4f}")
      reg_value = float(session.run(regularization_loss))
      weights = dict(zip([v.op.name for v in trainable],
                         session.run(trainable)))
  l2_norm = float(np.sqrt(sum(np.sum(np.square(weights[name], dtype=np.float64))
                              for name in regularized)))
  digest = hashlib.sha1()
  for name in sorted(weights):
    digest.update(name.encode())
    digest.update(np.ascontiguousarray(weights[name]).tobytes())
  return Row(mode, weight_decay, train_accuracy, validation_accuracy, l2_norm,
             reg_value, digest.hexdigest()[:10], weights, applied)


def run_experiment(config: ExperimentConfig,
                   progress: bool = False) -> List[Row]:
  """Every mode at every weight decay, all from one start.

  With ``progress``, one bar per run on stderr (``run_one``).
  """
  start = initial_weights(config)
  regularized = regularized_variable_names(config)
  rows = []
  for mode in config.modes:
    for weight_decay in config.weight_decays:
      rows.append(run_one(config, mode, weight_decay, start, regularized,
                          progress=progress))
  return rows


def markdown_table(rows: Sequence[Row]) -> str:
  """The rows as a markdown table."""
  lines = [
      "| mode | weight decay | train accuracy | validation accuracy | "
      "L2 norm of regularized weights | regularization loss | "
      "final weights (sha1) |",
      "|---|---:|---:|---:|---:|---:|---|",
  ]
  for row in rows:
    lines.append(
        f"| {row.mode} | {row.weight_decay:g} | {row.train_accuracy:.4f} | "
        f"{row.validation_accuracy:.4f} | {row.l2_norm:.4f} | "
        f"{row.regularization_loss:.4f} | `{row.weights_digest}` |")
  return "\n".join(lines)


def describe(config: ExperimentConfig) -> str:
  """One line saying what was trained."""
  return (f"{config.model_name} (depth multiplier {config.depth_multiplier:g})"
          f" on the digits at {_image_size(config)}x{_image_size(config)}, "
          f"{config.train_steps} steps of batch {config.batch_size}, "
          f"{config.optimizer} at learning rate {config.learning_rate:g}, "
          f"seed {config.seed}")


def _plot_applied_decay(axis, rows: Sequence[Row], styles) -> None:
  """Per layer, the L2 factor each mode applies at the largest decay."""
  largest = max(row.weight_decay for row in rows)
  layers: List[str] = []
  for row in rows:
    layers.extend(n for n in row.applied_decay if n not in layers)
  for mode in MODES:
    found = [r for r in rows if r.mode == mode and r.weight_decay == largest]
    if found and layers:
      # Points, not a line: neighbouring layers are unrelated (MobileNet's
      # depthwise kernels, undecayed, sit between decayed convolutions).
      style = dict(styles[mode], linestyle="none")
      axis.plot(range(len(layers)),
                [found[0].applied_decay.get(n, 0.0) for n in layers],
                **style)
  axis.set_xlabel(f"layer (kernels, in graph order; {len(layers)} layers)")
  axis.set_ylabel("c of c*sum(w^2)")
  axis.set_title(f"decay applied per layer at weight decay {largest:g} "
                 "(safetrain.ledger)")
  axis.grid(alpha=0.3)


def plot(rows: Sequence[Row], path: str, title: str = "") -> None:
  """Four panels against weight decay, one line per mode, and the decay
  each mode applies per layer (from the ledger), as a PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  panels = (("train_accuracy", "final training accuracy"),
            ("validation_accuracy", "validation accuracy"),
            ("l2_norm", "L2 norm of regularized weights"),
            ("regularization_loss", "regularization loss"))
  decays = sorted({row.weight_decay for row in rows})
  figure, axes = pyplot.subplots(3, 2, figsize=(10, 10.5))
  styles = {"plain": dict(linestyle="--", marker="o", color="tab:red",
                          label="plain tf_slim (seed's code)"),
            "safetrain": dict(linestyle="-", marker="s", color="tab:blue",
                              label="safetrain")}
  for axis, (field, label) in zip(axes.flat, panels):
    for mode in MODES:
      points = {row.weight_decay: getattr(row, field)
                for row in rows if row.mode == mode}
      if points:
        axis.plot(range(len(decays)), [points.get(d, np.nan) for d in decays],
                  **styles[mode])
    axis.set_xticks(range(len(decays)))
    axis.set_xticklabels([f"{d:g}" for d in decays])
    axis.set_xlabel("weight decay")
    axis.set_title(label)
    axis.grid(alpha=0.3)
  axes.flat[0].legend()
  _plot_applied_decay(axes[2, 0], rows, styles)
  axes[2, 1].axis("off")
  if title:
    figure.suptitle(title, fontsize=10)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  pyplot.close(figure)


def write_outputs(config: ExperimentConfig, rows: Sequence[Row],
                  output_dir: str) -> Dict[str, str]:
  """Writes weight_decay_experiment.md and .png; returns their paths."""
  os.makedirs(output_dir, exist_ok=True)
  table_path = os.path.join(output_dir, "weight_decay_experiment.md")
  plot_path = os.path.join(output_dir, "weight_decay_experiment.png")
  with open(table_path, "w") as f:
    f.write(f"Weight decay experiment: {describe(config)}.\n\n")
    f.write(markdown_table(rows) + "\n")
  plot(rows, plot_path, describe(config))
  return {"table": table_path, "plot": plot_path}


def config_from_flags() -> ExperimentConfig:
  try:
    decays = tuple(float(w) for w in _WEIGHT_DECAYS.value)
  except ValueError:
    raise app.UsageError(f"--weight_decays must be numbers, got "
                         f"{_WEIGHT_DECAYS.value}.", exitcode=2) from None
  return ExperimentConfig(
      model_name=model_flags.MODEL_NAME.value,
      depth_multiplier=model_flags.DEPTH_MULTIPLIER.value,
      weight_decays=decays,
      train_steps=_STEPS_PER_RUN.value,
      batch_size=model_flags.BATCH_SIZE.value,
      optimizer=training_flags.OPTIMIZER.value,
      learning_rate=training_flags.LEARNING_RATE.value,
      momentum=training_flags.MOMENTUM.value,
      seed=training_flags.SEED.value or 0,
      image_size=model_flags.TRAIN_IMAGE_SIZE.value,
      num_threads=_NUM_THREADS.value)


def main(argv: List[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}", exitcode=2)
  config = config_from_flags()
  logging.info("Training %s: %d runs.", describe(config),
               len(config.modes) * len(config.weight_decays))
  began = time.time()
  rows = run_experiment(config, progress=True)
  paths = write_outputs(config, rows, _OUTPUT_DIR.value)
  print(f"Weight decay experiment: {describe(config)}.\n")
  print(markdown_table(rows))
  print(f"\ntable: {paths['table']}\nplot:  {paths['plot']}\n"
        f"({time.time() - began:.0f} s)")
  return 0


if __name__ == "__main__":
  # This program's defaults for the flags it shares with the trainer.
  flags.FLAGS.set_default("depth_multiplier",
                          ExperimentConfig.depth_multiplier)
  flags.FLAGS.set_default("seed", ExperimentConfig.seed)
  program.run(main)
