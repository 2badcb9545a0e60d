"""Tests for safetrain.cli: `safetrain audit` and `safetrain run`."""

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from unittest import mock

from absl import flags
from absl.testing import absltest
from absl.testing import parameterized
import pytest
import tensorflow as tf

import audit_testdata
import helpers
import legacy_graphs
import safetrain
import safetrain.slim  # pylint: disable=unused-import
from safetrain.audit import _audit
from safetrain.tf1 import _guard
from safetrain.rule import _policy
from safetrain.rule import _trace
from safetrain import cli

_SCRIPT = os.path.join(os.path.dirname(sys.executable), "safetrain")
_LIBRARY_MODULES = ("safetrain", "safetrain.slim", "safetrain.audit._audit",
                    "safetrain.tf1._guard", "safetrain.rule._trace")


def _call(argv):
  """Parses ``argv`` and runs main: (exit status, stdout, stderr)."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      status = cli.main(cli._parse_flags(list(argv)))  # pylint: disable=protected-access
    except SystemExit as e:
      status = e.code
  return status, out.getvalue(), err.getvalue()


def _env():
  env = dict(os.environ)
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  return env


class FlagsTest(absltest.TestCase):

  def test_neither_library_nor_command_defines_absl_flags(self):
    for module in (_audit, _guard, _trace):  # Every library module loaded.
      self.assertIn(module.__name__, _LIBRARY_MODULES)
    modules = set(flags.FLAGS.flags_by_module_dict())
    for name in _LIBRARY_MODULES:
      self.assertIn(name, sys.modules)
      self.assertNotIn(name, modules)
    # Not the command's either: they live in cli.FLAGS, so a program that
    # imports the cli keeps its own --format or --on_missing.
    self.assertFalse([m for m in modules if m.startswith("safetrain")])
    self.assertEqual(set(cli.FLAGS), {"format", "on_missing", "per-variable",
                                      "version"})

  def test_exit_statuses_are_the_policys(self):
    self.assertEqual((cli.EXIT_OK, cli.EXIT_PROBLEM, cli.EXIT_USAGE),
                     (_policy.EXIT_OK, _policy.EXIT_PROBLEM,
                      _policy.EXIT_BAD_INPUT))

  def test_version(self):
    for args in (["--version"], ["audit", "x", "--version"]):
      status, out, err = _call(["safetrain"] + args)
      self.assertEqual((status, out, err),
                       (0, f"safetrain {safetrain.__version__}\n", ""))

  def test_each_parse_starts_from_the_defaults(self):
    _call(["safetrain", "audit", "--format=json", "--per-variable", "x"])
    cli._parse_flags(["safetrain", "audit", "x"])  # pylint: disable=protected-access
    self.assertEqual((cli._FORMAT.value, cli._PER_VARIABLE.value),  # pylint: disable=protected-access
                     ("text", False))

  def test_help_lists_usage_exit_codes_and_flags_under_any_argv0(self):
    # The console script's argv[0] is the script path and its __main__ is
    # the generated wrapper, which absl's own --help cannot describe.
    for argv0 in (_SCRIPT, "/somewhere/python -m safetrain"):
      status, out, _ = _call([argv0, "--help"])
      self.assertEqual(status, 0)
      self.assertIn("safetrain audit PATH [--format=text|json]", out)
      self.assertRegex(out, r"Exit status:\n  0 .*\n  1 .*\n  2 ")
      self.assertIn("--format: <text|json>", out)
      self.assertIn("--on_missing: <raise|add|warn>", out)


# The command in a fresh interpreter; then whether TensorFlow was loaded.
_LOADS_TENSORFLOW = """
import sys
from safetrain import cli
sys.argv = ["safetrain"] + sys.argv[1:]
try:
  cli.run()
except SystemExit as e:
  status = e.code
