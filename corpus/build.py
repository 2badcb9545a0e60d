"""Rebuilds the corpus of real saved graphs from fetched repositories.

The corpus is a list (``graphs.tsv``: repository, commit, path, git blob id,
and the ground truth read from each repository's training code) of ``.meta``
files that other people's training runs wrote and committed to public
repositories. None of those files is in this repository. This program takes
each one out of a local copy of its repository, by blob id, so what is
measured is exactly the file listed:

  python corpus/build.py --mirrors=/work/.mirror --out=.corpus

A repository's copy is a git directory at MIRRORS/<owner>+<name> (a bare
repository, or one with a ``.git``), as ``git clone --mirror`` or the
project's fetch tool leaves it. Repositories without a copy are listed at
the end, to be fetched; every file found is checked against its size and
blob id.
"""

import csv
import os
import subprocess

from absl import app
from absl import flags

_LIST = flags.DEFINE_string(
    "list", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         "graphs.tsv"), "The corpus list (TSV).")
_MIRRORS = flags.DEFINE_string(
    "mirrors", "/work/.mirror",
    "Folder of git copies, one per repository, named <owner>+<name>.")
_OUT = flags.DEFINE_string(
    "out", ".corpus", "Where to write the files: OUT/<owner>+<name>/<path>.")


def read_list(path):
  """The corpus rows, as dicts keyed by the header."""
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def local_path(out, row):
  """Where ``row``'s file is written under ``out``."""
  return os.path.join(out, row["repo"].replace("/", "+"), row["path"])


def _git_dir(mirrors, repo):
  base = os.path.join(mirrors, repo.replace("/", "+"))
  for candidate in (os.path.join(base, "repo", ".git"),
                    os.path.join(base, "repo"), os.path.join(base, ".git"),
                    base):
    if os.path.isfile(os.path.join(candidate, "HEAD")):
      return candidate
  return None


def _blob(git_dir, blob):
  result = subprocess.run(["git", "--git-dir", git_dir, "cat-file", "blob",
                           blob], capture_output=True, check=False)
  return result.stdout if result.returncode == 0 else None


def _blob_id(data):
  result = subprocess.run(["git", "hash-object", "--stdin"], input=data,
                          capture_output=True, check=True)
  return result.stdout.decode().strip()


def main(argv):
  del argv
  rows = read_list(_LIST.value)
  written, missing_repos, bad = 0, [], []
  for row in rows:
    git_dir = _git_dir(_MIRRORS.value, row["repo"])
    if git_dir is None:
      if row["repo"] not in missing_repos:
        missing_repos.append(row["repo"])
      continue
    data = _blob(git_dir, row["blob"])
    if data is None or len(data) != int(row["size"]) or (
        _blob_id(data) != row["blob"]):
      bad.append(f"{row['repo']} {row['path']}")
      continue
    target = local_path(_OUT.value, row)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as f:
      f.write(data)
    written += 1
  print(f"{written} of {len(rows)} files written under {_OUT.value}")
  if bad:
    print(f"{len(bad)} not as listed (blob missing, or other size or id):")
    print("\n".join("  " + b for b in bad))
  if missing_repos:
    print(f"{len(missing_repos)} repositories have no copy in "
          f"{_MIRRORS.value}; fetch them first:")
    print("\n".join("  " + r for r in missing_repos))
  return 1 if bad or missing_repos else 0


if __name__ == "__main__":
  app.run(main)
