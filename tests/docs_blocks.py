"""The fenced code blocks of the documentation, and what each one is.

Every fenced block of README.md, CONTRIBUTING.md and docs/ either runs in
the tests (``docs_test.py``) or says why it cannot. What a block is comes
from its language and from an HTML comment on the line before it, which
neither GitHub nor the site shows:

``python``
  A program, run in a process of its own, from a fresh working directory
  that the page's other blocks share.
``<!-- continue -->`` before a ``python`` block
  The next cell of the same program: same process, same names, as in a
  notebook (an error shown for the cell before does not stop it).
``console``
  ``$ command`` lines, each followed by what it prints (stdout and stderr,
  as a terminal shows them), run by bash in the page's directory.
``sh``, ``bash``
  Commands run by bash in the page's directory; they must succeed.
``<!-- file: NAME -->``
  The block is a file that later blocks use: it is written to NAME.
``<!-- output -->``, ``<!-- stderr -->``
  What the program's last cell printed to stdout (or stderr).
``<!-- error: NAME -->``
  The message of the exception the last cell raised: ``safetrain.NAME``.
``<!-- not-run: REASON -->``
  Not run, for the reason given (it needs a GPU, a cluster, the network, a
  long run, or it is not code).

In shown output a line ``...`` stands for any number of lines, and ``...``
within a line for any text in it. TensorFlow's C++ start-up and logging
lines are left out before comparing, since they depend on the machine.
"""

import dataclasses
import glob
import os
import re
from typing import List, Optional

import markdown_it

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Pages the program writes, not people: no code blocks to run.
GENERATED = ("docs/weight_decay_experiment.md",)

RUNNABLE = ("python", "console", "sh", "bash")
MARKERS = ("not-run", "file", "continue", "output", "stderr", "error")
_MARKER = re.compile(r"^<!--\s*([a-z-]+)\s*(?::\s*(.*?))?\s*-->\s*$", re.S)


def pages() -> List[str]:
  """The documentation's Markdown files, relative to the repository."""
  found = ["README.md", "CONTRIBUTING.md", "CHANGELOG.md"]
  found += sorted(os.path.relpath(p, ROOT) for p in glob.glob(
      os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
  return [p for p in found if p not in GENERATED
          and os.path.exists(os.path.join(ROOT, p))]


@dataclasses.dataclass
class Block:
  """One fenced code block and the marker before it."""

  page: str
  line: int  # 1-based line of the opening fence.
  lang: str
  code: str
  marker: Optional[str] = None
  arg: str = ""

  @property
  def where(self) -> str:
    return f"{self.page}:{self.line}"


def parse(page: str, text: Optional[str] = None) -> List[Block]:
  """The fenced blocks of ``page``, in order.

  Raises:
    ValueError: an indented code block (use a fenced one), or a marker
      comment that names no known marker or lacks its argument.
  """
  if text is None:
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
      text = f.read()
  tokens = markdown_it.MarkdownIt("commonmark").parse(text)
  blocks = []
  previous = None
  for token in tokens:
    if token.type == "code_block":
      raise ValueError(f"{page}:{token.map[0] + 1}: an indented code block; "
                       "fence it (```) so the tests can see what it is.")
    if token.type == "fence":
      lang = token.info.split()[0] if token.info.strip() else ""
      block = Block(page, token.map[0] + 1, lang, token.content)
      if previous is not None and previous.type == "html_block":
        _read_marker(block, previous.content.strip())
      blocks.append(block)
    previous = token
  return blocks


def _read_marker(block: Block, comment: str) -> None:
  match = _MARKER.match(comment)
  if not match:
    return
  name, arg = match.group(1), " ".join((match.group(2) or "").split())
  if name not in MARKERS:
    raise ValueError(f"{block.where}: unknown marker {name!r}; one of "
                     f"{', '.join(MARKERS)}.")
  if name in ("not-run", "file", "error") and not arg:
    raise ValueError(f"{block.where}: <!-- {name}: ... --> needs its "
                     "argument (a reason, a file name, an exception).")
  block.marker, block.arg = name, arg


def problems(blocks: List[Block]) -> List[str]:
  """What makes a page's blocks unrunnable as marked, one line each."""
  found = []
  last = None  # The last block that ran or was written.
  for block in blocks:
    if block.marker in ("output", "stderr", "error"):
      if last is None or last.lang != "python":
        found.append(f"{block.where}: <!-- {block.marker} --> must follow a "
                     "python block.")
    elif block.marker == "continue":
      if block.lang != "python" or last is None or last.lang != "python":
        found.append(f"{block.where}: <!-- continue --> must be a python "
                     "block after a python block.")
    elif block.marker in ("not-run", "file"):
      pass
    elif block.lang not in RUNNABLE:
      found.append(f"{block.where}: a ```{block.lang or '(no language)'} "
                   "block neither runs nor says why not: mark it "
                   "<!-- not-run: REASON --> (or output, error, file).")
    if block.marker == "file":
      last = None  # Written, not run: nothing to show the output of.
    elif block.marker not in ("output", "stderr", "error", "not-run"):
      last = block
  return found


# Lines TensorFlow's C++ runtime and absl's C++ logging write at start-up
# and while running; they depend on the machine and the TensorFlow build.
_NOISE = re.compile(
    r"^(?:[IWEF]\d{4} [\d:.]+\s+\d+ [\w./-]+\.(?:cc|h):\d+\]"
    r"|To enable the following instructions:"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r")")


def normalize(text: str) -> List[str]:
  """Output as lines: no trailing spaces, no noise, no blank ends."""
  lines = [line.rstrip() for line in text.splitlines()
           if not _NOISE.match(line)]
  while lines and not lines[0]:
    lines.pop(0)
  while lines and not lines[-1]:
    lines.pop()
  return lines


def _line_pattern(expected: str) -> "re.Pattern[str]":
  parts = [re.escape(p) for p in expected.split("...")]
  return re.compile(".*?".join(parts) + r"\Z", re.S)


def matches(expected: str, actual: str) -> bool:
  """Whether ``actual`` output is what ``expected`` shows (with ``...``)."""
  want, got = normalize(expected), normalize(actual)
  memo = {}

  def match(i: int, j: int) -> bool:
    if (i, j) not in memo:
      if i == len(want):
        result = j == len(got)
      elif want[i].strip() == "...":
        result = any(match(i + 1, k) for k in range(j, len(got) + 1))
      else:
        result = (j < len(got) and bool(_line_pattern(want[i]).match(got[j]))
                  and match(i + 1, j + 1))
      memo[i, j] = result
    return memo[i, j]

  return match(0, 0)


def console_steps(block: Block):
  """``(command, shown output)`` for each ``$`` line of a console block."""
  steps = []
  for line in block.code.splitlines():
    if line.startswith("$ "):
      steps.append([line[2:], []])
    elif steps:
      steps[-1][1].append(line)
    elif line.strip():
      raise ValueError(f"{block.where}: a console block starts with "
                       "'$ command'.")
  # A command continued with a trailing backslash spans lines.
  joined = []
  for command, output in steps:
    while command.endswith("\\") and output and output[0].startswith(" "):
      command = command[:-1] + " " + output.pop(0).strip()
    joined.append((command, "\n".join(output)))
  return joined
