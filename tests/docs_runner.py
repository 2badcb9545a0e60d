"""Runs the documentation's Python programs, each in a process of its own.

Starting Python and importing TensorFlow takes seconds; a program of the
docs takes a fraction of one. So one server process imports TensorFlow,
tf_slim and Keras once (not safetrain: each program imports it, as a user's
would) and forks a child for each program: every program starts from the
same state, and nothing one program does (graphs, eager mode, Keras names,
flags) reaches another. ``SAFETRAIN_DOCS_FORK=0`` starts a fresh interpreter
for each program instead (slower; to rule the fork out).

    python tests/docs_runner.py          serve: one JSON request a line in,
                                          one JSON result a line out
    python tests/docs_runner.py --once   run one request and exit

A request is a program, ``{"cells": [code, ...], "cwd": dir, "name":
label, "timeout": seconds}``, whose result has, per cell, its ``stdout``,
``stderr`` and ``error`` (``{"type", "public", "message"}`` or None); or a
command, ``{"argv": ["python" or "safetrain", ...], ...}``, run as that
process would run it (the ``safetrain`` console script's entry point), whose
result has its ``output`` (stdout and stderr interleaved) and ``exit``
status. Each result has ``status``: "ok", or what went wrong with the child
("timeout", "crashed: ...").
"""

import json
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _error(e: BaseException) -> Dict[str, Any]:
  name = type(e).__name__
  safetrain = sys.modules.get("safetrain")
  public = safetrain is not None and getattr(safetrain, name, None) is type(e)
  return {"type": name, "public": public, "message": str(e)}


def _redirect(out_dir: str, merge: bool) -> List[str]:
  """Points fds 1 and 2 at files (one file for both with ``merge``)."""
  files = [os.path.join(out_dir, n) for n in (
      ("output", "output") if merge else ("stdout", "stderr"))]
  for fd, path in zip((1, 2), files, strict=True):
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(handle, fd)
    os.close(handle)
  if merge:  # Interleaved as on a terminal, which flushes stdout by line.
    sys.stdout.reconfigure(line_buffering=True)
  return files


def _run_cells(request: Dict[str, Any], out_dir: str) -> Dict[str, Any]:
  """Runs the cells in one namespace, collecting each one's output."""
  sys.path[0:0] = [request["cwd"]]
  sys.argv = [request["name"]]
  files = _redirect(out_dir, merge=False)
  namespace = {"__name__": "__main__"}
  cells = []
  for index, code in enumerate(request["cells"]):
    before = [os.path.getsize(p) for p in files]
    error = None
    name = f"<{request['name']} cell {index + 1}>"
    try:
      exec(compile(code, name, "exec"), namespace)  # pylint: disable=exec-used
    except BaseException as e:  # pylint: disable=broad-except
      traceback.print_exc()
      error = _error(e)
    sys.stdout.flush()
    sys.stderr.flush()
    texts = []
    for path, start in zip(files, before, strict=True):
      with open(path, "rb") as f:
        f.seek(start)
        texts.append(f.read().decode("utf-8", "replace"))
    cells.append({"stdout": texts[0], "stderr": texts[1], "error": error})
  return {"status": "ok", "cells": cells}


def _main_of(argv: List[str]):
  """What ``python ...`` or ``safetrain ...`` would run, as a function."""
  if argv[0] == "safetrain":
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    (script,) = metadata.entry_points(group="console_scripts",
                                      name="safetrain")
    sys.argv = list(argv)
    return script.load()
  args = argv[1:]
  if args[0] == "-c":
    sys.argv = ["-c"] + args[2:]
    code = compile(args[1], "<string>", "exec")
    namespace = {"__name__": "__main__"}
    return lambda: exec(code, namespace)  # pylint: disable=exec-used
  if args[0] == "-m":
    sys.argv = args[1:]
    return lambda: runpy.run_module(args[1], run_name="__main__",
                                    alter_sys=True)
  sys.argv = list(args)
  sys.path[0] = os.path.dirname(os.path.abspath(args[0]))
  return lambda: runpy.run_path(args[0], run_name="__main__")


def _run_command(request: Dict[str, Any], out_dir: str) -> Dict[str, Any]:
  """Runs ``python ...`` or ``safetrain ...`` as that process would."""
  (path,) = set(_redirect(out_dir, merge=True))
  status = 0
  try:
    _main_of(request["argv"])()
  except SystemExit as e:
    status = e.code if isinstance(e.code, int) else (0 if e.code is None
                                                      else 1)
    if e.code is not None and not isinstance(e.code, int):
      sys.stderr.write(f"{e.code}\n")
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    status = 1
  sys.stdout.flush()
  sys.stderr.flush()
  with open(path, "rb") as f:
    output = f.read().decode("utf-8", "replace")
  return {"status": "ok", "output": output, "exit": status}


