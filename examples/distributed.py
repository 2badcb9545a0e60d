"""Distributed training for the example trainers: clones, parameter servers.

Importing this module defines the flags below (absl flags are global, so
they are defined once, here) and checks their combinations when the flags
are parsed: a cluster that ``cluster_from`` refuses, ``--sync_replicas``
without a cluster and ``--replicas_to_aggregate`` without
``--sync_replicas`` are bad usage before anything is built.

* ``--num_clones`` / ``--clone_on_cpu``: in-graph clones on one machine
  (TF-Slim's ``model_deploy``), each on its own ``--batch_size`` images.
  ``train_image_classifier.py`` builds them with ``safetrain.create_clones``
  and ``safetrain.sum_clone_losses`` (each clone's data loss scaled by 1/N,
  the regularization once); ``build_clones_loss`` here does the same in one
  call when only the total loss is needed.
* ``--ps_hosts`` / ``--worker_hosts`` / ``--job_name`` / ``--task_index`` or
  the ``TF_CONFIG`` environment variable: between-graph replication, read by
  ``cluster_from_flags``. Parameter servers call ``serve`` and never return;
  workers call ``start_server``, build their graph under ``device_setter``,
  wrap the optimizer with ``sync_optimizer`` (``--sync_replicas``,
  ``--replicas_to_aggregate``) and train with the hooks from ``sync_hooks``
  and the device filters of ``session_config``:
  ``train_image_classifier.py`` in a
  ``tf.compat.v1.train.MonitoredTrainingSession``, ``ps_worker.py`` in a
  ``MonitoredSession`` made by ``session_creator``. Each worker's loss is its
  data loss plus the regularization once: the synchronous optimizer
  averages the workers' gradients.

Flags given on the command line win over ``TF_CONFIG``, which looks like
``{"cluster": {"ps": ["host:port"], "worker": ["host:port", ...]},
"task": {"type": "worker", "index": 0}}`` (a ``"chief"`` job, if present,
is worker number 0 of the synchronous group).
"""

import dataclasses
import json
import os
from typing import Any, Callable, List, Mapping, Optional, Sequence

from absl import flags
from absl import logging
import tensorflow as tf

import safetrain

NUM_CLONES = flags.DEFINE_integer(
    "num_clones", 1,
    "In-graph clones of the model on this machine (model_deploy): each "
    "trains on its own --batch_size images; regularization is added once.",
    lower_bound=1)
CLONE_ON_CPU = flags.DEFINE_boolean(
    "clone_on_cpu", False, "Place every clone on the CPU.")
PS_HOSTS = flags.DEFINE_list(
    "ps_hosts", [], "Parameter servers, host:port,host:port (overrides "
    "TF_CONFIG).")
WORKER_HOSTS = flags.DEFINE_list(
    "worker_hosts", [], "Workers, host:port,host:port (overrides TF_CONFIG).")
JOB_NAME = flags.DEFINE_enum(
    "job_name", None, ["ps", "worker", "chief"],
    "This process's job in the cluster.")
TASK_INDEX = flags.DEFINE_integer(
    "task_index", 0, "This process's index within its job.", lower_bound=0)
SYNC_REPLICAS = flags.DEFINE_boolean(
    "sync_replicas", False,
    "Aggregate the workers' gradients synchronously (SyncReplicasOptimizer) "
    "instead of applying each worker's update as it comes.")
REPLICAS_TO_AGGREGATE = flags.DEFINE_integer(
    "replicas_to_aggregate", None,
    "With --sync_replicas: gradients averaged per update; default the number "
    "of workers.", lower_bound=1)

__all__ = (
    "Cluster",
    "ClusterConfigError",
    "build_clones_loss",
    "cluster_from",
    "cluster_from_flags",
    "device_setter",
    "serve",
    "session_config",
    "session_creator",
    "start_server",
    "sync_hooks",
    "sync_optimizer",
)


class ClusterConfigError(ValueError):
  """The cluster flags or TF_CONFIG do not describe a usable cluster."""


@flags.multi_flags_validator(
    ("ps_hosts", "worker_hosts", "job_name", "task_index"),
    message="the cluster flags do not describe a usable cluster")
