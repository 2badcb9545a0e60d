"""The documentation cannot drift: its code runs, its links and names hold.

Every fenced block of README.md, CONTRIBUTING.md, CHANGELOG.md and docs/
runs here, or carries ``<!-- not-run: REASON -->`` (see ``docs_blocks`` for
the markers). Shown output is compared with what the code prints. Python
programs run in processes forked from one that has imported TensorFlow
(``docs_runner``); console and sh blocks run in bash, with the venv's
``python`` and ``safetrain`` first on PATH, in one temporary directory per
page that the page's blocks share.
"""

import ast
import os
import re
import shlex
import shutil
import subprocess
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import pytest

import docs_blocks
import docs_runner

_ROOT = docs_blocks.ROOT
_PAGES = docs_blocks.pages()
_RUN_PAGES = [p for p in _PAGES if any(
    b.marker not in ("not-run",) and b.lang in docs_blocks.RUNNABLE
    for b in docs_blocks.parse(p))]
_SHOWN = 40  # Lines of output a failure shows.

_runner = None


def _programs():
  global _runner
  if _runner is None:
    _runner = docs_runner.Runner()
  return _runner


def tearDownModule():
  if _runner is not None:
    _runner.close()


def _named(pages):
  return [(re.sub(r"\W", "_", p[:-len(".md")]), p) for p in pages]


def _show(text: str) -> str:
  lines = docs_blocks.normalize(text)
  if len(lines) > _SHOWN:
    lines = lines[:5] + ["[...]"] + lines[-(_SHOWN - 6):]
  return "\n".join("    | " + line for line in lines)


def _public_names():
  """``safetrain.__all__``, read from the source (no TensorFlow import)."""
  with open(os.path.join(_ROOT, "safetrain", "__init__.py")) as f:
    tree = ast.parse(f.read())
  for node in tree.body:
    if isinstance(node, ast.Assign) and any(
        getattr(t, "id", None) == "__all__" for t in node.targets):
      return list(ast.literal_eval(node.value))
  raise AssertionError("safetrain/__init__.py has no __all__")


def _forkable(command: str):
  """argv of a plain ``python ...`` or ``safetrain ...`` command, else None.

  Those run in a process forked from the docs runner, which has imported
  TensorFlow already: the same code and output in a fraction of the time.
  Anything with shell syntax runs in bash.
  """
  if re.search(r"[$`]|^\w+=", command):
    return None
  lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
  lexer.whitespace_split = True
  argv = list(lexer)
  if any(set(arg) <= set("();<>|&") for arg in argv):
    return None  # Unquoted shell operators.
  return argv if argv and argv[0] in ("python", "safetrain") else None


