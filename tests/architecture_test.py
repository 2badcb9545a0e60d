"""The house: safetrain's packages stand on floors, and imports run down.

Every ``import`` of a safetrain module by another, at the top of a file or
inside a function, goes to a lower floor, or stays inside one package; and
no chain of imports comes back to where it started. The floors, lowest
first, are the architecture the folder tree shows.
"""

import ast
import collections
import os
from typing import Dict, List, Set

from absl.testing import absltest

_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "safetrain")

# Lowest first. A module may import its own package and any lower floor.
FLOORS = (
    ("safetrain._errors", "safetrain._version", "safetrain.compat"),  # Leaves.
    ("safetrain.graph",),  # Reading a graph.
    ("safetrain.terms",),  # Where regularization comes from.
    ("safetrain.rule",),  # The check, the report, the one policy.
    ("safetrain.tf2",),  # The tape, Keras optimizers' decay.
    ("safetrain.tf1",),  # The safe train op, clones, the optimizer guard.
    ("safetrain.per_variable",),  # The ledger.
    ("safetrain.audit",),  # Saved graphs.
    ("safetrain.guard",),  # safetrain run and guard_optimizers.
    ("safetrain.cli",),  # The command.
    ("safetrain", "safetrain.__main__"),  # The public names; python -m.
    ("safetrain.slim",),  # The drop-in: import safetrain.slim as slim.
)


def _modules() -> Dict[str, str]:
  """Module name -> file, for every module of the package."""
  found = {}
  for folder, _, files in os.walk(_ROOT):
    for name in files:
      if not name.endswith(".py"):
        continue
      path = os.path.join(folder, name)
      parts = os.path.relpath(path, os.path.dirname(_ROOT))[:-3].split(os.sep)
      if parts[-1] == "__init__":
        parts.pop()
      found[".".join(parts)] = path
  return found


def _imports(path: str, known: Set[str]) -> Set[str]:
  """The safetrain modules ``path`` imports, anywhere in the file."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      # ``from safetrain.rule import _check`` imports safetrain.rule._check;
      # ``from safetrain.rule._report import Status``, safetrain.rule._report.
      names = [f"{node.module}.{a.name}"
               if f"{node.module}.{a.name}" in known else node.module
               for a in node.names]
    else:
      continue
    for name in names:
      while name and name not in known:
        name = name.rpartition(".")[0]
      if name.startswith("safetrain"):
        found.add(name)
  return found


def _floor(module: str) -> int:
  best = (-1, -1)  # (length of the matching prefix, floor)
  for floor, prefixes in enumerate(FLOORS):
    for prefix in prefixes:
      # "safetrain" is the package's own __init__, not everything in it.
      if module == prefix or (prefix != "safetrain" and
                              module.startswith(prefix + ".")):
        best = max(best, (len(prefix), floor))
  return best[1]


def _package(module: str) -> str:
  parts = module.split(".")
  return ".".join(parts[:2]) if len(parts) > 2 else module


def _graph() -> Dict[str, Set[str]]:
  modules = _modules()
  return {m: _imports(p, set(modules)) - {m} for m, p in modules.items()}


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
  """Each import circle once (Tarjan's strongly connected components)."""
  index: Dict[str, int] = {}
  low: Dict[str, int] = {}
  stack: List[str] = []
  on_stack: Set[str] = set()
  found = []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for child in graph.get(node, ()):
      if child not in index:
        visit(child)
        low[node] = min(low[node], low[child])
      elif child in on_stack:
        low[node] = min(low[node], index[child])
    if low[node] == index[node]:
      component = []
      while True:
        child = stack.pop()
        on_stack.discard(child)
        component.append(child)
        if child == node:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return found


class ArchitectureTest(absltest.TestCase):

  def test_every_module_has_a_floor(self):
    missing = [m for m in _modules() if _floor(m) < 0]
    self.assertEqual(missing, [])

  def test_no_import_circle(self):
    self.assertEqual(_cycles(_graph()), [])

  def test_imports_run_down(self):
    upward = []
    for module, imported in sorted(_graph().items()):
      for other in sorted(imported):
        same_package = _package(other) == _package(module)
        if not same_package and _floor(other) >= _floor(module):
          upward.append(f"{module} -> {other}")
    self.assertEqual(upward, [])

  def test_the_checks_find_a_circle_and_an_upward_import(self):
    # The checks themselves, on a made-up house.
    self.assertEqual(_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}),
                     [["a", "b", "c"]])
    self.assertEqual(_floor("safetrain.rule._report"),
                     _floor("safetrain.rule._policy"))
    self.assertGreater(_floor("safetrain.rule._report"),
                       _floor("safetrain.terms._keras"))

  def test_packages_are_the_ones_the_floors_name(self):
    packages = collections.Counter(
        _package(m) for m in _modules() if m.count(".") >= 1)
    named = {p for floor in FLOORS for p in floor}
    self.assertEqual(sorted(set(packages) - named), [])


if __name__ == "__main__":
  absltest.main()
