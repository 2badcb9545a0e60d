r"""A small synchronous parameter-server trainer, regularization counted once.

One process per task. Each worker trains a slim CNN with L2 weight decay on
its share of a fixed batch; ``SyncReplicasOptimizer`` averages the workers'
gradients, so each worker's loss is its data loss plus the regularization
exactly once, and one step updates the weights as one single-device step on
the whole batch does. Before building the train op, each worker checks that
with ``safetrain.assert_counted_once``.

Example, on one machine:

    python examples/ps_worker.py --job_name=ps --task_index=0 \
        --ps_hosts=127.0.0.1:2222 \
        --worker_hosts=127.0.0.1:2223,127.0.0.1:2224 &
    for i in 0 1; do
      python examples/ps_worker.py --job_name=worker --task_index=$i \
          --ps_hosts=127.0.0.1:2222 \
          --worker_hosts=127.0.0.1:2223,127.0.0.1:2224 \
          --sync_replicas --train_steps=3 --result_file=/tmp/worker$i.json &
    done

``TF_CONFIG`` may replace the cluster flags. A parameter server runs until
killed. Each worker writes its losses, the global step and the final weights
as JSON to --result_file.

Exit codes: 0 trained, 1 the loss's regularization was refused (left out or
counted more than once), 2 bad usage.
"""

import json
import os
import sys
from typing import Any, Dict, List, NamedTuple, Optional

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

if __package__ in (None, ""):  # Run as a script: make `examples` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,g-bad-import-order
import safetrain
import safetrain.slim as slim

from examples import distributed

CONSTRUCTIONS = ("safe", "left_out", "doubled")

_TRAIN_STEPS = flags.DEFINE_integer(
    "train_steps", 3, "Synchronous steps (global step at the end).",
    lower_bound=1)
_RESULT_FILE = flags.DEFINE_string(
    "result_file", None, "Worker: where to write the results as JSON.")
_LOSS_CONSTRUCTION = flags.DEFINE_enum(
    "loss_construction", "safe", CONSTRUCTIONS,
    "How each worker builds its loss: safe (data + regularization once), or "
    "the mistakes safetrain refuses: left_out, doubled.")
_MAX_WAIT_SECS = flags.DEFINE_float(
    "max_wait_secs", 60.0,
    "A non-chief worker gives up if the chief has not initialized by then.")

BATCH = 8
WEIGHT_DECAY = 0.1
LEARNING_RATE = 0.5
NUM_CLASSES = 3


def batch(task: int = 0, num_workers: int = 1):
  """Worker ``task``'s share of the fixed global batch (numpy)."""
  rng = np.random.RandomState(0)
  images = rng.rand(BATCH, 6, 6, 1).astype(np.float32)
  labels = np.arange(BATCH) % NUM_CLASSES
  return (np.split(images, num_workers)[task],
          np.split(labels, num_workers)[task])


def data_loss(images, labels) -> tf.Tensor:
  """A slim CNN with L2 regularizers; returns the cross entropy only."""
  with slim.arg_scope(
      [slim.conv2d, slim.fully_connected],
      weights_regularizer=slim.l2_regularizer(WEIGHT_DECAY),
      weights_initializer=tf.compat.v1.glorot_uniform_initializer(seed=1)):
    net = slim.conv2d(tf.constant(images), 3, [3, 3], scope="conv1")
    net = slim.flatten(net)
    logits = slim.fully_connected(net, NUM_CLASSES, activation_fn=None,
                                  scope="logits")
  return tf.compat.v1.losses.sparse_softmax_cross_entropy(
      tf.constant(labels), logits)


class Pieces(NamedTuple):
  train_op: tf.Tensor
  loss: tf.Tensor
  optimizer: Any
  global_step: tf.Variable
  report: safetrain.RegularizationReport


