r"""Trains an image classifier with TF-Slim, regularization included.

Modelled on TF-Slim's ``research/slim/train_image_classifier.py``, with its
flag names and meanings (``--batch_size`` is per clone). The model code is
the seed's: the task loss alone goes to ``slim.learning.create_train_op``.
What matters for regularization is the import, ``import safetrain.slim as
slim``, which makes ``create_train_op`` check that loss against the graph's
regularization losses and, with ``--on_missing`` (the library's
``on_missing``, and ``safetrain run --on_missing``):

* ``add`` (default): add the weight decay terms the loss leaves out, with a
  warning that names them;
* ``raise``: stop with ``MissingRegularizationError`` (what, which, the fix);
* ``warn``: warn and train without them, as plain tf_slim silently does.

Examples:

    # MobileNetV2 on scikit-learn's bundled digits (no download):
    python examples/train_image_classifier.py --train_dir=/tmp/digits \
        --model_name=mobilenet_v2 --depth_multiplier=0.35 \
        --weight_decay=1e-3 --max_number_of_steps=1000

    # TF-Slim format TFRecords (see convert_image_folders.py), fine-tuning
    # only the logits of a checkpoint:
    python examples/train_image_classifier.py --train_dir=/tmp/photos \
        --dataset_dir=data/photos --checkpoint_path=/tmp/digits \
        --checkpoint_exclude_scopes=MobilenetV2/Logits \
        --trainable_scopes=MobilenetV2/Logits

    # Two clones on one machine, 32 images each (64 per step; the
    # regularization is added once, see safetrain.sum_clone_losses):
    python examples/train_image_classifier.py --train_dir=/tmp/digits \
        --num_clones=2 --clone_on_cpu --batch_size=32

    # Synchronous data parallelism, one parameter server and two workers
    # (or set TF_CONFIG instead of the four cluster flags):
    HOSTS="--ps_hosts=host0:2222 --worker_hosts=host1:2222,host2:2222"
    python examples/train_image_classifier.py $HOSTS --job_name=ps
    python examples/train_image_classifier.py $HOSTS --job_name=worker \
        --task_index=0 --sync_replicas --train_dir=/tmp/digits  # chief
    python examples/train_image_classifier.py $HOSTS --job_name=worker \
        --task_index=1 --sync_replicas --train_dir=/tmp/digits

Progress goes to stderr every --log_every_n_steps (step, task, regularization
and total loss, steps/sec, time left); TensorBoard summaries and checkpoints
go to --train_dir. A trainer that is killed and started again with the same
flags resumes from the last checkpoint.

Progress lines are the program's only console output: TensorFlow's C++
startup lines and its TF1 layers' deprecation notices are left out
(``examples/program.py``).

Exit codes: 0 trained, 1 regularization left out (with
--on_missing=raise) or counted more than once, 2 bad usage
(including flag combinations that cannot work, refused when the flags are
parsed) or unusable data.
"""

import dataclasses
import os
import sys
import time
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging

if __package__ in (None, ""):  # Run as a script: make `examples` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,g-bad-import-order,wrong-import-position
from examples import program

if __name__ == "__main__":
  program.import_tensorflow_quietly()

import tensorflow as tf

import safetrain
import safetrain.slim as slim  # The change that checks regularization.

from examples import data_flags
from examples import datasets
from examples import distributed  # --num_clones, --ps_hosts, ...
from examples import model_flags
from examples import policy_flags
from examples import training_flags
from examples.nets import nets_factory

_WEIGHT_DECAY = flags.DEFINE_float(
    "weight_decay", 0.00004, "The L2 scale of the network's kernels.")
_MAX_NUMBER_OF_STEPS = flags.DEFINE_integer(
    "max_number_of_steps", None,
    "Stop at this global step; default: train until stopped.", lower_bound=1)
_LOG_EVERY_N_STEPS = flags.DEFINE_integer(
    "log_every_n_steps", 10, "How often to log progress.", lower_bound=1)
_SAVE_SUMMARIES_SECS = flags.DEFINE_integer(
    "save_summaries_secs", 60, "How often to write TensorBoard summaries.",
    lower_bound=1)
