"""Audits every graph of the corpus and compares with the ground truth.

  python corpus/build.py          # the files, from fetched repositories
  python corpus/measure.py        # in this process, fast
  python corpus/measure.py --cli  # through the `safetrain audit` command

For each training graph of ``graphs.tsv`` it records what the audit says
(its verdicts, or why it gave none) with and without ``--per-variable``,
and compares that with the ``expected`` column, which was read from the
repository's training code. It prints the counts the targets are about:
graphs with a verdict, false verdicts, crashes, exit-2 messages of more
than one line, and the two modes disagreeing; then each graph that misses
a target. ``--results`` writes every row's result as TSV; ``--out`` and
``--list`` are build.py's (where the files are, and the list).
"""

import collections
import csv
import os
import subprocess
import sys
import traceback

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build  # pylint: disable=g-import-not-at-top,wrong-import-position

_CLI = flags.DEFINE_bool(
    "cli", False, "Run the `safetrain audit` command once per file (slow; "
    "checks exit codes and that stderr is one line), not the library.")
_RESULTS = flags.DEFINE_string("results", None,
                               "Write each row's result here (TSV).")
_ONLY = flags.DEFINE_string("only", None,
                            "Audit only rows whose repository contains this.")

_VERDICT_NAMES = {"missing": "MISSING", "doubled": "DOUBLED",
                  "too weak": "TOO_WEAK"}


def _library(path, per_variable):
  """(verdict, detail, crash) from safetrain.audit_meta_graph."""
  import safetrain  # pylint: disable=g-import-not-at-top
  try:
    result = safetrain.audit_meta_graph(path, per_variable=per_variable)
  except safetrain.NoTrainOpError as e:
    return "INFERENCE", str(e), False
  except safetrain.AuditInputError as e:
    return "NO_VERDICT", str(e), False
  except Exception:  # pylint: disable=broad-except
    return "CRASH", traceback.format_exc(limit=3), True
  if result.unchecked and not result.verdicts:
    problems = "; ".join(a.problem for a in result.unchecked)
    return "NO_VERDICT", f"unchecked: {problems}", False
  verdicts = [_VERDICT_NAMES.get(v.value, v.value.upper())
              for v in result.verdicts]
  decayed = ""
  if per_variable:
    rows = [r for a in result.train_ops if a.ledger for r in a.ledger.rows]
    decayed = f"{sum(r.decayed for r in rows)}/{len(rows)} decayed"
  return "+".join(verdicts) or "OK", decayed, False


def _command(path, per_variable):
  argv = [sys.executable, "-m", "safetrain", "audit", path, "--format=json"]
  if per_variable:
    argv.append("--per-variable")
  result = subprocess.run(argv, capture_output=True, text=True, check=False)
  lines = result.stderr.strip().splitlines()
  if result.returncode == 2:
    kind = "INFERENCE" if "no train op" in result.stderr else "NO_VERDICT"
    detail = " | ".join(lines)
    return kind, detail, len(lines) != 1
  if result.returncode not in (0, 1):
    return "CRASH", result.stderr[-500:], True
  import json  # pylint: disable=g-import-not-at-top
  verdicts = json.loads(result.stdout)["verdicts"]
  return "+".join(_VERDICT_NAMES.get(v, v.upper()) for v in verdicts) or (
      "OK"), "", False


def main(argv):
  del argv
  rows = build.read_list(build._LIST.value)  # pylint: disable=protected-access
  corpus = build._OUT.value  # pylint: disable=protected-access
  if _ONLY.value:
    rows = [r for r in rows if _ONLY.value in r["repo"]]
  audit = _command if _CLI.value else _library
  results = []
  for i, row in enumerate(rows, 1):
    path = build.local_path(corpus, row)
    if not os.path.exists(path):
      results.append((row, "ABSENT", "", "ABSENT", "", False))
      continue
    plain, detail, bad = audit(path, False)
    per_var, per_detail, per_bad = audit(path, True)
    results.append((row, plain, detail, per_var, per_detail, bad or per_bad))
    print(f"[{i}/{len(rows)}] {plain:<10} {row['repo']}/{row['path']}",
          file=sys.stderr)
  _summary(results)
  if _RESULTS.value:
    with open(_RESULTS.value, "w", encoding="utf-8", newline="") as f:
      writer = csv.writer(f, delimiter="\t", lineterminator="\n")
      writer.writerow(["repo", "path", "expected", "verdict",
                       "per_variable", "detail", "ledger"])
      for row, plain, detail, per_var, per_detail, _ in results:
        writer.writerow([row["repo"], row["path"], row["expected"], plain,
                         per_var, detail.replace("\n", " ")[:300],
                         per_detail.replace("\n", " ")[:300]])


def _summary(results):
  training = [r for r in results if r[0]["kind"] == "training"
              and r[1] != "ABSENT"]
  absent = [r for r in results if r[1] == "ABSENT"]
  verdict = [r for r in training if r[1] not in ("NO_VERDICT", "INFERENCE",
                                                  "CRASH")]
  known = [r for r in verdict if r[0]["expected"] in ("OK", "MISSING",
                                                      "DOUBLED", "TOO_WEAK")]
  false = [r for r in known if r[1] != r[0]["expected"]]
  crashes = [r for r in results if r[1] == "CRASH" or r[3] == "CRASH"]
  lines = [r for r in results if r[5] and r[1] != "CRASH"]
  disagree = [r for r in verdict if r[1] != r[3]]
  share = len(verdict) / len(training) if training else 0.0
  print(f"files: {len(results)} ({len(absent)} not built)")
  print(f"training graphs: {len(training)}; with a verdict: {len(verdict)} "
        f"({share:.1%}); target >= 98%")
  print(f"verdicts with known ground truth: {len(known)}; false: "
        f"{len(false)}; target 0")
  print(f"crashes: {len(crashes)}; exit-2 messages not one line: "
        f"{len(lines)}; audit and --per-variable disagreeing: "
        f"{len(disagree)}")
  counts = collections.Counter((r[0]["expected"], r[1]) for r in training)
  print("expected -> verdict: " + ", ".join(
      f"{e}->{v} {n}" for (e, v), n in sorted(counts.items())))
  for title, group in (("without a verdict", [r for r in training
                                              if r not in verdict]),
                       ("false verdicts", false), ("crashes", crashes),
                       ("disagreeing", disagree)):
    for row, plain, detail, per_var, _, _ in group:
      print(f"  {title}: {row['repo']}/{row['path']}: {plain} / {per_var} "
            f"(expected {row['expected']}): {detail[:200]}")


if __name__ == "__main__":
  app.run(main)
