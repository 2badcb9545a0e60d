"""Parameter servers: cluster flags, TF_CONFIG, and a real synchronous run.

The multi-process test starts one parameter server and two workers of
``examples/ps_worker.py`` as real processes on 127.0.0.1 (free ports, one
deadline for the whole run, every process ended by its own id), trains a few
synchronous steps with the safe train op, and checks that each worker's loss
includes the regularization exactly once and that a synchronous step updates
the weights as a single-device step on the whole batch does. Worker 1 gets
its cluster from ``TF_CONFIG`` alone.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from absl import flags
from absl.testing import absltest
from absl.testing import flagsaver
from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf
import tf_slim

import safetrain

from examples import distributed
from examples import ps_worker

import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "ps_worker.py")
STEPS = 3
DEADLINE_S = 90  # For the whole cluster run; it takes about 15 s.


def _free_ports(count):
  sockets = []
  try:
    for _ in range(count):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind(("127.0.0.1", 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def _single_device_steps(steps, construction="safe"):
  """Weights after ``steps`` single-device steps on the whole batch."""
  with tf.Graph().as_default():
    images, labels = ps_worker.batch()
    loss = ps_worker.data_loss(images, labels)
    if construction == "safe":
      loss = safetrain.total_loss_from(loss)
    elif construction == "doubled":
      loss = safetrain.total_loss_from(loss) + tf.add_n(
          helpers.regularization())
    train_op = tf_slim.learning.create_train_op(
        loss, tf.compat.v1.train.GradientDescentOptimizer(
            ps_worker.LEARNING_RATE))
    variables = tf.compat.v1.trainable_variables()
    with tf.compat.v1.Session(config=helpers.session_config()) as session:
      session.run(tf.compat.v1.global_variables_initializer())
      for _ in range(steps):
        session.run(train_op)
      return {v.op.name: value
              for v, value in zip(variables, session.run(variables))}


def _first_losses(num_workers):
  """Each worker's data loss and the regularization at the start."""
  result = []
  for task in range(num_workers):
    with tf.Graph().as_default():
      data = ps_worker.data_loss(*ps_worker.batch(task, num_workers))
      regularization = tf.add_n(helpers.regularization())
      with tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        result.append(session.run([data, regularization]))
  return result


def _differs(got, want):
  return any(not np.allclose(got[n], want[n], rtol=1e-5, atol=1e-6)
             for n in want)