_SAVE_INTERVAL_SECS = flags.DEFINE_integer(
    "save_interval_secs", 600, "How often to save a checkpoint.",
    lower_bound=1)
_TRAINABLE_SCOPES = flags.DEFINE_list(
    "trainable_scopes", [],
    "Train only the variables in these scopes (comma-separated), e.g. "
    "MobilenetV2/Logits; default: all trainable variables.")
_CHECKPOINT_EXCLUDE_SCOPES = flags.DEFINE_list(
    "checkpoint_exclude_scopes", [],
    "Scopes not restored from --checkpoint_path (a new head, say).")
flags.adopt_module_key_flags(model_flags)
flags.adopt_module_key_flags(data_flags)
flags.adopt_module_key_flags(training_flags)
flags.adopt_module_key_flags(policy_flags)
flags.adopt_module_key_flags(distributed)


class UsageError(ValueError):
  """Flags that parse but select nothing to train (exit status 2)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything the trainer reads from its flags; defaults are the flags'."""

  train_dir: str
  model_name: str = model_flags.MODEL_NAME.default
  depth_multiplier: float = model_flags.DEPTH_MULTIPLIER.default
  weight_decay: float = _WEIGHT_DECAY.default
  optimizer: str = training_flags.OPTIMIZER.default
  learning_rate: float = training_flags.LEARNING_RATE.default
  momentum: float = training_flags.MOMENTUM.default
  batch_size: int = model_flags.BATCH_SIZE.default  # Per clone.
  max_number_of_steps: Optional[int] = _MAX_NUMBER_OF_STEPS.default
  log_every_n_steps: int = _LOG_EVERY_N_STEPS.default
  save_summaries_secs: int = _SAVE_SUMMARIES_SECS.default
  save_interval_secs: int = _SAVE_INTERVAL_SECS.default
  dataset_name: Optional[str] = data_flags.DATASET_NAME.default
  dataset_dir: Optional[str] = data_flags.DATASET_DIR.default
  dataset_split_name: str = "train"  # --dataset_split_name's default here.
  num_classes: Optional[int] = data_flags.NUM_CLASSES.default
  train_image_size: Optional[int] = model_flags.TRAIN_IMAGE_SIZE.default
  trainable_scopes: Sequence[str] = ()
  checkpoint_path: Optional[str] = data_flags.CHECKPOINT_PATH.default
  checkpoint_exclude_scopes: Sequence[str] = ()
  on_missing: str = policy_flags.ON_MISSING.default
  seed: Optional[int] = training_flags.SEED.default
  num_clones: int = distributed.NUM_CLONES.default
  clone_on_cpu: bool = distributed.CLONE_ON_CPU.default
  cluster: Optional[distributed.Cluster] = None  # None: one machine.
  sync_replicas: bool = distributed.SYNC_REPLICAS.default
  replicas_to_aggregate: Optional[int] = (
      distributed.REPLICAS_TO_AGGREGATE.default)


def config_from_flags() -> TrainConfig:
  """The ``TrainConfig`` of the parsed command line."""
  return TrainConfig(
      train_dir=data_flags.TRAIN_DIR.value,
      model_name=model_flags.MODEL_NAME.value,
      depth_multiplier=model_flags.DEPTH_MULTIPLIER.value,
      weight_decay=_WEIGHT_DECAY.value,
      optimizer=training_flags.OPTIMIZER.value,
      learning_rate=training_flags.LEARNING_RATE.value,
      momentum=training_flags.MOMENTUM.value,
      batch_size=model_flags.BATCH_SIZE.value,
      max_number_of_steps=_MAX_NUMBER_OF_STEPS.value,
      log_every_n_steps=_LOG_EVERY_N_STEPS.value,
      save_summaries_secs=_SAVE_SUMMARIES_SECS.value,
      save_interval_secs=_SAVE_INTERVAL_SECS.value,
      dataset_name=data_flags.DATASET_NAME.value,
      dataset_dir=data_flags.DATASET_DIR.value,
      dataset_split_name=data_flags.DATASET_SPLIT_NAME.value or "train",
      num_classes=data_flags.NUM_CLASSES.value,
      train_image_size=model_flags.TRAIN_IMAGE_SIZE.value,
      trainable_scopes=tuple(_TRAINABLE_SCOPES.value),
      checkpoint_path=data_flags.CHECKPOINT_PATH.value,
      checkpoint_exclude_scopes=tuple(_CHECKPOINT_EXCLUDE_SCOPES.value),
      on_missing=policy_flags.ON_MISSING.value,
      seed=training_flags.SEED.value,
      num_clones=distributed.NUM_CLONES.value,
      clone_on_cpu=distributed.CLONE_ON_CPU.value,
      cluster=distributed.cluster_from_flags(),
      sync_replicas=distributed.SYNC_REPLICAS.value,
      replicas_to_aggregate=distributed.REPLICAS_TO_AGGREGATE.value)