def _cluster_flags_are_usable(values) -> bool:
  try:
    cluster_from(values["ps_hosts"], values["worker_hosts"],
                 values["job_name"], values["task_index"],
                 os.environ.get("TF_CONFIG"))
  except ClusterConfigError as error:
    raise flags.ValidationError(str(error)) from None
  return True


@flags.multi_flags_validator(
    ("sync_replicas", "replicas_to_aggregate", "ps_hosts", "worker_hosts"),
    message="--sync_replicas and --replicas_to_aggregate need a cluster")
def _sync_flags_agree(values) -> bool:
  if values["replicas_to_aggregate"] is not None and not values[
      "sync_replicas"]:
    raise flags.ValidationError(
        "--replicas_to_aggregate needs --sync_replicas.")
  has_cluster = bool(values["ps_hosts"] or values["worker_hosts"] or
                     os.environ.get("TF_CONFIG", "").strip())
  if values["sync_replicas"] and not has_cluster:
    raise flags.ValidationError(
        "--sync_replicas needs a cluster: give --ps_hosts and "
        "--worker_hosts, or set TF_CONFIG.")
  return True


@dataclasses.dataclass(frozen=True)
class Cluster:
  """Where this process stands in the cluster.

  Attributes:
    jobs: job name to its list of ``host:port`` addresses; empty when
      training on one machine.
    job_name: this process's job (``''`` on one machine).
    task_index: its index in that job.
  """

  jobs: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
  job_name: str = ""
  task_index: int = 0

  @property
  def is_distributed(self) -> bool:
    return bool(self.jobs)

  @property
  def spec(self) -> Optional[tf.train.ClusterSpec]:
    if not self.jobs:
      return None
    return tf.train.ClusterSpec({k: list(v) for k, v in self.jobs.items()})

  @property
  def num_ps(self) -> int:
    return len(self.jobs.get("ps", ()))

  @property
  def num_workers(self) -> int:
    """Workers that compute gradients (the chief included)."""
    return len(self.jobs.get("worker", ())) + len(self.jobs.get("chief", ()))

  @property
  def is_ps(self) -> bool:
    return self.job_name == "ps"

  @property
  def is_chief(self) -> bool:
    """Whether this task initializes the variables (and saves checkpoints)."""
    if not self.is_distributed or self.job_name == "chief":
      return True
    return (self.job_name == "worker" and self.task_index == 0 and
            "chief" not in self.jobs)

  @property
  def worker_device(self) -> str:
    return f"/job:{self.job_name}/task:{self.task_index}"


def cluster_from(ps_hosts: Sequence[str] = (),
                 worker_hosts: Sequence[str] = (),
                 job_name: Optional[str] = None, task_index: int = 0,
                 tf_config: Optional[str] = None) -> Cluster:
  """The cluster from flag values, else from a ``TF_CONFIG`` JSON string.

  Args:
    ps_hosts: parameter server addresses.
    worker_hosts: worker addresses.
    job_name: ``'ps'``, ``'worker'`` or ``'chief'``.
    task_index: index within the job.
    tf_config: the ``TF_CONFIG`` value, used when no hosts are given.

  Returns:
    A ``Cluster``; not distributed when neither describes one.

  Raises:
    ClusterConfigError: what is given does not describe a usable cluster.
  """
  ps_hosts, worker_hosts = list(ps_hosts or ()), list(worker_hosts or ())
  if ps_hosts or worker_hosts:
    jobs = {"ps": ps_hosts, "worker": worker_hosts}
    source = "--ps_hosts/--worker_hosts"
  elif tf_config and tf_config.strip():
    jobs, job_name, task_index = _parse_tf_config(tf_config)
    source = "TF_CONFIG"
  else:
    if job_name is not None:
      raise ClusterConfigError(
          f"--job_name={job_name} needs a cluster: give --ps_hosts and "
          "--worker_hosts, or set TF_CONFIG.")
    return Cluster()
  jobs = {k: list(v) for k, v in jobs.items() if v}
  if not jobs.get("ps"):
    raise ClusterConfigError(
        f"{source}: the cluster has no parameter servers; give at least one "
        "(--ps_hosts=127.0.0.1:2222).")
  if not (jobs.get("worker") or jobs.get("chief")):
    raise ClusterConfigError(f"{source}: the cluster has no workers.")
  if job_name not in jobs:
    raise ClusterConfigError(
        f"{source}: this task's job {job_name!r} is not one of the "
        f"cluster's jobs {sorted(jobs)}; pass --job_name.")
  if not 0 <= task_index < len(jobs[job_name]):
    raise ClusterConfigError(
        f"{source}: task index {task_index} is out of range for job "
        f"{job_name!r}, which has {len(jobs[job_name])} tasks.")
  for hosts in jobs.values():
    for host in hosts:
      if ":" not in host:
        raise ClusterConfigError(
            f"{source}: {host!r} is not host:port.")
  return Cluster(jobs=jobs, job_name=job_name, task_index=task_index)