@pytest.mark.slow
class ClusterRunTest(absltest.TestCase):

  def _start(self, args, log_path, env):
    log = open(log_path, "w")
    self.addCleanup(log.close)
    process = subprocess.Popen([sys.executable, SCRIPT] + args, stdout=log,
                               stderr=subprocess.STDOUT, env=env,
                               cwd=ROOT)
    self.addCleanup(_end, process)
    return process

  def test_sync_workers_count_regularization_once(self):
    directory = tempfile.mkdtemp(prefix="safetrain_ps_test_")
    self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    ps, worker0, worker1 = (f"127.0.0.1:{p}" for p in _free_ports(3))
    cluster_flags = [f"--ps_hosts={ps}", f"--worker_hosts={worker0},{worker1}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    worker_flags = ["--sync_replicas", f"--train_steps={STEPS}",
                    "--max_wait_secs=60"]
    results = [os.path.join(directory, f"worker{i}.json") for i in (0, 1)]
    processes = [
        self._start(cluster_flags + ["--job_name=ps", "--task_index=0"],
                    os.path.join(directory, "ps.log"), env),
        self._start(cluster_flags + ["--job_name=worker", "--task_index=0",
                                     f"--result_file={results[0]}"] +
                    worker_flags, os.path.join(directory, "worker0.log"),
                    env),
        # Worker 1 learns the cluster from TF_CONFIG alone.
        self._start([f"--result_file={results[1]}"] + worker_flags,
                    os.path.join(directory, "worker1.log"),
                    dict(env, TF_CONFIG=json.dumps({
                        "cluster": {"ps": [ps], "worker": [worker0, worker1]},
                        "task": {"type": "worker", "index": 1}}))),
    ]
    deadline = time.monotonic() + DEADLINE_S
    # The single-device references, while the cluster starts up.
    references = {c: _single_device_steps(STEPS, c)
                  for c in ("safe", "left_out", "doubled")}
    first_losses = _first_losses(2)
    codes = [_wait(p, deadline) for p in processes[1:]]
    logs = "\n".join(
        f"--- {name}:\n" + _tail(os.path.join(directory, name + ".log"))
        for name in ("ps", "worker0", "worker1"))
    self.assertEqual(codes, [0, 0], logs)
    self.assertIsNone(processes[0].poll(), "the ps died:\n" + logs)
    workers = []
    for path in results:
      with open(path) as f:
        workers.append(json.load(f))

    # Training finished: every worker saw the last step.
    self.assertEqual([w["global_step"] for w in workers], [STEPS, STEPS])
    self.assertEqual([w["is_chief"] for w in workers], [True, False])
    self.assertEqual([len(w["losses"]) for w in workers], [STEPS, STEPS])
    # Each worker's loss includes the regularization once: read from its
    # graph, and measured at the first step (data + regularization).
    for worker in workers:
      self.assertEqual(worker["coefficients"], [1.0, 1.0])
    for worker, (data, regularization) in zip(workers, first_losses):
      self.assertAlmostEqual(worker["losses"][0], data + regularization,
                             places=5)
      self.assertNotAlmostEqual(worker["losses"][0], data, places=3)
    # Synchronous steps update as single-device steps on the whole batch.
    for worker in workers:
      self.assertEqual(sorted(worker["weights"]), sorted(references["safe"]))
      for name, value in references["safe"].items():
        np.testing.assert_allclose(worker["weights"][name], value,
                                   rtol=1e-5, atol=1e-6, err_msg=name)
      # Left out or doubled, the same steps land elsewhere.
      for construction in ("left_out", "doubled"):
        self.assertTrue(_differs(
            {k: np.asarray(v) for k, v in worker["weights"].items()},
            references[construction]), construction)


def _wait(process, deadline):
  try:
    return process.wait(timeout=max(0.0, deadline - time.monotonic()))
  except subprocess.TimeoutExpired:
    return None


def _end(process):
  """Ends one process we started, by its own id, and reaps it."""
  if process.poll() is None:
    process.kill()
    try:
      process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      pass


def _tail(path, size=3000):
  try:
    with open(path) as f:
      return f.read()[-size:]
  except OSError as error:
    return str(error)