# --- Graph building: small functions, one clone's model at a time -------------


def configure_optimizer(name: str, learning_rate,
                        momentum: float = 0.9) -> tf.compat.v1.train.Optimizer:
  """The optimizer named by --optimizer, with TF-Slim's trainer's settings."""
  if name == "sgd":
    return tf.compat.v1.train.GradientDescentOptimizer(learning_rate)
  if name == "momentum":
    return tf.compat.v1.train.MomentumOptimizer(learning_rate, momentum)
  if name == "rmsprop":
    return tf.compat.v1.train.RMSPropOptimizer(
        learning_rate, decay=0.9, momentum=momentum, epsilon=1.0)
  if name == "adam":
    return tf.compat.v1.train.AdamOptimizer(learning_rate)
  raise UsageError(f"Unknown optimizer {name!r}; choose one of "
                   f"{', '.join(training_flags.OPTIMIZERS)}.")


def in_scopes(name: str, scopes: Sequence[str]) -> bool:
  """Whether a variable name lies in one of the scopes ('/' boundary)."""
  name = name.split(":")[0]
  for scope in scopes:
    scope = scope.strip().rstrip("/")
    if scope and (name == scope or name.startswith(scope + "/")):
      return True
  return False


def variables_to_train(trainable_scopes: Sequence[str]
                       ) -> Optional[List[tf.Variable]]:
  """The variables --trainable_scopes selects; None means all trainable."""
  scopes = [s for s in trainable_scopes if s.strip()]
  if not scopes:
    return None
  variables = [v for v in tf.compat.v1.trainable_variables()
               if in_scopes(v.op.name, scopes)]
  if not variables:
    raise UsageError(f"--trainable_scopes {','.join(scopes)} matches no "
                     "trainable variable.")
  return variables


class ModelLoss(NamedTuple):
  """One clone's model output and task loss."""

  logits: tf.Tensor
  task_loss: tf.Tensor


def build_model_loss(network_fn: Callable, images: tf.Tensor,
                     labels: tf.Tensor) -> ModelLoss:
  """Runs the network on one batch and adds its cross entropy to LOSSES.

  This is what each clone builds; the network's arg scope adds its weight
  decay terms to REGULARIZATION_LOSSES, as slim nets do.
  """
  logits, _ = network_fn(images)
  task_loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(
      labels=labels, logits=logits)
  return ModelLoss(logits, task_loss)


def make_network_fn(config: TrainConfig, num_classes: int) -> Callable:
  """The network of --model_name, in training mode, with --weight_decay."""
  return nets_factory.get_network_fn(
      config.model_name, num_classes=num_classes,
      weight_decay=config.weight_decay, is_training=True,
      depth_multiplier=config.depth_multiplier)


class TrainPieces(NamedTuple):
  """What ``build_train_op`` returns: the train op and what to watch."""

  train_op: tf.Tensor  # Trains one step; evaluates to the optimized loss.
  global_step: tf.Variable
  task_loss: tf.Tensor
  regularization_loss: tf.Tensor
  learning_rate: tf.Tensor
  logits: tf.Tensor
  report: safetrain.RegularizationReport  # Of the loss actually optimized.
  optimizer: Optional[tf.compat.v1.train.Optimizer] = None


def regularization_loss_sum() -> tf.Tensor:
  """The sum of the graph's regularization losses (0 if there are none)."""
  terms = tf.compat.v1.losses.get_regularization_losses()
  if not terms:
    return tf.constant(0.0, name="regularization_loss")
  return tf.add_n(terms, name="regularization_loss")


