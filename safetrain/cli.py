r"""safetrain: find regularization that TF1/slim training leaves out.

Usage:
  safetrain audit PATH [--format=text|json] [--per-variable]
  safetrain run [--on_missing=raise|add|warn] -- COMMAND [ARG ...]
  safetrain --help | --version

safetrain audit PATH
  Checks a saved training graph. PATH is a MetaGraph file (model.ckpt-N.meta,
  which slim writes beside every checkpoint) or a training directory (its
  newest .meta file). The graph is imported without a session: nothing runs,
  no variable is restored, no code from the file is executed. For each train
  op it lists every regularization loss as included, missing (left out),
  frozen (regularizes only variables the op does not train), blocked (behind
  a stop-gradient) or unreachable (in another graph). With --per-variable it
  adds the weight-decay ledger: one row per trainable variable (its kind, how
  and how strongly it is decayed, the per-step decay where constant) and its
  findings, problems (regularized variables none of whose terms the loss
  includes; exit status 1, as without it) or information (decayed biases,
  a kernel left undecayed among decayed ones, several terms on a variable).

safetrain run -- COMMAND [ARG ...]
  Runs an unchanged training command, e.g.
      safetrain run -- python train.py --learning_rate=0.1
  with the check installed in every Python process it starts: on the v1
  optimizers' compute_gradients and apply_gradients (slim's create_train_op,
  minimize, model_deploy's per-clone gradients, SyncReplicasOptimizer and
  hand-written loops all pass there), on tf.GradientTape.gradient and on
  Keras optimizers. An update whose loss leaves out regularization, counts
  it twice or too weakly fails at graph-build (or trace) time with the
  report (--on_missing=raise), or gets the left-out terms added (add) or a
  warning (warn). The command's arguments, output and exit status pass
  through unchanged.

Exit status:
  0  audit: no verdict; run: the command's own status
  1  audit: an update has a verdict (left out, doubled, too weak, ...)
  2  bad usage, or input that cannot be read or checked (one line on stderr)
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import List, NoReturn, Sequence

from absl import app
from absl import flags
from absl import logging

# Nothing here imports TensorFlow: --help, --version, usage errors and
# `run` answer without it; `audit` imports it when it starts.
from safetrain import _version
from safetrain.compat import _quiet
from safetrain.guard._run_hook import sitecustomize
from safetrain.rule import _on_missing

__all__ = ("main", "run", "run_command")

# The command's flags, kept apart from absl's global FLAGS: a program that
# imports this module (to call run_command, say) gets none of them, and its
# own --format or --on_missing does not clash with ours.
FLAGS = flags.FlagValues()
_FORMAT = flags.DEFINE_enum(
    "format", "text", ["text", "json"],
    "audit: a readable table (text) or one JSON object (json) on stdout.",
    flag_values=FLAGS)
_PER_VARIABLE = flags.DEFINE_bool(
    "per-variable", False,
    "audit: add the weight-decay ledger, one row per trainable variable.",
    flag_values=FLAGS)
_ON_MISSING = flags.DEFINE_enum(
    "on_missing", "raise", list(_on_missing.CHOICES),
    "run: what the guard does when an update's regularization is wrong: "
    "raise its RegularizationError, add terms left out (other verdicts, "
    "such as a term counted twice, still raise), or warn.",
    flag_values=FLAGS)
_VERSION = flags.DEFINE_bool(
    "version", False, "Print safetrain's version and exit.",
    flag_values=FLAGS)

# Those of safetrain.rule._policy (a test checks), which imports TensorFlow.
EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2

_HELP_FLAGS = frozenset({"--help", "-help", "-h", "-?", "--helpshort",
                         "--helpfull", "-helpfull"})
_COMMANDS = ("audit", "run")


class _UsageError(Exception):
  """Bad command line; exits with EXIT_USAGE."""


def _usage() -> str:
  module = FLAGS.find_module_defining_flag(_FORMAT.name)
  return f"{__doc__}\nflags:\n{FLAGS.module_help(module)}\n"


def _fail_usage(message: str) -> NoReturn:
  """Exits 2 with one line on stderr: what is wrong, and where help is."""
  message = " ".join(message.split())  # Always one line.
  if not message.endswith((".", "?", "!")):
    message += "."
  sys.stderr.write(f"safetrain: {message} Try 'safetrain --help'.\n")
  sys.exit(EXIT_USAGE)


def _parse_flags(argv: List[str]) -> List[str]:
  """absl's parsing, but only before ``--``, exiting 2 on bad flags.

  ``--help`` prints the usage and every flag of this command, whether run as
  the installed ``safetrain`` script or as ``python -m safetrain``, and exits
  0; so does ``--version``, with the version. Everything after ``--`` is the
  command ``run`` starts, untouched. Each parse starts from the defaults.
  """
  if "--" in argv[1:]:
    split = argv.index("--", 1)
    head, tail = argv[:split], argv[split:]
  else:
    head, tail = argv, []
  if any(arg in _HELP_FLAGS for arg in head[1:]):
    sys.stdout.write(_usage())
    sys.exit(EXIT_OK)
  FLAGS.unparse_flags()
  try:
    positional = FLAGS(head)
  except flags.Error as e:
    _fail_usage(str(e))
  flags.FLAGS.mark_as_parsed()  # app.run asks; the command takes none.
  if _VERSION.value:
    sys.stdout.write(f"safetrain {_version.__version__}\n")
    sys.exit(EXIT_OK)
  return list(positional) + tail


def _audit_command(args: Sequence[str]) -> int:
  if len(args) != 1:
    raise _UsageError(
        "audit takes one PATH (a .meta file or a training directory), got "
        f"{len(args)} arguments.")
  with _quiet.tensorflow_quieted():  # TensorFlow loads here.
    return _audit_path(args[0], as_json=_FORMAT.value == "json")


def _audit_path(path: str, as_json: bool) -> int:
  from safetrain.audit import _audit  # pylint: disable=g-import-not-at-top
  try:
    result = _audit.audit_meta_graph(path,
                                     per_variable=_PER_VARIABLE.value)
  except _audit.AuditInputError as e:
    return _input_error(path, str(e), as_json)
  except Exception as e:  # pylint: disable=broad-except
    # A graph our analysis cannot handle is input we cannot check: say so in
    # one line, as for any other unusable input, with details in the log.
    logging.debug("audit of %s failed", path, exc_info=True)
    return _input_error(
        path, f"[safetrain] audit: could not analyze {path}: "
        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
        "(please report this with the file).", as_json)
  if as_json:
    sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
  else:
    sys.stdout.write(result.to_text() + "\n")
  if result.exit_code == EXIT_USAGE:
    # Readable, but not checkable yet: which train op, and what blocked it.
    first = result.unchecked[0]
    more = (f" ({len(result.unchecked)} train ops unchecked)"
            if len(result.unchecked) > 1 else "")
    sys.stderr.write(" ".join(
        f"[safetrain] audit: cannot check {result.path}: train op "
        f"'{first.name}': {first.problem}{more}".split()) + "\n")
  return result.exit_code


def _input_error(path: str, message: str, as_json: bool) -> int:
  message = " ".join(message.split())  # Always one line.
  sys.stderr.write(message + "\n")
  if as_json:
    sys.stdout.write(json.dumps({"path": path, "ok": False,
                                 "exit_code": EXIT_USAGE,
                                 "error": message}) + "\n")
  return EXIT_USAGE


def run_command(command: Sequence[str], on_missing: str = "raise") -> int:
  """Runs ``command`` with the guard installed in its Python processes.

  The guard reaches the command's processes through a ``sitecustomize``
  module on ``PYTHONPATH`` (see ``safetrain/guard/_run_hook``), so the command
  line, working directory, standard streams and exit status are the
  command's own.

  Args:
    command: the program and its arguments, e.g. ``["python", "train.py"]``.
    on_missing: the guard's policy, as in ``create_train_op_safe``.

  Returns:
    The command's exit status (128 + N when signal N ended it), or 2 when it
    cannot be started.
  """
  _on_missing.check(on_missing, "safetrain run")
  command = list(command)
  if not command:
    raise _UsageError("run needs a command after --, e.g. "
                      "'safetrain run -- python train.py'.")
  directory = tempfile.mkdtemp(prefix="safetrain_run_")
  try:
    env = _quiet.child_environ(os.environ)  # The user's, as they had it.
    env[sitecustomize.ON_MISSING_ENV] = on_missing
    env[sitecustomize.MARKERS_ENV] = directory  # The hook's marker files.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.dirname(sitecustomize.__file__),
                    env.get("PYTHONPATH")) if p)
    try:
      process = subprocess.Popen(command, env=env)  # pylint: disable=consider-using-with
    except OSError as e:
      sys.stderr.write(f"safetrain run: cannot start {command[0]!r}: "
                       f"{e.strerror}.\n")
      return EXIT_USAGE

    def forward(signum, unused_frame):
      process.send_signal(signum)

    # Ctrl-C reaches the command (same process group); wait for it to end.
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.SIGTERM: signal.signal(signal.SIGTERM, forward)}
    try:
      status = process.wait()
    finally:
      for signum, handler in previous.items():
        signal.signal(signum, handler)
    _report_coverage(os.listdir(directory))
  finally:
    shutil.rmtree(directory, ignore_errors=True)
  return status if status >= 0 else 128 - status


def _report_coverage(markers: Sequence[str]) -> None:
  """Warns when the guard never reached the command's optimizers."""
  if not any(m.startswith("loaded-") for m in markers):
    sys.stderr.write(
        "safetrain run: warning: no Python process of the command loaded the "
        "guard (not Python, or run with -I, -E or -S?); nothing was "
        "checked.\n")
  elif not any(m.startswith("guarded-") for m in markers):
    sys.stderr.write(
        "safetrain run: warning: the command never loaded TensorFlow's TF1 "
        "optimizers; nothing was checked.\n")


def main(argv: Sequence[str]) -> int:
  """Runs the subcommand in ``argv`` (as parsed by ``_parse_flags``)."""
  args = list(argv[1:])
  try:
    if not args or args[0] not in _COMMANDS:
      given = f"'{args[0]}'" if args else "none"
      raise _UsageError(f"the first argument must be a command, one of "
                        f"{', '.join(_COMMANDS)}; got {given}.")
    if args[0] == "audit":
      if "--" in args:
        raise _UsageError("audit takes no '--'.")
      return _audit_command(args[1:])
    if len(args) < 2 or args[1] != "--":
      raise _UsageError("run takes the command after --: "
                        "'safetrain run [--on_missing=...] -- python "
                        "train.py ARGS'.")
    return run_command(args[2:], _ON_MISSING.value)
  except _UsageError as e:
    _fail_usage(str(e))


def run() -> None:
  """The ``safetrain`` console script (and ``python -m safetrain``)."""
  _quiet.enable()  # This process is the command: quiet TensorFlow's start.
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
