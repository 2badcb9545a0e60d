r"""Audit time at scale: our analysis against TensorFlow's graph import.

Generates training MetaGraphs of about --sizes ops (a deep chain of
regularized layers with two slim train ops: one whose loss leaves the
regularization out, one whose loss includes it), writes each as a .meta
file, and times, for each:

  import    tf.compat.v1.train.import_meta_graph of the parsed MetaGraphDef
  analysis  what safetrain audit adds: refuse attributes the importer
            would abort on, repair what an older TensorFlow
            wrote (audit/_legacy), find the train ops, trace each to its loss
            and variables, find every regularization term (weight decay
            registered by hand too) and check it
  parse     reading the file (before the import)

Targets: analysis / import <= 0.10, and the same analysis cost per op at
every size.

  python benchmarks/audit_scale.py [--sizes=10000,100000,300000]
"""

import os
import shutil
import tempfile
import time

from absl import app
from absl import flags
import tensorflow as tf
import tf_slim

from safetrain.audit import _audit
from safetrain.audit import _legacy
from safetrain.graph import _graph
from safetrain.rule import _trace

_SIZES = flags.DEFINE_list("sizes", ["10000", "100000", "300000"],
                           "Approximate op counts of the generated graphs.")
_REPEATS = flags.DEFINE_integer(
    "repeats", 2, "Timings per measurement (the best is kept); graphs of "
    "more than 100k ops are timed once.")
_KEEP = flags.DEFINE_string("keep_dir", None,
                            "Keep the generated .meta files here.")


def _build(layers: int) -> tf.Graph:
  graph = tf.Graph()
  with graph.as_default():
    h = tf.ones([2, 8])
    for i in range(layers):
      w = tf.compat.v1.get_variable(
          f"layer{i}/weights", [8, 8],
          initializer=tf.compat.v1.initializers.identity(),
          regularizer=tf_slim.l2_regularizer(1e-4))
      h = tf.tanh(tf.matmul(h, w))
    task_loss = tf.reduce_mean(tf.square(h), name="task_loss")
    total_loss = tf.compat.v1.losses.get_total_loss(name="total_loss")
    total_loss = tf.add(total_loss, task_loss, name="total_with_task")
    global_step = tf.compat.v1.train.get_or_create_global_step()
    tf_slim.learning.create_train_op(
        task_loss, tf.compat.v1.train.MomentumOptimizer(0.1, 0.9, name="bug"),
        global_step=global_step)
    tf_slim.learning.create_train_op(
        total_loss, tf.compat.v1.train.MomentumOptimizer(0.1, 0.9, name="ok"),
        global_step=None)
  return graph


_PER_LAYER = []  # (fixed ops, ops per layer), measured once.


def generate(num_ops: int, directory: str) -> str:
  """Writes a training MetaGraph of about ``num_ops`` ops; returns its path."""
  if not _PER_LAYER:
    small = len(_build(50).get_operations())
    per_layer = (len(_build(100).get_operations()) - small) / 50
    _PER_LAYER.append((small - 50 * per_layer, per_layer))
  fixed, per_layer = _PER_LAYER[0]
  graph = _build(max(1, round((num_ops - fixed) / per_layer)))
  path = os.path.join(directory, f"ops{num_ops}.meta")
  with graph.as_default():
    # Passing the GraphDef avoids export_meta_graph's own node loop, which
    # is quadratic in the op count (about 6 minutes for 50k ops on TF 2.21).
    tf.compat.v1.train.export_meta_graph(
        filename=path, graph_def=graph.as_graph_def(add_shapes=True),
        clear_devices=True)
  return path


def _best(function, repeats: int):
  best, value = None, None
  for _ in range(repeats):
    start = time.perf_counter()
    value = function()
    seconds = time.perf_counter() - start
    best = seconds if best is None else min(best, seconds)
  return best, value


def measure(path: str, repeats: int):
  """(ops, parse s, import s, analysis s) for the MetaGraph at ``path``."""
  # pylint: disable=protected-access
  def parse():
    with open(path, "rb") as f:
      return _audit._parse(f.read(), path)

  parse_s, meta = _best(parse, repeats)

  # What the audit does before importing (audit/_legacy) is part of its own
  # cost, so it counts with the analysis. It works in place, so each timing
  # gets its own copy, made outside the timer (the audit copies nothing).
  copies = []
  for _ in range(repeats):
    copies.append(type(meta)())
    copies[-1].CopyFrom(meta)
  repair_s, repairs = _best(lambda: _legacy.repair(copies.pop()), repeats)
  # The attributes the importer would CHECK-fail on, refused before it runs.
  validate_s, refused = _best(lambda: _audit._disallowed_attr(meta), repeats)
  assert refused is None, refused
  assert not repairs.stand_ins and not repairs.dropped

  def import_graph():
    graph = tf.Graph()
    with graph.as_default():
      tf.compat.v1.train.import_meta_graph(meta, clear_devices=True)
    return graph

  import_s, graph = _best(import_graph, repeats)

  def analyze():
    train_ops = _trace.find_train_ops(graph)
    memo = _graph.Memo()  # Fresh each time: nothing carries over.
    return [_audit._audit_train_op(op, graph, memo) for op in train_ops]

  analysis_s, audits = _best(analyze, repeats)
  analysis_s += repair_s + validate_s
  missing = sorted(len(a.missing) for a in audits)
  terms = len(audits[0].reports[0].terms)
  assert missing == [0, terms], missing  # One complete, one leaving all out.
  return len(graph.get_operations()), terms, parse_s, import_s, analysis_s


def main(argv):
  del argv
  directory = _KEEP.value or tempfile.mkdtemp(prefix="audit_scale_")
  os.makedirs(directory, exist_ok=True)
  print("# audit_scale: safetrain audit's analysis vs import_meta_graph\n")
  print(f"TensorFlow {tf.__version__}\n")
  header = (f"{'ops':>8} {'terms':>6} {'parse s':>8} {'import s':>9} "
            f"{'analysis s':>11} {'analysis/import':>16} "
            f"{'import us/op':>13} {'analysis us/op':>15}")
  print(header)
  rows = []
  try:
    for size in (int(s) for s in _SIZES.value):
      path = generate(size, directory)
      repeats = _REPEATS.value if size <= 100_000 else 1
      ops, terms, parse_s, import_s, analysis_s = measure(path, repeats)
      rows.append((ops, analysis_s / ops * 1e6))
      print(f"{ops:>8} {terms:>6} {parse_s:>8.3f} {import_s:>9.2f} "
            f"{analysis_s:>11.3f} {analysis_s / import_s:>16.3f} "
            f"{import_s / ops * 1e6:>13.1f} {analysis_s / ops * 1e6:>15.2f}",
            flush=True)
  finally:
    if not _KEEP.value:
      shutil.rmtree(directory, ignore_errors=True)
  if len(rows) > 1:
    print(f"\nanalysis per-op cost, largest / smallest graph: "
          f"{rows[-1][1] / rows[0][1]:.2f}   (target about 1)")
  print("target: analysis/import <= 0.10 at every size")


if __name__ == "__main__":
  app.run(main)