def clone_batches(images: tf.Tensor, labels: tf.Tensor, batch_size: int,
                  num_clones: int) -> List[Tuple[tf.Tensor, tf.Tensor]]:
  """Each clone's ``batch_size`` images and labels, from one global batch.

  As in TF-Slim's trainer, --batch_size is per clone: a step reads
  ``batch_size * num_clones`` images, and a batch of any other size fails.
  """
  sizes = [batch_size] * num_clones
  return list(zip(tf.split(images, sizes), tf.split(labels, sizes)))


def build_train_op(config: TrainConfig, images: tf.Tensor, labels: tf.Tensor,
                   num_classes: int) -> TrainPieces:
  """Builds the model, its loss and the train op in the default graph.

  ``images`` and ``labels`` are one step's batch: ``config.batch_size``
  examples for each of ``config.num_clones`` clones.

  The seed's code: the task loss alone is handed to create_train_op, which,
  being safetrain's, applies --on_missing.
  """
  global_step = tf.compat.v1.train.get_or_create_global_step()
  network_fn = make_network_fn(config, num_classes)
  loss = None  # One device: the task loss, as in the seed's code.
  if config.num_clones > 1:
    shares = iter(clone_batches(images, labels, config.batch_size,
                                config.num_clones))
    clones = safetrain.create_clones(
        lambda: build_model_loss(network_fn, *next(shares)),
        num_clones=config.num_clones, clone_on_cpu=config.clone_on_cpu)
    clone_losses = [safetrain.clone_loss(c) for c in clones]
    # Data / N per clone, regularization once (raises if counted twice).
    loss = safetrain.sum_clone_losses(clone_losses)
    model = ModelLoss(clones[0].outputs.logits, tf.math.truediv(
        tf.add_n(clone_losses), float(config.num_clones)))
  else:
    model = build_model_loss(network_fn, images, labels)
  learning_rate = tf.constant(config.learning_rate, tf.float32,
                              name="constant_learning_rate")
  optimizer = configure_optimizer(config.optimizer, learning_rate,
                                  config.momentum)
  optimizer = distributed.sync_optimizer(
      optimizer, config.cluster or distributed.Cluster(),
      sync_replicas=config.sync_replicas,
      replicas_to_aggregate=config.replicas_to_aggregate)
  variables = variables_to_train(config.trainable_scopes)
  train_op = slim.learning.create_train_op(
      model.task_loss if loss is None else loss, optimizer,
      global_step=global_step, variables_to_train=variables,
      colocate_gradients_with_ops=config.num_clones > 1,
      on_missing=config.on_missing)
  report = safetrain.check_regularization(train_op, variables)
  return TrainPieces(train_op, global_step, model.task_loss,
                     regularization_loss_sum(), learning_rate, model.logits,
                     report, optimizer)


def add_summaries(pieces: TrainPieces) -> None:
  """TensorBoard scalars: task, regularization and total loss, learning rate.

  ``losses/total_loss`` is the train op's value, the loss optimized, so it is
  written in the training step that the summary hook runs.
  """
  tf.compat.v1.summary.scalar("losses/task_loss", pieces.task_loss)
  tf.compat.v1.summary.scalar("losses/regularization_loss",
                              pieces.regularization_loss)
  tf.compat.v1.summary.scalar("losses/total_loss", pieces.train_op)
  tf.compat.v1.summary.scalar("learning_rate", pieces.learning_rate)


def ledger_summary(ledger: safetrain.Ledger) -> tf.compat.v1.Summary:
  """The ledger as a TensorBoard text summary (preformatted markdown)."""
  text = "\n".join("    " + line for line in ledger.to_text().splitlines())
  summary = tf.compat.v1.Summary()
  value = summary.value.add(tag="weight_decay_ledger/text_summary")
  value.metadata.plugin_data.plugin_name = "text"
  value.tensor.CopyFrom(tf.compat.v1.make_tensor_proto(text))
  return summary