print("loaded", "tensorflow" in sys.modules, "tf_slim" in sys.modules, status)
"""


class WithoutTensorflowTest(parameterized.TestCase):
  """What the command answers before, or without, importing TensorFlow."""

  @parameterized.named_parameters(
      ("help", ["--help"], 0),
      ("version", ["--version"], 0),
      ("no_command", [], 2),
      ("audit_without_path", ["audit"], 2),
      ("unknown_flag", ["audit", "x", "--colour=red"], 2),
      ("run_without_command", ["run", "--"], 2),
      # run's own process never needs TensorFlow: the command it starts does.
      ("run", ["run", "--", sys.executable, "-c", "pass"], 0),
  )
  def test_answers_without_importing_tensorflow(self, args, status):
    result = subprocess.run(
        [sys.executable, "-c", _LOADS_TENSORFLOW] + args,
        capture_output=True, text=True, timeout=120, env=_env(), check=False)
    self.assertEqual(result.stdout.splitlines()[-1],
                     f"loaded False False {status}", result.stderr[-2000:])


class AuditCommandTest(parameterized.TestCase):

  def test_buggy_run_exits_1_with_the_table(self):
    status, out, _ = _call(
        ["safetrain", "audit", audit_testdata.seed_runs()["buggy"]])
    self.assertEqual(status, 1)
    self.assertRegex(out, r"missing +conv1/kernel/Regularizer/l2_regularizer:0 "
                     r"+conv1/weights +<- LEFT OUT")
    self.assertIn("PROBLEM in train op 'train_op/control_dependency':\n"
                  "audit: the loss being optimized leaves out 2 of 2", out)

  def test_fixed_run_exits_0_with_json(self):
    status, out, _ = _call(["safetrain", "audit", "--format=json",
                            audit_testdata.seed_runs()["fixed"]])
    self.assertEqual(status, 0)
    data = json.loads(out)
    self.assertTrue(data["ok"])
    self.assertEqual(data["train_ops"][0]["losses"][0]["counts"]["included"],
                     2)

  @parameterized.named_parameters(("text", "text"), ("json", "json"))
  def test_bad_input_exits_2_with_one_line(self, output_format):
    missing = os.path.join(tempfile.gettempdir(), "safetrain-no-such.meta")
    status, out, err = _call(["safetrain", "audit", missing,
                              f"--format={output_format}"])
    self.assertEqual(status, 2)
    self.assertEqual(err, f"[safetrain] audit: {missing}: no such file or "
                     "directory.\n")
    if output_format == "json":
      self.assertEqual(json.loads(out)["exit_code"], 2)
    else:
      self.assertEqual(out, "")

  def test_a_graph_it_cannot_check_yet_says_why_in_one_line(self):
    # Readable, but an op no TensorFlow knows lies on a term's path: the
    # table on stdout, exit 2, and one line on stderr naming the op.
    meta = legacy_graphs.export(legacy_graphs.slim_train_op)
    meta, op = legacy_graphs.unknown_op(
        meta, "conv1/kernel/Regularizer/l2_regularizer", "MadeUpKernel")
    path = legacy_graphs.write(meta, helpers.make_tempdir(self))
    status, out, err = _call(["safetrain", "audit", path])
    self.assertEqual(status, 2)
    self.assertIn("NOT CHECKED", out)
    self.assertEqual(err.count("\n"), 1, err)
    self.assertRegex(err, rf"^\[safetrain\] audit: cannot check {path}: "
                     r"train op '.*': safetrain cannot check it yet: .*"
                     rf"'{op}' has type MadeUpKernel")

  @parameterized.named_parameters(
      ("no_command", [], r"must be a command, one of audit, run; got none"),
      ("unknown_command", ["train"], r"got 'train'"),
      ("audit_without_path", ["audit"], r"audit takes one PATH"),
      ("audit_two_paths", ["audit", "a", "b"], r"got 2 arguments"),
      ("run_without_dashes", ["run", "python", "x.py"],
       r"run takes the command after --"),
      ("run_without_command", ["run", "--"], r"run needs a command after --"),
      ("unknown_flag", ["audit", "x", "--colour=red"],
       r"Unknown command line flag 'colour'"),
      ("bad_format", ["audit", "x", "--format=xml"], r"format"),
  )
  def test_bad_usage_exits_2_with_one_line(self, args, pattern):
    status, out, err = _call(["safetrain"] + args)
    self.assertEqual(status, 2)
    self.assertEqual(out, "")
    self.assertRegex(err, r"^safetrain: .*" + pattern)
    self.assertTrue(err.endswith(". Try 'safetrain --help'.\n"), err)
    self.assertEqual(err.count("\n"), 1, err)

  @pytest.mark.slow
  def test_audit_prints_no_deprecation_notice_of_the_graph(self):
    # A queue-fed graph (slim's input pipelines): importing it calls the
    # deprecated QueueRunner.__init__, whose notice TensorFlow prints (twice,
    # under absl) once per process. It is for the script, not the audit.
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory)
    path = os.path.join(directory, "queued.meta")
    with tf.Graph().as_default():
      queue = tf.queue.FIFOQueue(4, tf.float32, shapes=[[]])
      tf.compat.v1.train.add_queue_runner(tf.compat.v1.train.QueueRunner(
          queue, [queue.enqueue([1.0])]))
      weight = tf.compat.v1.get_variable(
          "w", [], regularizer=tf.keras.regularizers.L2(0.1))
      loss = queue.dequeue() * weight + tf.add_n(
          tf.compat.v1.losses.get_regularization_losses())
      tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss)
      tf.compat.v1.train.export_meta_graph(filename=path)
    result = subprocess.run([_SCRIPT, "audit", path], capture_output=True,
                            text=True, timeout=300, env=_env(), check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    self.assertIn("OK: its train op's loss includes", result.stdout)
    self.assertNotIn("deprecated", result.stderr)

  @pytest.mark.slow
  def test_installed_script_audits(self):
    # The one real subprocess of the audit: the installed console script.
    result = subprocess.run(
        [_SCRIPT, "audit", "--format=json",
         audit_testdata.seed_runs()["buggy"]],
        capture_output=True, text=True, timeout=300, env=_env(), check=False)
    self.assertEqual(result.returncode, 1, result.stderr[-2000:])
    data = json.loads(result.stdout)
    self.assertEqual(data["missing"], [
        "conv1/kernel/Regularizer/l2_regularizer:0",
        "logits/kernel/Regularizer/l2_regularizer:0"])

  @pytest.mark.slow
  def test_command_prints_its_result_without_tensorflow_start_up_lines(self):
    # TensorFlow's C++ INFO lines (CPU features, oneDNN) came before every
    # command's output; they are off in the command's own process unless the
    # user set TF_CPP_MIN_LOG_LEVEL, and `run` hands the command it starts
    # the user's environment.
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    buggy = audit_testdata.seed_runs()["buggy"]
    for command in ([_SCRIPT, "audit", buggy],
                    [sys.executable, "-m", "safetrain", "audit", buggy]):
      result = subprocess.run(command, capture_output=True, text=True,
                              timeout=300, env=env, check=False)
      self.assertEqual(result.returncode, 1, result.stderr[-2000:])
      self.assertIn("PROBLEM in train op", result.stdout)
      self.assertEqual(result.stderr, "")
    show = "import os; print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))"
    for users, child_sees in ((None, "None"), ("0", "0")):
      env.pop("TF_CPP_MIN_LOG_LEVEL", None)
      if users is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = users
      result = subprocess.run(
          [_SCRIPT, "run", "--", sys.executable, "-c", show],
          capture_output=True, text=True, timeout=300, env=env, check=False)
      self.assertEqual(result.returncode, 0, result.stderr[-2000:])
      self.assertEqual(result.stdout, child_sees + "\n")
      if users is None:
        self.assertEqual(
            result.stderr, "safetrain run: warning: the command never loaded "
            "TensorFlow's TF1 optimizers; nothing was checked.\n")


_CHILD = r"""
import json, os, sys
print("child stdout line")
with open(os.environ["CHILD_REPORT"], "w") as f:
  json.dump({"argv": sys.argv[1:],
             "policy": os.environ.get("SAFETRAIN_RUN_ON_MISSING"),
             "awaited": sorted(sys.modules["safetrain.compat._on_import"]
                               .watching()),
             "chained": os.environ.get("CHAINED_MARKER") is not None and
                        os.path.exists(os.environ["CHAINED_MARKER"]),
             "tensorflow_loaded": "tensorflow" in sys.modules}, f)