def _parse_tf_config(text: str):
  try:
    config = json.loads(text)
  except ValueError as error:
    raise ClusterConfigError(f"TF_CONFIG is not JSON: {error}") from None
  if not isinstance(config, dict) or not isinstance(
      config.get("cluster"), dict):
    raise ClusterConfigError(
        'TF_CONFIG has no "cluster": expected {"cluster": {"ps": [...], '
        '"worker": [...]}, "task": {"type": "worker", "index": 0}}.')
  task = config.get("task") or {}
  unknown = set(config["cluster"]) - {"ps", "worker", "chief"}
  if unknown:
    raise ClusterConfigError(
        f"TF_CONFIG: jobs {sorted(unknown)} are not supported here (only "
        "ps, worker and chief).")
  index = task.get("index", 0)
  if isinstance(index, bool) or not isinstance(index, int):
    raise ClusterConfigError(f"TF_CONFIG: task index {index!r} is not an "
                             "integer.")
  return config["cluster"], task.get("type"), index


def cluster_from_flags(environ: Optional[Mapping[str, str]] = None
                       ) -> Cluster:
  """``cluster_from`` with this module's flags and ``TF_CONFIG``."""
  environ = os.environ if environ is None else environ
  return cluster_from(PS_HOSTS.value, WORKER_HOSTS.value, JOB_NAME.value,
                      TASK_INDEX.value, environ.get("TF_CONFIG"))


def session_config(cluster: Cluster, **kwargs: Any
                   ) -> tf.compat.v1.ConfigProto:
  """A config that lets a worker talk only to the ps and itself.

  Without device filters every worker waits for every other worker to come
  up before its session starts.
  """
  config = tf.compat.v1.ConfigProto(allow_soft_placement=True, **kwargs)
  if cluster.is_distributed and not cluster.is_ps:
    config.device_filters.extend(["/job:ps", cluster.worker_device])
  return config


def start_server(cluster: Cluster,
                 config: Optional[tf.compat.v1.ConfigProto] = None
                 ) -> tf.distribute.Server:
  """Starts this task's in-process server."""
  if not cluster.is_distributed:
    raise ClusterConfigError("start_server needs a cluster.")
  return tf.distribute.Server(cluster.spec, job_name=cluster.job_name,
                              task_index=cluster.task_index,
                              config=config or session_config(cluster),
                              start=True)


def serve(cluster: Cluster) -> None:
  """Runs a parameter server: starts it and blocks until killed."""
  logging.info("parameter server %d of %d serving at %s", cluster.task_index,
               cluster.num_ps, cluster.jobs["ps"][cluster.task_index])
  start_server(cluster).join()


def device_setter(cluster: Cluster) -> Optional[Callable[..., str]]:
  """Variables on the parameter servers, other ops on this worker."""
  if not cluster.is_distributed:
    return None
  return tf.compat.v1.train.replica_device_setter(
      worker_device=cluster.worker_device, cluster=cluster.spec)


