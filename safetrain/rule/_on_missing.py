"""What ``on_missing`` may be, checked without TensorFlow.

The one policy (``_policy``) acts on these choices; the command line offers
them (``safetrain run --on_missing``) before TensorFlow loads, so they live
here, in a module that imports nothing heavy.
"""

from safetrain import _errors

__all__ = ("CHOICES", "check")

CHOICES = ("raise", "add", "warn")


def check(value, caller: str) -> str:
  """``value`` if it is one of ``CHOICES``, else ``InvalidArgumentError``."""
  if value not in CHOICES:
    raise _errors.InvalidArgumentError(
        f"{caller}: on_missing={value!r} is not one of "
        f"{', '.join(repr(c) for c in CHOICES)}.")
  return value