def build(cluster: distributed.Cluster, *, construction: str = "safe",
          sync_replicas: bool = True,
          replicas_to_aggregate: Optional[int] = None) -> Pieces:
  """Builds this worker's graph in the default graph.

  Raises ``safetrain.MissingRegularizationError`` or
  ``DoubleCountedRegularizationError`` for the wrong constructions.
  """
  task = cluster.task_index if cluster.is_distributed else 0
  with tf.compat.v1.device(distributed.device_setter(cluster)):
    global_step = tf.compat.v1.train.get_or_create_global_step()
    images, labels = batch(task, max(1, cluster.num_workers))
    loss = data_loss(images, labels)
    if construction == "safe":
      loss = safetrain.total_loss_from(loss)
    elif construction == "doubled":
      loss = safetrain.total_loss_from(loss) + tf.add_n(
          tf.compat.v1.losses.get_regularization_losses())
    report = safetrain.assert_counted_once(loss)
    optimizer = distributed.sync_optimizer(
        tf.compat.v1.train.GradientDescentOptimizer(LEARNING_RATE), cluster,
        sync_replicas=sync_replicas,
        replicas_to_aggregate=replicas_to_aggregate)
    train_op = safetrain.create_train_op_safe(loss, optimizer,
                                              global_step=global_step)
  return Pieces(train_op, loss, optimizer, global_step, report)


class _ResultHook(tf.compat.v1.train.SessionRunHook):
  """Reads the global step and the weights when the session ends."""

  def __init__(self, global_step):
    self._global_step = global_step
    self.result: Dict[str, Any] = {}

  def end(self, session):
    variables = tf.compat.v1.trainable_variables()
    values = session.run(variables)
    self.result["weights"] = {
        v.op.name: value.tolist() for v, value in zip(variables, values)}
    self.result["global_step"] = int(session.run(self._global_step))


def train(cluster: distributed.Cluster, target: str, *, steps: int,
          construction: str, sync_replicas: bool,
          replicas_to_aggregate: Optional[int], max_wait_secs: float
          ) -> Dict[str, Any]:
  """Trains ``steps`` synchronous steps; returns what it measured."""
  with tf.Graph().as_default():
    pieces = build(cluster, construction=construction,
                   sync_replicas=sync_replicas,
                   replicas_to_aggregate=replicas_to_aggregate)
    result_hook = _ResultHook(pieces.global_step)
    hooks = distributed.sync_hooks(pieces.optimizer, cluster) + [
        tf.compat.v1.train.StopAtStepHook(last_step=steps), result_hook]
    config = distributed.session_config(
        cluster, intra_op_parallelism_threads=1,
        inter_op_parallelism_threads=2)
    creator = distributed.session_creator(
        cluster, target, config=config, max_wait_secs=max_wait_secs)
    losses: List[float] = []
    with tf.compat.v1.train.MonitoredSession(
        session_creator=creator, hooks=hooks,
        stop_grace_period_secs=2) as session:
      while not session.should_stop():
        losses.append(float(session.run(pieces.train_op)))
        logging.info("task %d: loss %.6f", cluster.task_index, losses[-1])
    result = dict(result_hook.result)
    result.update(
        task_index=cluster.task_index, is_chief=cluster.is_chief,
        losses=losses,
        coefficients=[t.coefficient for t in pieces.report.terms],
        regularization=[t.name for t in pieces.report.terms])
    return result


def main(argv: List[str]) -> int:
  if len(argv) > 1:
    print(f"unexpected arguments: {argv[1:]}", file=sys.stderr)
    return 2
  try:
    cluster = distributed.cluster_from_flags()
  except distributed.ClusterConfigError as error:
    print(f"ps_worker: {error}", file=sys.stderr)
    return 2
  if not cluster.is_distributed:
    print("ps_worker: needs a cluster: --ps_hosts, --worker_hosts, "
          "--job_name, --task_index, or TF_CONFIG.", file=sys.stderr)
    return 2
  if cluster.is_ps:
    distributed.serve(cluster)
    return 0
  server = distributed.start_server(cluster)
  try:
    result = train(cluster, server.target, steps=_TRAIN_STEPS.value,
                   construction=_LOSS_CONSTRUCTION.value,
                   sync_replicas=distributed.SYNC_REPLICAS.value,
                   replicas_to_aggregate=(
                       distributed.REPLICAS_TO_AGGREGATE.value),
                   max_wait_secs=_MAX_WAIT_SECS.value)
  except safetrain.Error as error:
    print(error, file=sys.stderr)
    return 1
  if _RESULT_FILE.value:
    with open(_RESULT_FILE.value + ".tmp", "w") as f:
      json.dump(result, f)
    os.replace(_RESULT_FILE.value + ".tmp", _RESULT_FILE.value)
  logging.info("task %d: done at global step %s", cluster.task_index,
               result.get("global_step"))
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
