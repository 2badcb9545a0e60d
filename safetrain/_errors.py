"""The exceptions safetrain raises.

Every exception derives from ``safetrain.Error`` and from the builtin a caller
already catches: misuse of an argument is a ``TypeError`` or ``ValueError``,
graph-mode APIs called eagerly are a ``RuntimeError``.
"""

from typing import Any, Tuple

__all__ = (
    "DoubleCountedRegularizationError",
    "EagerModeError",
    "Error",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "MissingRegularizationError",
)

PREFIX = "[safetrain] "


class Error(Exception):
  """Base class of every exception safetrain raises."""

  def __init__(self, message: str):
    if not message.startswith(PREFIX):
      message = PREFIX + message
    super().__init__(message)


class InvalidArgumentTypeError(Error, TypeError):
  """An argument has the wrong type (a Python number as a loss, say)."""


class InvalidArgumentError(Error, ValueError):
  """An argument has the right type but an unusable value."""


class EagerModeError(Error, RuntimeError):
  """A graph-mode API was called while eager execution is on."""


class MissingRegularizationError(Error, ValueError):
  """The optimized loss leaves out regularization it must include.

  Attributes:
    report: the full ``RegularizationReport``.
    missing: the report's terms that are required but not included.
    loss_name: the name of the optimized loss tensor.
  """

  def __init__(self, message: str, report: Any):
    super().__init__(message)
    self.report = report
    self.missing: Tuple[Any, ...] = tuple(report.missing)
    self.loss_name: str = report.loss_name


class DoubleCountedRegularizationError(Error, ValueError):
  """The optimized loss counts some regularization more than once.

  Attributes:
    report: the full ``RegularizationReport``.
    overcounted: the report's terms whose coefficient is above the expected.
  """

  def __init__(self, message: str, report: Any):
    super().__init__(message)
    self.report = report
    self.overcounted: Tuple[Any, ...] = tuple(report.overcounted)
    self.loss_name: str = report.loss_name
