"""The public surface of ``safetrain`` as text, one line per fact.

``api_test`` compares it with ``testdata/public_api.txt``, so a move of the
private modules behind the surface, or any other change, cannot alter what a
user imports without the record changing in the same commit. Each public name
gives its kind and signature; a class also gives its bases and public
members (methods with their signatures, properties, enum members, dataclass
fields). Where a name is defined (``__module__``) is deliberately left out:
that is the private layout.
"""

import dataclasses
import enum
import inspect
import re
from typing import List

# "safetrain.rule._report.Status" in an annotation names a private module: keep
# the type's name only.
_PRIVATE_PATH = re.compile(r"\bsafetrain(?:\.\w+)*\.(?=[A-Z])")

_OBJECT_MEMBERS = frozenset(dir(object))


def _signature(value) -> str:
  try:
    return _PRIVATE_PATH.sub("", str(inspect.signature(value)))
  except (TypeError, ValueError):
    return "(?)"


def _members(cls) -> List[str]:
  lines = []
  if issubclass(cls, enum.Enum):
    lines.extend(f"  member {m.name} = {m.value!r}" for m in cls)
    return lines
  if dataclasses.is_dataclass(cls):
    lines.extend(f"  field {f.name}" for f in dataclasses.fields(cls))
  for name in sorted(vars(cls)):
    if name.startswith("_") and name != "__init__":
      continue
    value = inspect.getattr_static(cls, name)
    if isinstance(value, property):
      lines.append(f"  property {name}")
    elif isinstance(value, (staticmethod, classmethod)):
      lines.append(f"  {type(value).__name__} {name}"
                   f"{_signature(value.__func__)}")
    elif inspect.isfunction(value):
      lines.append(f"  method {name}{_signature(value)}")
  return lines


def describe(module) -> List[str]:
  """The lines that describe ``module``'s ``__all__``."""
  lines = [f"__all__ {len(module.__all__)} names"]
  for name in module.__all__:
    value = getattr(module, name)
    if isinstance(value, type):
      bases = ", ".join(b.__name__ for b in value.__bases__)
      lines.append(f"class {name}({bases})")
      lines.extend(_members(value))
    elif callable(value):
      lines.append(f"function {name}{_signature(value)}")
    else:
      lines.append(f"value {name}: {type(value).__name__}")
  return lines