class _Page:
  """Runs one page's blocks in order, collecting every failure."""

  def __init__(self, page: str):
    self.page = page
    self.dir = tempfile.mkdtemp(prefix="docs_page_")
    self.failures = []
    self.ran = set()
    self._cells, self._expect = [], []

  def run(self, blocks) -> None:
    for block in blocks:
      if block.marker == "not-run":
        continue
      if block.marker in ("output", "stderr", "error"):
        self._expect[-1].append(block)
      elif block.lang == "python" and block.marker == "continue":
        self._add_cell(block)
      else:
        self._flush()
        if block.marker == "file":
          self._write(block)
        elif block.lang == "python":
          self._add_cell(block)
        elif block.lang == "console":
          self._console(block)
        elif block.lang in ("sh", "bash"):
          self._sh(block)
    self._flush()
    shutil.rmtree(self.dir, ignore_errors=True)

  def _add_cell(self, block) -> None:
    self._cells.append(block)
    self._expect.append([])

  def _write(self, block) -> None:
    path = os.path.join(self.dir, block.arg)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write(block.code)
    self.ran.add(block.line)

  def _flush(self) -> None:
    """Runs the pending program's cells and checks what each showed."""
    if not self._cells:
      return
    cells, expect = self._cells, self._expect
    self._cells, self._expect = [], []
    first = cells[0]
    result = _programs().run([c.code for c in cells], self.dir,
                             f"{self.page}:{first.line}")
    if result["status"] != "ok":
      self.failures.append(f"{first.where}: the program did not finish: "
                           f"{result['status']}")
      return
    for cell, shown, got in zip(cells, expect, result["cells"], strict=True):
      self.ran.add(cell.line)
      self._check_cell(cell, shown, got)

  def _check_cell(self, cell, shown, got) -> None:
    error = got["error"]
    shown_error = [b for b in shown if b.marker == "error"]
    if error and not shown_error:
      self.failures.append(
          f"{cell.where}: raised {error['type']}: "
          f"{error['message'][:2000]}\n{_show(got['stderr'])}")
    for block in shown:
      self.ran.add(block.line)
      if block.marker == "error":
        if not error:
          self.failures.append(f"{block.where}: shows {block.arg}, but "
                               f"{cell.where} raised nothing.")
        elif error["type"] != block.arg or not error["public"]:
          self.failures.append(
              f"{block.where}: shows safetrain.{block.arg}; {cell.where} "
              f"raised {error['type']} (public name: {error['public']}): "
              f"{error['message'][:2000]}")
        elif not docs_blocks.matches(block.code, error["message"]):
          self.failures.append(
              f"{block.where}: the message differs; it is:\n"
              f"{_show(error['message'])}")
      else:
        stream = got["stdout" if block.marker == "output" else "stderr"]
        if not docs_blocks.matches(block.code, stream):
          self.failures.append(
              f"{block.where}: {cell.where} printed to "
              f"{'stdout' if block.marker == 'output' else 'stderr'}:\n"
              f"{_show(stream)}")

  def _bash(self, script: str, timeout: float = 600):
    env = docs_runner.environment()
    env["PYTHONUNBUFFERED"] = "1"  # Interleave as a terminal shows it.
    return subprocess.run(
        ["bash", "-c", script], cwd=self.dir, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=None,
        timeout=timeout, check=False)

  def _console(self, block) -> None:
    self.ran.add(block.line)
    status = 0
    for command, shown in docs_blocks.console_steps(block):
      argv = _forkable(command)
      if argv and _programs().fork:
        result = _programs().command(argv, self.dir, block.where)
        if result["status"] != "ok":
          self.failures.append(f"{block.where}: `{command}` did not finish: "
                               f"{result['status']}")
          return
        got, status = result["output"], result["exit"]
      else:  # A fresh bash, with $? the previous command's status.
        done = self._bash(f"(exit {status}); {command}")
        got, status = done.stdout, done.returncode
      if not docs_blocks.matches(shown, got):
        self.failures.append(f"{block.where}: `{command}` printed:\n"
                             f"{_show(got)}")

  def _sh(self, block) -> None:
    self.ran.add(block.line)
    done = self._bash("set -e\n" + block.code)
    if done.returncode:
      self.failures.append(f"{block.where}: exit status {done.returncode}:\n"
                           f"{_show(done.stdout)}")