def _child(request: Dict[str, Any], out_dir: str) -> None:
  """In the child: runs the request, writes result.json under ``out_dir``."""
  os.chdir(request["cwd"])
  run = _run_command if "argv" in request else _run_cells
  result = run(request, out_dir)
  with open(os.path.join(out_dir, "result.json"), "w") as f:
    json.dump(result, f)


def _fork_and_run(request: Dict[str, Any]) -> Dict[str, Any]:
  out_dir = tempfile.mkdtemp(prefix="docs_program_")
  pid = os.fork()
  if pid == 0:  # The child never returns.
    code = 0
    try:
      _child(request, out_dir)
    except BaseException:  # pylint: disable=broad-except
      code = 3
    finally:
      os._exit(code)  # pylint: disable=protected-access
  deadline = time.monotonic() + request.get("timeout", 300)
  while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
      break
    if time.monotonic() > deadline:
      os.kill(pid, signal.SIGKILL)
      os.waitpid(pid, 0)
      return {"status": "timeout", "cells": []}
    time.sleep(0.02)
  try:
    with open(os.path.join(out_dir, "result.json")) as f:
      return json.load(f)
  except OSError:
    return {"status": f"crashed: wait status {status}", "cells": []}


def _preload() -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_slim  # noqa: F401  # pylint: disable=g-import-not-at-top
  _ = tf.keras.layers.Dense  # Loads Keras (tf.keras is lazy).


def serve() -> None:
  _preload()
  sys.stdout.write(json.dumps({"ready": True}) + "\n")
  sys.stdout.flush()
  for line in sys.stdin:
    result = _fork_and_run(json.loads(line))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def once() -> None:
  request = json.loads(sys.stdin.readline())
  out_dir = tempfile.mkdtemp(prefix="docs_program_")
  real_stdout = os.dup(1)
  try:
    _child(request, out_dir)
    with open(os.path.join(out_dir, "result.json")) as f:
      result = json.load(f)
  except BaseException as e:  # pylint: disable=broad-except
    result = {"status": f"crashed: {e!r}", "cells": []}
  os.write(real_stdout, (json.dumps(result) + "\n").encode())


def environment() -> Dict[str, str]:
  """The environment the docs' programs and commands run in.

  The venv's ``bin`` first on PATH (``python``, ``safetrain``), this
  checkout importable, and no inherited TensorFlow log settings.
  """
  env = dict(os.environ)
  env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
  env["PYTHONPATH"] = os.pathsep.join(
      [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  env["PYTHONHASHSEED"] = "0"
  return env


class Runner:
  """The test's side: starts the server once, sends it programs."""

  def __init__(self):
    self._process: Optional[subprocess.Popen] = None
    self.fork = os.environ.get("SAFETRAIN_DOCS_FORK", "1") != "0"

  def run(self, cells: List[str], cwd: str, name: str,
          timeout: float = 300) -> Dict[str, Any]:
    """Runs a program's cells; the result has each cell's output."""
    return self.request({"cells": cells, "cwd": cwd, "name": name,
                         "timeout": timeout})

  def command(self, argv: List[str], cwd: str, name: str,
              timeout: float = 600) -> Dict[str, Any]:
    """Runs ``python ...`` or ``safetrain ...``: its output and status."""
    return self.request({"argv": argv, "cwd": cwd, "name": name,
                         "timeout": timeout})

  def request(self, request: Dict[str, Any]) -> Dict[str, Any]:
    timeout = request["timeout"]
    if not self.fork:
      done = subprocess.run(
          [sys.executable, __file__, "--once"], input=json.dumps(request),
          capture_output=True, text=True, env=environment(),
          timeout=timeout + 60, check=False)
      lines = done.stdout.strip().splitlines()
      if not lines:
        return {"status": f"crashed: {done.stderr[-2000:]}", "cells": []}
      return json.loads(lines[-1])
    process = self._server()
    process.stdin.write(json.dumps(request) + "\n")
    process.stdin.flush()
    line = process.stdout.readline()
    if not line:
      self.close()
      return {"status": "crashed: the docs runner exited", "cells": []}
    return json.loads(line)

  def _server(self) -> subprocess.Popen:
    if self._process is None or self._process.poll() is not None:
      self._process = subprocess.Popen(
          [sys.executable, __file__], stdin=subprocess.PIPE,
          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
          env=environment(), cwd=tempfile.gettempdir())
      ready = self._process.stdout.readline()
      if not ready:
        raise RuntimeError("the docs runner did not start")
    return self._process

  def close(self) -> None:
    if self._process is not None:
      self._process.stdin.close()
      self._process.wait(timeout=60)
      self._process = None


if __name__ == "__main__":
  if "--once" in sys.argv:
    once()
  else:
    serve()