def sync_optimizer(optimizer: Any, cluster: Cluster, *, sync_replicas: bool,
                   replicas_to_aggregate: Optional[int] = None) -> Any:
  """Wraps ``optimizer`` in ``SyncReplicasOptimizer`` if asked to.

  The synchronous optimizer averages ``replicas_to_aggregate`` gradients per
  update, so each worker's loss must be its own data loss plus the
  regularization exactly once (coefficient 1).
  """
  if not sync_replicas:
    return optimizer
  if not cluster.is_distributed:
    raise ClusterConfigError(
        "--sync_replicas needs a cluster (--ps_hosts, --worker_hosts).")
  return tf.compat.v1.train.SyncReplicasOptimizer(
      optimizer,
      replicas_to_aggregate=replicas_to_aggregate or cluster.num_workers,
      total_num_replicas=cluster.num_workers)


def sync_hooks(optimizer: Any, cluster: Cluster) -> List[Any]:
  """The hooks a ``SyncReplicasOptimizer`` needs; none for others.

  The chief starts the token queue with the fewest tokens that let the
  first step finish (none when every worker's gradient is aggregated). The
  default, ``replicas_to_aggregate`` tokens, lets a worker that starts early
  send two gradients to the first update, so that update is not the average
  over the workers' batches.
  """
  if isinstance(optimizer, tf.compat.v1.train.SyncReplicasOptimizer):
    # pylint: disable=protected-access
    tokens = max(0, optimizer._replicas_to_aggregate -
                 optimizer._total_num_replicas)
    return [optimizer.make_session_run_hook(cluster.is_chief,
                                            num_tokens=tokens)]
  return []


class _WorkerSessionCreator(tf.compat.v1.train.SessionCreator):
  """Waits for the chief's initialization, polling every ``wait_secs``.

  ``tf.compat.v1.train.WorkerSessionCreator`` polls every 30 seconds.
  """

  def __init__(self, scaffold, master: str, config, wait_secs: float,
               max_wait_secs: float):
    self._scaffold = scaffold
    self._master = master
    self._config = config
    self._wait_secs = wait_secs
    self._max_wait_secs = max_wait_secs

  def create_session(self):
    self._scaffold.finalize()
    manager = tf.compat.v1.train.SessionManager(
        local_init_op=self._scaffold.local_init_op,
        local_init_feed_dict=self._scaffold.local_init_feed_dict,
        ready_op=self._scaffold.ready_op,
        ready_for_local_init_op=self._scaffold.ready_for_local_init_op,
        graph=tf.compat.v1.get_default_graph(),
        recovery_wait_secs=self._wait_secs)
    session = manager.wait_for_session(self._master, config=self._config,
                                       max_wait_secs=self._max_wait_secs)
    if session is None:
      raise RuntimeError(
          f"the chief did not initialize the model within "
          f"{self._max_wait_secs} s")
    return session


def session_creator(cluster: Cluster, master: str, *,
                    config: Optional[tf.compat.v1.ConfigProto] = None,
                    scaffold: Optional[tf.compat.v1.train.Scaffold] = None,
                    checkpoint_dir: Optional[str] = None,
                    wait_secs: float = 0.5, max_wait_secs: float = 600
                    ) -> tf.compat.v1.train.SessionCreator:
  """The chief initializes (or restores); other workers wait for it."""
  scaffold = scaffold or tf.compat.v1.train.Scaffold()
  config = config or session_config(cluster)
  if cluster.is_chief:
    return tf.compat.v1.train.ChiefSessionCreator(
        scaffold=scaffold, master=master, config=config,
        checkpoint_dir=checkpoint_dir)
  return _WorkerSessionCreator(scaffold, master, config, wait_secs,
                               max_wait_secs)


def build_clones_loss(model_fn: Callable[[], Any], *, num_clones: int,
                      clone_on_cpu: bool) -> tf.Tensor:
  """Builds ``num_clones`` clones and returns the loss to optimize.

  ``model_fn`` builds one clone's model on 1/num_clones of the batch and
  adds its data loss to ``LOSSES`` (``tf.compat.v1.losses`` does). The
  result is each clone's data loss / N plus the regularization once;
  optimize it with ``create_train_op_safe(..., colocate_gradients_with_ops=
  True)`` so each clone's gradient is computed on its device.
  """
  clones = safetrain.create_clones(model_fn, num_clones=num_clones,
                                   clone_on_cpu=clone_on_cpu)
  return safetrain.sum_clone_losses([safetrain.clone_loss(c) for c in clones])