def write_ledger(pieces: TrainPieces, config: TrainConfig,
                 is_chief: bool) -> Optional[safetrain.Ledger]:
  """Writes the weight-decay ledger once, at start: to the log, and (chief)
  as a TensorBoard text summary in --train_dir."""
  try:
    ledger = safetrain.ledger(pieces.train_op,
                              trainable_scopes=config.trainable_scopes)
  except safetrain.InvalidArgumentError as e:
    logging.warning("No weight-decay ledger: %s", e)
    return None
  logging.info("Weight-decay ledger:\n%s", ledger.to_text())
  if is_chief:
    writer = tf.compat.v1.summary.FileWriterCache.get(config.train_dir)
    writer.add_summary(ledger_summary(ledger), global_step=0)
    writer.flush()
  return ledger


# --- Checkpoints --------------------------------------------------------------


def checkpoint_step(checkpoint: str) -> int:
  """The global step saved in a checkpoint."""
  reader = tf.train.load_checkpoint(checkpoint)
  return int(reader.get_tensor(tf.compat.v1.GraphKeys.GLOBAL_STEP))


def resolve_checkpoint(path: str) -> str:
  """A checkpoint file prefix from a file prefix or a directory."""
  if tf.io.gfile.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    if latest is None:
      raise datasets.DataError(f"--checkpoint_path {path!r} is a directory "
                               "with no checkpoint.")
    return latest
  if not tf.io.gfile.glob(path + ".index") and not tf.io.gfile.exists(path):
    raise datasets.DataError(f"--checkpoint_path {path!r} does not exist.")
  return path


def make_init_fn(checkpoint_path: Optional[str],
                 exclude_scopes: Sequence[str]) -> Optional[Callable]:
  """A Scaffold init_fn that warm-starts from --checkpoint_path, or None.

  The Scaffold runs it only when --train_dir has no checkpoint of its own, so
  a restarted trainer resumes instead of starting over.
  """
  if not checkpoint_path:
    return None
  checkpoint = resolve_checkpoint(checkpoint_path)
  variables = [v for v in slim.get_model_variables()
               if not in_scopes(v.op.name, exclude_scopes)]
  assign_fn = slim.assign_from_checkpoint_fn(checkpoint, variables)
  logging.info("Starting from %s (%d variables; excluded: %s).", checkpoint,
               len(variables), ",".join(exclude_scopes) or "none")

  def init_fn(unused_scaffold, session):
    assign_fn(session)

  return init_fn


# --- The loop -----------------------------------------------------------------


class ProgressHook(tf.compat.v1.train.SessionRunHook):
  """Logs step, losses, steps/sec and time left every ``every_n`` steps."""

  def __init__(self, pieces: TrainPieces, every_n: int,
               last_step: Optional[int]):
    self._fetches = {
        "task": pieces.task_loss,
        "regularization": pieces.regularization_loss,
        "total": pieces.train_op,
    }
    self._global_step = pieces.global_step
    self._every_n = every_n
    self._last_step = last_step
    self._step = 0
    self._mark = None  # (step, time) of the last log line.

  def after_create_session(self, session, coord):
    self._step = int(session.run(self._global_step))
    self._mark = (self._step, time.time())

  def before_run(self, run_context):
    self._step += 1
    if self._step % self._every_n == 0 or self._step == self._last_step:
      return tf.compat.v1.train.SessionRunArgs(self._fetches)
    return None

  def after_run(self, run_context, run_values):
    values = run_values.results
    if not values:
      return
    step = self._step  # Counted, not fetched: a fetch races the update.
    now = time.time()
    rate = (step - self._mark[0]) / max(now - self._mark[1], 1e-9)
    self._mark = (step, now)
    left = ""
    if self._last_step:
      seconds = max(self._last_step - step, 0) / max(rate, 1e-9)
      left = f", {time.strftime('%H:%M:%S', time.gmtime(seconds))} left"
    logging.info(
        "step %d%s: task loss %.4f, regularization loss %.4f, total loss "
        "%.4f (%.1f steps/sec%s)", step,
        f"/{self._last_step}" if self._last_step else "", values["task"],
        values["regularization"], values["total"], rate, left)