class MarkersTest(parameterized.TestCase):
  """Every block of every page is runnable as marked."""

  def test_pages_are_found(self):
    for page in ("README.md", "CONTRIBUTING.md", "CHANGELOG.md",
                 "docs/index.md", "docs/reference/cli.md"):
      self.assertIn(page, _PAGES)

  @parameterized.named_parameters(*_named(_PAGES))
  def test_every_block_runs_or_says_why_not(self, page):
    blocks = docs_blocks.parse(page)
    self.assertEqual(docs_blocks.problems(blocks), [])

  def test_an_unmarked_text_block_is_a_problem(self):
    blocks = docs_blocks.parse("x.md", "text\n\n```\nout\n```\n")
    self.assertLen(docs_blocks.problems(blocks), 1)
    blocks = docs_blocks.parse(
        "x.md", "<!-- not-run: a tree, not code -->\n```\nout\n```\n")
    self.assertEqual(docs_blocks.problems(blocks), [])
    self.assertEqual(blocks[0].arg, "a tree, not code")

  def test_markers_need_their_argument_and_a_known_name(self):
    with self.assertRaisesRegex(ValueError, "needs its argument"):
      docs_blocks.parse("x.md", "<!-- not-run -->\n```\nx\n```\n")
    with self.assertRaisesRegex(ValueError, "unknown marker"):
      docs_blocks.parse("x.md", "<!-- notrun: x -->\n```\nx\n```\n")
    with self.assertRaisesRegex(ValueError, "indented code block"):
      docs_blocks.parse("x.md", "text\n\n    code\n")

  @parameterized.parameters(
      "```console\n$ true\n```\n",
      "<!-- file: a.py -->\n```python\npass\n```\n",
  )
  def test_output_must_follow_a_python_program(self, before):
    blocks = docs_blocks.parse(
        "x.md", before + "\n<!-- output -->\n```\nx\n```\n")
    self.assertLen(docs_blocks.problems(blocks), 1)

  @parameterized.parameters(
      ("a\nb", "a\nb", True),
      ("a\n...\nd", "a\nb\nc\nd", True),
      ("a\n...\nd", "a\nd", True),
      ("a ... d", "a b c d", True),
      ("a\nb", "a\nc", False),
      ("a\n...", "b", False),
      ("a", "I0000 00:00:17.1 7588 cpu_feature_guard.cc:227] x\na", True),
      ("a", "a   \n\n", True),
  )
  def test_matches(self, shown, printed, same):
    self.assertEqual(docs_blocks.matches(shown, printed), same)

  def test_console_steps(self):
    block = docs_blocks.Block("x.md", 1, "console",
                              "$ a \\\n    --b\nout\n$ c\n")
    self.assertEqual(docs_blocks.console_steps(block),
                     [("a  --b", "out"), ("c", "")])


class LinksTest(parameterized.TestCase):
  """Relative links of the repository's Markdown files point at files."""

  @parameterized.parameters("README.md", "CONTRIBUTING.md", "CHANGELOG.md")
  def test_relative_links_resolve(self, page):
    with open(os.path.join(_ROOT, page)) as f:
      text = f.read()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
      if re.match(r"[a-z]+:", target) or target.startswith("#"):
        continue
      path = target.split("#")[0]
      self.assertTrue(os.path.exists(os.path.join(_ROOT, path)),
                      f"{page}: link to {target}")

  def test_readme_is_short_and_says_where_it_installs_from(self):
    with open(os.path.join(_ROOT, "README.md")) as f:
      text = f.read()
    self.assertLess(len(text.splitlines()), 300)
    self.assertNotRegex(text, r"pip install\s+safetrain\b")  # Not on PyPI.


class ReferenceTest(absltest.TestCase):
  """The API reference documents every public name, and the nav every page."""

  def test_every_public_name_is_in_the_api_reference(self):
    documented = set()
    for path in os.listdir(os.path.join(_ROOT, "docs", "reference")):
      with open(os.path.join(_ROOT, "docs", "reference", path)) as f:
        documented.update(re.findall(r"^::: safetrain\.(\w+)\s*$", f.read(),
                                     re.M))
    self.assertEqual(sorted(set(_public_names()) - documented), [])
    self.assertEqual(sorted(documented - set(_public_names())), [])

  def test_every_page_is_in_the_nav(self):
    with open(os.path.join(_ROOT, "mkdocs.yml")) as f:
      nav = set(re.findall(r"([\w/.-]+\.md)\s*$", f.read(), re.M))
    pages = {p[len("docs/"):] for p in _PAGES if p.startswith("docs/")}
    pages.update(p[len("docs/"):] for p in docs_blocks.GENERATED)
    self.assertEqual(sorted(pages - nav), [])


@pytest.mark.slow  # On the class: parameterized's methods drop the mark.
class RunTest(parameterized.TestCase):
  """Each page's code runs and prints what the page shows."""

  @parameterized.named_parameters(*_named(_RUN_PAGES))
  def test_page_runs_as_shown(self, page):
    blocks = docs_blocks.parse(page)
    self.assertEqual(docs_blocks.problems(blocks), [])
    runner = _Page(page)
    runner.run(blocks)
    if runner.failures:
      self.fail("\n\n".join(runner.failures))
    not_run = [b.where for b in blocks if b.marker != "not-run"
               and b.line not in runner.ran]
    self.assertEqual(not_run, [])


if __name__ == "__main__":
  absltest.main()