class WorkerLossTest(parameterized.TestCase):
  """The worker's graph, built in this process (no cluster needed)."""

  def test_safe_loss_counts_regularization_once(self):
    with tf.Graph().as_default():
      pieces = ps_worker.build(distributed.Cluster(), sync_replicas=False)
    self.assertEqual([t.coefficient for t in pieces.report.terms], [1.0, 1.0])

  @parameterized.named_parameters(
      ("left_out", "left_out", safetrain.MissingRegularizationError,
       r"leaves out 2 of 2 regularization losses"),
      ("doubled", "doubled", safetrain.DoubleCountedRegularizationError,
       r"counted x2 \(expected x1\): "
       r"'conv1/kernel/Regularizer/l2_regularizer:0'"),
  )
  def test_wrong_worker_loss_is_refused(self, construction, error_type,
                                        pattern):
    with tf.Graph().as_default():
      helpers.assert_error(self, error_type, pattern, ps_worker.build,
                           distributed.Cluster(), construction=construction,
                           sync_replicas=False)

  def test_ps_cluster_places_variables_on_the_ps(self):
    cluster = distributed.cluster_from(
        ["127.0.0.1:1"], ["127.0.0.1:2", "127.0.0.1:3"], "worker", 1)
    with tf.Graph().as_default():
      pieces = ps_worker.build(cluster, sync_replicas=True)
      devices = {v.op.name: v.device
                 for v in tf.compat.v1.trainable_variables()}
      loss_device = pieces.loss.device
    self.assertEqual(set(devices.values()), {"/job:ps/task:0"})
    self.assertEqual(loss_device, "/job:worker/task:1")
    self.assertIsInstance(pieces.optimizer,
                          tf.compat.v1.train.SyncReplicasOptimizer)
    self.assertEqual(pieces.optimizer._replicas_to_aggregate, 2)  # pylint: disable=protected-access

  def test_clones_under_the_ps_device_setter(self):
    cluster = distributed.cluster_from(
        ["127.0.0.1:1"], ["127.0.0.1:2", "127.0.0.1:3"], "worker", 1)
    images, labels = ps_worker.batch(1, 2)
    shares = iter(zip(np.split(images, 2), np.split(labels, 2)))
    with tf.Graph().as_default():
      with tf.compat.v1.device(distributed.device_setter(cluster)):
        loss = distributed.build_clones_loss(
            lambda: ps_worker.data_loss(*next(shares)), num_clones=2,
            clone_on_cpu=True)
      variables = {v.device for v in tf.compat.v1.trainable_variables()}
      scaled = {op.device for op in loss.graph.get_operations()
                if op.name.endswith("scaled_clone_loss")}
      report = safetrain.assert_counted_once(loss)
    self.assertEqual(variables, {"/job:ps/task:0/device:CPU:0"})
    self.assertEqual(scaled, {"/job:worker/task:1/device:CPU:0"})
    self.assertEqual([t.coefficient for t in report.terms], [1.0, 1.0])