def train(config: TrainConfig) -> int:
  """Checks the data, builds the graph and trains; returns the final step.

  Raises ``datasets.DataError`` for unusable data before building anything,
  and ``safetrain.MissingRegularizationError`` with
  ``on_missing="raise"`` when the loss leaves out weight decay.
  """
  cluster = config.cluster or distributed.Cluster()
  if cluster.is_ps:
    distributed.serve(cluster)  # Never returns.
  server = (distributed.start_server(cluster) if cluster.is_distributed
            else None)
  image_size = (config.train_image_size or
                nets_factory.default_image_size(config.model_name))
  info = datasets.get_dataset(config.dataset_name, config.dataset_dir,
                              config.dataset_split_name,
                              num_classes=config.num_classes)
  logging.info("Training %s on %s/%s: %d images, %d classes, %dx%d.",
               config.model_name, info.name, info.split, info.num_examples,
               info.num_classes, image_size, image_size)
  tf.io.gfile.makedirs(config.train_dir)
  latest = tf.train.latest_checkpoint(config.train_dir)
  if latest:
    logging.info("Resuming from %s at global step %d.", latest,
                 checkpoint_step(latest))

  with tf.Graph().as_default():
    if config.seed is not None:
      tf.compat.v1.set_random_seed(config.seed)
    # Variables on the parameter servers (if any), the rest here.
    with tf.compat.v1.device(distributed.device_setter(cluster)):
      dataset = datasets.build_dataset(  # Every clone's batch.
          info, image_size, config.batch_size * config.num_clones,
          seed=None if config.seed is None else
          config.seed + cluster.task_index)  # Workers see other batches.
      images, labels = tf.compat.v1.data.make_one_shot_iterator(
          dataset).get_next()
      pieces = build_train_op(config, images, labels, info.num_classes)
    logging.info(
        "Regularization: the optimized loss includes %d of %d regularization "
        "losses (on_missing=%s).",
        pieces.report.count(safetrain.Status.INCLUDED),
        len(pieces.report.terms), config.on_missing)
    write_ledger(pieces, config, cluster.is_chief)
    add_summaries(pieces)
    init_fn = None if latest else make_init_fn(
        config.checkpoint_path, config.checkpoint_exclude_scopes)
    scaffold = tf.compat.v1.train.Scaffold(init_fn=init_fn)
    hooks = [ProgressHook(pieces, config.log_every_n_steps,
                          config.max_number_of_steps)]
    hooks += distributed.sync_hooks(pieces.optimizer, cluster)
    if config.max_number_of_steps:
      hooks.append(tf.compat.v1.train.StopAtStepHook(
          last_step=config.max_number_of_steps))
    # The CheckpointSaverHook saves every save_interval_secs and, on a clean
    # end, at the last step; Saver writes each checkpoint atomically.
    with tf.compat.v1.train.MonitoredTrainingSession(
        master=server.target if server else "",
        is_chief=cluster.is_chief,
        config=distributed.session_config(cluster),
        checkpoint_dir=config.train_dir, scaffold=scaffold, hooks=hooks,
        # Not 120 s: the chief's sync-replicas queue runner never ends.
        stop_grace_period_secs=5,
        save_checkpoint_secs=config.save_interval_secs,
        save_summaries_secs=config.save_summaries_secs,
        save_summaries_steps=None, log_step_count_steps=None) as session:
      while not session.should_stop():
        session.run(pieces.train_op)
    final = tf.train.latest_checkpoint(config.train_dir)
  if not cluster.is_chief:  # Only the chief saves checkpoints.
    logging.info("Worker %d done.", cluster.task_index)
    return 0
  step = checkpoint_step(final)
  logging.info("Done at global step %d; saved %s.", step, final)
  return step


def main(argv: List[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}", exitcode=2)
  try:
    train(config_from_flags())
  except (datasets.DataError, UsageError,
          distributed.ClusterConfigError) as e:
    logging.error("%s", e)
    return 2
  except safetrain.MissingRegularizationError as e:
    logging.error("%s\nIn this trainer: --on_missing=add adds them.", e)
    return 1
  except safetrain.RegularizationError as e:  # Every other verdict.
    logging.error("%s", e)
    return 1
  return 0


if __name__ == "__main__":
  program.run(main)