sys.exit(int(os.environ.get("CHILD_STATUS", "0")))
"""


class RunCommandTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.directory)
    self.report = os.path.join(self.directory, "report.json")

  def _run(self, args, **env):
    err = io.StringIO()
    with mock.patch.dict(os.environ, CHILD_REPORT=self.report, **env), \
        contextlib.redirect_stderr(err):
      status = cli.run_command([sys.executable, "-c", _CHILD] + args, "add")
    with open(self.report) as f:
      seen = json.load(f)
    seen["parent_stderr"] = err.getvalue()
    return status, seen

  def test_arguments_status_and_policy_pass_through(self):
    status, seen = self._run(["--lr=0.1", "data dir", "--", "-x"],
                             CHILD_STATUS="3")
    self.assertEqual(status, 3)
    self.assertEqual(seen["argv"], ["--lr=0.1", "data dir", "--", "-x"])
    self.assertEqual(seen["policy"], "add")
    self.assertEqual(seen["awaited"],
                     ["tensorflow.python.training.optimizer", "tf_slim"])
    self.assertFalse(seen["tensorflow_loaded"])  # Nothing heavy up front.
    self.assertEqual(seen["parent_stderr"],
                     "safetrain run: warning: the command never loaded "
                     "TensorFlow's TF1 optimizers; nothing was checked.\n")

  def test_warns_when_no_python_process_loaded_the_guard(self):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
      status = cli.run_command([sys.executable, "-I", "-c", "pass"])
    self.assertEqual(status, 0)
    self.assertIn("no Python process of the command loaded the guard",
                  err.getvalue())

  def test_existing_sitecustomize_still_runs(self):
    theirs = os.path.join(self.directory, "theirs")
    os.makedirs(theirs)
    marker = os.path.join(self.directory, "marker")
    with open(os.path.join(theirs, "sitecustomize.py"), "w") as f:
      f.write(f"open({marker!r}, 'w').close()\n")
    _, seen = self._run([], PYTHONPATH=theirs, CHAINED_MARKER=marker)
    self.assertTrue(seen["chained"])

  def test_signal_exit_status_as_a_shell_reports_it(self):
    status = cli.run_command(
        [sys.executable, "-c",
         "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"], "raise")
    self.assertEqual(status, 128 + signal.SIGTERM)

  def test_command_that_cannot_start(self):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
      status = cli.run_command([os.path.join(self.directory, "nope")])
    self.assertEqual(status, 2)
    self.assertRegex(err.getvalue(), r"^safetrain run: cannot start '.*nope'")

  @pytest.mark.slow
  def test_seed_script_fails_fast_under_safetrain_run(self):
    # The one real subprocess of `run`: the installed script runs the seed
    # story's unchanged script, which fails at graph-build time.
    script = audit_testdata.seed_runs()["script"]
    logdir = os.path.join(self.directory, "logdir")
    result = subprocess.run(
        [_SCRIPT, "run", "--", sys.executable, script, f"--logdir={logdir}",
         "positional_arg"],
        capture_output=True, text=True, timeout=300, env=_env(), check=False)
    self.assertEqual(result.returncode, 1, result.stderr[-3000:])
    self.assertIn("seed script argv: positional_arg", result.stdout)
    self.assertNotIn("seed script finished", result.stdout)
    self.assertRegex(
        result.stderr,
        r"MissingRegularizationError: \[safetrain\] MomentumOptimizer\."
        r"apply_gradients: the loss being optimized leaves out 2 of 2 "
        r"regularization losses")
    # The opt-out is spelled as this command line takes it.
    self.assertIn("safetrain run --on_missing=warn", result.stderr)
    self.assertIn("safetrain run --on_missing=add", result.stderr)
    self.assertNotIn('on_missing="warn"', result.stderr)
    self.assertIn("'conv1/kernel/Regularizer/l2_regularizer:0'", result.stderr)
    self.assertNotIn("nothing was checked", result.stderr)
    self.assertFalse(os.path.exists(logdir) and any(
        f.endswith(".meta") for f in os.listdir(logdir)))


if __name__ == "__main__":
  absltest.main()