class ClusterFromTest(parameterized.TestCase):

  def test_flags(self):
    cluster = distributed.cluster_from(
        ["127.0.0.1:1"], ["127.0.0.1:2", "127.0.0.1:3"], "worker", 0)
    self.assertTrue(cluster.is_distributed)
    self.assertTrue(cluster.is_chief)
    self.assertEqual(cluster.num_workers, 2)
    self.assertEqual(cluster.worker_device, "/job:worker/task:0")
    self.assertEqual(cluster.spec.as_dict(), {
        "ps": ["127.0.0.1:1"], "worker": ["127.0.0.1:2", "127.0.0.1:3"]})

  def test_tf_config(self):
    config = json.dumps({
        "cluster": {"ps": ["127.0.0.1:1"],
                    "worker": ["127.0.0.1:2", "127.0.0.1:3"]},
        "task": {"type": "worker", "index": 1}})
    cluster = distributed.cluster_from(tf_config=config)
    self.assertEqual((cluster.job_name, cluster.task_index), ("worker", 1))
    self.assertFalse(cluster.is_chief)

  def test_tf_config_with_a_chief_job(self):
    config = json.dumps({
        "cluster": {"chief": ["127.0.0.1:4"], "ps": ["127.0.0.1:1"],
                    "worker": ["127.0.0.1:2"]},
        "task": {"type": "chief", "index": 0}})
    cluster = distributed.cluster_from(tf_config=config)
    self.assertTrue(cluster.is_chief)
    self.assertEqual(cluster.num_workers, 2)
    worker = distributed.cluster_from(tf_config=config.replace(
        '"type": "chief"', '"type": "worker"'))
    self.assertFalse(worker.is_chief)

  def test_flags_win_over_tf_config(self):
    config = json.dumps({"cluster": {"ps": ["127.0.0.1:9"],
                                     "worker": ["127.0.0.1:8"]},
                         "task": {"type": "worker", "index": 0}})
    cluster = distributed.cluster_from(["127.0.0.1:1"], ["127.0.0.1:2"],
                                       "ps", 0, config)
    self.assertEqual(cluster.jobs["ps"], ["127.0.0.1:1"])
    self.assertTrue(cluster.is_ps)

  def test_no_cluster_is_local(self):
    cluster = distributed.cluster_from(tf_config="")
    self.assertFalse(cluster.is_distributed)
    self.assertTrue(cluster.is_chief)
    self.assertIsNone(distributed.device_setter(cluster))

  @parameterized.named_parameters(
      ("no_ps", dict(worker_hosts=["127.0.0.1:2"], job_name="worker"),
       "no parameter servers"),
      ("no_workers", dict(ps_hosts=["127.0.0.1:1"], job_name="ps"),
       "no workers"),
      ("no_job", dict(ps_hosts=["127.0.0.1:1"], worker_hosts=["127.0.0.1:2"]),
       "pass --job_name"),
      ("bad_index", dict(ps_hosts=["127.0.0.1:1"],
                         worker_hosts=["127.0.0.1:2"], job_name="worker",
                         task_index=1), "out of range"),
      ("no_port", dict(ps_hosts=["localhost"], worker_hosts=["127.0.0.1:2"],
                       job_name="worker"), "is not host:port"),
      ("job_without_cluster", dict(job_name="worker"), "needs a cluster"),
      ("bad_json", dict(tf_config="{"), "TF_CONFIG is not JSON"),
      ("no_cluster_key", dict(tf_config="{}"), 'TF_CONFIG has no "cluster"'),
      ("evaluator", dict(tf_config=json.dumps({
          "cluster": {"ps": ["a:1"], "worker": ["a:2"], "evaluator": ["a:3"]},
          "task": {"type": "worker", "index": 0}})), "not supported"),
  )
  def test_bad_cluster(self, kwargs, pattern):
    with self.assertRaisesRegex(distributed.ClusterConfigError, pattern):
      distributed.cluster_from(**kwargs)

  def test_sync_replicas_needs_a_cluster(self):
    with self.assertRaisesRegex(distributed.ClusterConfigError,
                                "needs a cluster"):
      distributed.sync_optimizer(
          tf.compat.v1.train.GradientDescentOptimizer(0.1),
          distributed.Cluster(), sync_replicas=True)

  def test_worker_session_config_filters_devices(self):
    cluster = distributed.cluster_from(
        ["127.0.0.1:1"], ["127.0.0.1:2", "127.0.0.1:3"], "worker", 1)
    config = distributed.session_config(cluster)
    self.assertEqual(list(config.device_filters),
                     ["/job:ps", "/job:worker/task:1"])


class TrainerFlagsTest(absltest.TestCase):
  """examples/train_image_classifier.py reads the cluster flags."""

  def test_distributed_flags_reach_the_config(self):
    from examples import train_image_classifier as trainer  # pylint: disable=g-import-not-at-top
    saved = flagsaver.save_flag_values()
    was_parsed = flags.FLAGS.is_parsed()
    try:
      flags.FLAGS.unparse_flags()
      flags.FLAGS([
          "trainer", "--ps_hosts=127.0.0.1:1",
          "--worker_hosts=127.0.0.1:2,127.0.0.1:3", "--job_name=worker",
          "--task_index=1", "--sync_replicas", "--replicas_to_aggregate=2",
          "--num_clones=2", "--clone_on_cpu"])
      config = trainer.config_from_flags()
    finally:
      flags.FLAGS.unparse_flags()
      flagsaver.restore_flag_values(saved)
      if was_parsed:
        flags.FLAGS.mark_as_parsed()
    self.assertEqual((config.num_clones, config.clone_on_cpu), (2, True))
    self.assertEqual((config.sync_replicas, config.replicas_to_aggregate),
                     (True, 2))
    self.assertEqual(config.cluster, distributed.Cluster(
        jobs={"ps": ["127.0.0.1:1"],
              "worker": ["127.0.0.1:2", "127.0.0.1:3"]},
        job_name="worker", task_index=1))
    self.assertFalse(config.cluster.is_chief)


if __name__ == "__main__":
  absltest.main()
