"""pytest set-up shared by every test file.

Tests and the programs they start write checkpoints, saved graphs and logs
to temporary directories, and many of them make those with
``tempfile.mkdtemp`` and leave them. Each pytest process (with
pytest-xdist, the controller and every worker) points ``tempfile`` and
``TMPDIR`` at a directory of its own and removes it at the end, so a run
leaves nothing in the system's temporary directory.
"""

import os
import shutil
import tempfile

_ROOT_KEY = "_safetrain_tmp_root"


def pytest_configure(config):
  root = tempfile.mkdtemp(prefix="safetrain_tests_")
  setattr(config, _ROOT_KEY, (root, os.environ.get("TMPDIR")))
  os.environ["TMPDIR"] = root
  tempfile.tempdir = root


def pytest_unconfigure(config):
  root, previous = getattr(config, _ROOT_KEY)
  if previous is None:
    os.environ.pop("TMPDIR", None)
  else:
    os.environ["TMPDIR"] = previous
  tempfile.tempdir = None
  shutil.rmtree(root, ignore_errors=True)
