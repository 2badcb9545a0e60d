"""The installed ``safetrain`` command as a user runs it: quiet and clear.

Each test starts the command for real, in the user's environment (no
``TF_CPP_MIN_LOG_LEVEL``, no ``PYTHONPATH``, outside the repository):

* ``--help`` and ``--version`` print on stdout only, stderr stays empty;
* every exit-2 case prints exactly one line, on stderr;
* ``audit`` of a graph the tests write prints its verdict, stderr empty;
* ``run --on_missing=add`` says what it added.

By default this is the command of the environment running the tests
(``tensorflow-cpu``). ``make test-wheel`` builds the sdist and wheel,
installs the wheel with the ``tensorflow`` extra (the CUDA build, which
prints the most while it loads) into a fresh virtual environment and runs
this file with ``SAFETRAIN_COMMAND`` naming that environment's command.
"""

import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import pytest
import tensorflow as tf

import audit_testdata
from safetrain import _version

COMMAND = os.environ.get("SAFETRAIN_COMMAND") or os.path.join(
    os.path.dirname(sys.executable), "safetrain")
# The Python of the command's environment, for the script `run` starts.
PYTHON = os.path.join(os.path.dirname(COMMAND), "python")


def _user_env():
  env = dict(os.environ)
  for name in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONPATH"):
    env.pop(name, None)
  return env


def _safetrain(*args, cwd=None):
  return subprocess.run([COMMAND, *args], capture_output=True, text=True,
                        timeout=300, env=_user_env(), check=False,
                        cwd=cwd or tempfile.gettempdir())


def _graphs(directory):
  """Unusable inputs the audit refuses: {name: path}."""
  garbage = os.path.join(directory, "garbage.meta")
  with open(garbage, "wb") as f:
    f.write(b"\x00\x01 not a MetaGraph \xff")
  no_train_op = os.path.join(directory, "no_train_op.meta")
  with tf.Graph().as_default():
    tf.compat.v1.get_variable("w", [2], regularizer=tf.keras.regularizers.L2(
        0.1))
    tf.compat.v1.train.export_meta_graph(filename=no_train_op)
  empty = os.path.join(directory, "empty_dir")
  os.makedirs(empty)
  return {"missing": os.path.join(directory, "no-such.meta"),
          "garbage": garbage, "no_train_op": no_train_op,
          "directory_without_meta": empty}


class HelpTest(absltest.TestCase):

  def test_help_is_quiet(self):
    result = _safetrain("--help")
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn("safetrain audit PATH", result.stdout)
    self.assertEqual(result.stderr, "")

  def test_version_is_quiet(self):
    result = _safetrain("--version")
    self.assertEqual((result.returncode, result.stdout, result.stderr),
                     (0, f"safetrain {_version.__version__}\n", ""))


class UsageTest(parameterized.TestCase):
  """Bad command lines: answered before TensorFlow loads."""

  @parameterized.named_parameters(
      ("no_command", []),
      ("unknown_command", ["train"]),
      ("audit_without_path", ["audit"]),
      ("audit_two_paths", ["audit", "a", "b"]),
      ("audit_with_dashes", ["audit", "a", "--", "b"]),
      ("unknown_flag", ["audit", "a", "--colour=red"]),
      ("bad_format", ["audit", "a", "--format=xml"]),
      ("run_without_dashes", ["run", "python", "x.py"]),
      ("run_without_command", ["run", "--"]),
      ("bad_policy", ["run", "--on_missing=maybe", "--", "python"]),
      ("cannot_start", ["run", "--", "/no/such/program"]),
  )
  def test_exits_2_with_one_line(self, args):
    result = _safetrain(*args)
    self.assertEqual(result.returncode, 2, result.stderr)
    self.assertEqual(result.stdout, "")
    self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
    self.assertTrue(result.stderr.endswith(".\n"), result.stderr)


@pytest.mark.slow
class AuditTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.directory = tempfile.mkdtemp()
    cls.graphs = _graphs(cls.directory)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.directory, ignore_errors=True)
    super().tearDownClass()

  def test_verdict_on_stdout_and_nothing_on_stderr(self):
    runs = audit_testdata.seed_runs()
    buggy = _safetrain("audit", runs["buggy"])
    self.assertEqual(buggy.returncode, 1, buggy.stderr)
    self.assertIn("PROBLEM in train op", buggy.stdout)
    self.assertEqual(buggy.stderr, "")
    fixed = _safetrain("audit", "--per-variable", runs["fixed"])
    self.assertEqual(fixed.returncode, 0, fixed.stderr)
    self.assertRegex(fixed.stdout, r"(?m)^OK: ")
    self.assertEqual(fixed.stderr, "")

  @parameterized.parameters("missing", "garbage", "no_train_op",
                            "directory_without_meta")
  def test_unusable_input_exits_2_with_one_line(self, name):
    result = _safetrain("audit", self.graphs[name])
    self.assertEqual(result.returncode, 2, result.stderr)
    self.assertEqual(result.stdout, "")
    self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
    self.assertTrue(result.stderr.startswith("[safetrain] audit: "),
                    result.stderr)


@pytest.mark.slow
class RunTest(absltest.TestCase):

  def test_add_says_what_it_added(self):
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory)
    script = audit_testdata.write_seed_script(directory)
    result = _safetrain("run", "--on_missing=add", "--", PYTHON, script,
                        f"--logdir={directory}/logdir", cwd=directory)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("seed script finished", result.stdout)
    self.assertRegex(
        result.stderr,
        r"\n?W\d{4} [^\n]*\] \[safetrain\] [\w.]+: added 2 regularization "
        r"losses that the loss 'Mean:0' left out \(on_missing=\"add\"\): "
        r"'conv1/kernel/Regularizer/l2_regularizer:0', "
        r"'logits/kernel/Regularizer/l2_regularizer:0'\n")


if __name__ == "__main__":
  absltest.main()
