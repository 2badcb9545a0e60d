"""Fuzzing the audit with mutated real MetaGraphs: no uncaught exception.

The seed files are the .meta files slim wrote for the seed script (buggy
and fixed). Byte-level cases (truncation, bit flips, random bytes) mostly end
in the parser's fast path; structural cases (nodes deleted or rewired,
collections pointed elsewhere, op types swapped, attributes dropped) parse
and import, and reach the trace and the check. Every case must end in an
``AuditResult`` that renders, or an ``AuditInputError`` with a one-line
message; anything else fails the test with the case that caused it.

The random seed differs per run, to cover more over time; set
SAFETRAIN_FUZZ_SEED to replay a failure (the failure message names it).
"""

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
import tensorflow as tf

import audit_testdata
from safetrain import _audit

_BYTE_CASES = 3000
_STRUCTURAL_CASES = 100


def _byte_mutation(data: bytes, rng: random.Random):
  kind = rng.choice(("truncate", "flip", "random_bytes"))
  mutated = bytearray(data)
  if kind == "truncate":
    mutated = mutated[:rng.randrange(len(mutated))]
  elif kind == "flip":
    for _ in range(rng.randint(1, 4)):
      at = rng.randrange(len(mutated))
      mutated[at] ^= 1 << rng.randrange(8)
  else:
    at = rng.randrange(len(mutated))
    length = rng.randint(1, 16)
    mutated[at:at + length] = bytes(rng.randrange(256) for _ in range(length))
  return kind, bytes(mutated)


def _structural_mutation(base, names, rng: random.Random):
  meta = tf.compat.v1.MetaGraphDef()
  meta.CopyFrom(base)
  nodes = meta.graph_def.node
  kinds = []
  for _ in range(rng.randint(1, 3)):
    kind = rng.choice(("delete_node", "rewire", "collection", "drop_collection",
                       "op_type", "drop_attr"))
    kinds.append(kind)
    node = nodes[rng.randrange(len(nodes))]
    if kind == "delete_node":
      nodes.remove(node)
    elif kind == "rewire" and node.input:
      node.input[rng.randrange(len(node.input))] = (
          rng.choice(names) + rng.choice(("", "", ":1", ":0")))
    elif kind == "collection" and meta.collection_def:
      collection = meta.collection_def[rng.choice(list(meta.collection_def))]
      values = collection.node_list.value
      if values:
        values[rng.randrange(len(values))] = (
            rng.choice(names) + rng.choice(("", ":0")))
    elif kind == "drop_collection" and meta.collection_def:
      del meta.collection_def[rng.choice(list(meta.collection_def))]
    elif kind == "op_type":
      node.op = rng.choice(("Identity", "StopGradient", "NoOp", "Floor",
                            "AddN", "ReadVariableOp"))
    elif kind == "drop_attr" and node.attr:
      del node.attr[rng.choice(list(node.attr))]
  return "+".join(kinds), meta.SerializeToString()


def run_cases(seed: int, meta_paths, progress_path: str):
  """Audits every mutated case; returns (failures, outcomes).

  Before each case its number and kind are written to ``progress_path``, so
  a crash of the whole process (a TensorFlow CHECK failure aborts it) can
  still be traced to the case that caused it.
  """
  rng = random.Random(seed)
  originals = []
  for meta_path in meta_paths:
    with open(meta_path, "rb") as f:
      originals.append(f.read())
  bases = []
  for data in originals:
    base = tf.compat.v1.MetaGraphDef()
    base.ParseFromString(data)
    bases.append((base, [n.name for n in base.graph_def.node]))

  directory = tempfile.mkdtemp()
  try:
    path = os.path.join(directory, "model.ckpt-1.meta")
    failures = []
    outcomes = {"result": 0, "input_error": 0}
    for case in range(_BYTE_CASES + _STRUCTURAL_CASES):
      if case < _BYTE_CASES:
        kind, data = _byte_mutation(rng.choice(originals), rng)
      else:
        base, names = rng.choice(bases)
        kind, data = _structural_mutation(base, names, rng)
      with open(path, "wb") as f:
        f.write(data)
      with open(progress_path, "w") as f:
        f.write(f"case {case} ({kind})")
      try:
        result = _audit.audit_meta_graph(path)
        result.to_text()
        json.dumps(result.to_dict())
        outcomes["result"] += 1
      except _audit.AuditInputError as e:
        outcomes["input_error"] += 1
        if "\n" in str(e):
          failures.append(f"case {case} ({kind}): multi-line message {e!r}")
      except Exception as e:  # pylint: disable=broad-except
        failures.append(f"case {case} ({kind}): {type(e).__name__}: {e}")
  finally:
    shutil.rmtree(directory, ignore_errors=True)
  return failures, outcomes


_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
import fuzz_test
failures, outcomes = fuzz_test.run_cases(int(sys.argv[2]), sys.argv[3:5],
                                         sys.argv[5])
print("RESULT " + json.dumps([failures, outcomes]))
"""


class FuzzTest(absltest.TestCase):

  def test_mutated_meta_graphs_never_raise_uncaught(self):
    seed = int(os.environ.get("SAFETRAIN_FUZZ_SEED",
                              random.SystemRandom().randrange(2**31)))
    runs = audit_testdata.seed_runs()
    metas = [audit_testdata.newest_meta(runs[n]) for n in ("buggy", "fixed")]
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    progress = os.path.join(directory, "progress")
    # A child process: a crash of TensorFlow itself (an abort) then fails
    # this test with the seed and the case, instead of killing the suite.
    start = time.time()
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, os.path.dirname(__file__), str(seed),
         *metas, progress], capture_output=True, text=True, timeout=900)
    elapsed = time.time() - start
    if child.returncode != 0:
      last = open(progress).read() if os.path.exists(progress) else "none"
      self.fail(f"SAFETRAIN_FUZZ_SEED={seed}: the audit process ended with "
                f"status {child.returncode} at {last}:\n"
                f"{child.stderr[-3000:]}")
    line = [l for l in child.stdout.splitlines() if l.startswith("RESULT ")]
    failures, outcomes = json.loads(line[-1][len("RESULT "):])
    self.assertEqual(failures, [], f"SAFETRAIN_FUZZ_SEED={seed}: "
                     f"{len(failures)} uncaught: " + "\n".join(failures[:5]))
    # The cases must reach the analysis, not only the parser's fast path.
    self.assertGreater(outcomes["result"], 50, outcomes)
    self.assertGreater(outcomes["input_error"], 1000, outcomes)
    print(f"fuzz seed {seed}: {outcomes} in {elapsed:.1f}s")


if __name__ == "__main__":
  absltest.main()
