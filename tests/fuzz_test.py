"""Fuzzing the audit with mutated real MetaGraphs: no uncaught exception.

The seed files are the .meta files slim wrote for the seed script (buggy
and fixed). Byte-level cases (truncation, bit flips, random bytes) mostly end
in the parser's fast path; structural cases (nodes deleted or rewired,
collections pointed elsewhere, op types swapped, attributes dropped) parse
and import, and reach the trace and the check. Every case must end in an
``AuditResult`` that renders, or an ``AuditInputError`` with a one-line
message; anything else fails the test with the case that caused it.

The seed is pinned (``PINNED_SEED``), so CI is repeatable and an unrelated
change cannot fail it by chance. To cover more cases, run with
``SAFETRAIN_FUZZ_SEED=random`` (a fresh seed, printed and named in any
failure) or ``SAFETRAIN_FUZZ_SEED=<integer>`` to replay one:

    SAFETRAIN_FUZZ_SEED=random pytest tests/fuzz_test.py -s
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
import pytest
import tensorflow as tf

import audit_testdata
from safetrain.audit import _audit

_BYTE_CASES = 3000
_STRUCTURAL_CASES = 100
PINNED_SEED = 20240611
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fuzz_seed(environ=os.environ) -> int:
  """PINNED_SEED, or SAFETRAIN_FUZZ_SEED: an integer, or 'random'."""
  value = environ.get("SAFETRAIN_FUZZ_SEED", "").strip()
  if not value:
    return PINNED_SEED
  if value.lower() == "random":
    return random.SystemRandom().randrange(2**31)
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"SAFETRAIN_FUZZ_SEED={value!r}: give an integer or "
                     "'random'.") from None


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


def child_main(argv) -> None:
  """``fuzz_test.py --run_cases SEED META META PROGRESS``: prints RESULT."""
  failures, outcomes = run_cases(int(argv[0]), argv[1:3], argv[3])
  print("RESULT " + json.dumps([failures, outcomes]))


class FuzzSeedTest(absltest.TestCase):

  def test_pinned_unless_asked(self):
    self.assertEqual(fuzz_seed({}), PINNED_SEED)
    self.assertEqual(fuzz_seed({"SAFETRAIN_FUZZ_SEED": " 7 "}), 7)
    seeds = {fuzz_seed({"SAFETRAIN_FUZZ_SEED": "random"}) for _ in range(5)}
    self.assertGreater(len(seeds), 1)
    with self.assertRaisesRegex(ValueError, "give an integer or 'random'"):
      fuzz_seed({"SAFETRAIN_FUZZ_SEED": "often"})


@pytest.mark.slow
class FuzzTest(absltest.TestCase):

  def test_mutated_meta_graphs_never_raise_uncaught(self):
    seed = fuzz_seed()
    runs = audit_testdata.seed_runs()
    metas = [audit_testdata.newest_meta(runs[n]) for n in ("buggy", "fixed")]
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    progress = os.path.join(directory, "progress")
    # A child process: a crash of TensorFlow itself (an abort) then fails
    # this test with the seed and the case, instead of killing the suite.
    start = time.time()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (_REPO, env.get("PYTHONPATH")) if p)
    child = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--run_cases", str(seed),
         *metas, progress], capture_output=True, text=True, timeout=900,
        env=env, check=False)
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
  if sys.argv[1:2] == ["--run_cases"]:
    child_main(sys.argv[2:])
  else:
    absltest.main()
