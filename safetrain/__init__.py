"""safetrain: TF-Slim training ops that never silently drop regularization.

``create_train_op_safe`` and ``total_loss_from`` wrap tf_slim's functions so
regularization losses are always collected, and building a train op whose loss
leaves out a regularized graph's terms raises ``MissingRegularizationError``
at graph-build time. ``import safetrain.slim as slim`` is a drop-in for
``import tf_slim as slim``. Importing safetrain also makes tf_slim 1.1.0 work
on current TensorFlow (see ``safetrain.compat._compat``): the fixes apply
when tf_slim is imported, or at once if it already is.

The public names load on first use (PEP 562), so ``import safetrain`` loads
neither TensorFlow nor tf_slim, and the ``safetrain`` command answers
``--help`` without them.
"""

import importlib
from typing import TYPE_CHECKING, Any, List

from safetrain._version import __version__ as __version__  # Re-exported.
from safetrain.compat import _compat

_compat.apply_when_tf_slim_loads()

if TYPE_CHECKING:  # What type checkers and editors see; the same names.
  from safetrain._errors import AuditInputError
  from safetrain._errors import DoubleCountedRegularizationError
  from safetrain._errors import EagerModeError
  from safetrain._errors import Error
  from safetrain._errors import IneffectiveRegularizerError
  from safetrain._errors import InvalidArgumentError
  from safetrain._errors import InvalidArgumentTypeError
  from safetrain._errors import MissingRegularizationError
  from safetrain._errors import MissingRegularizationWarning
  from safetrain._errors import NoTrainOpError
  from safetrain._errors import RegularizationError
  from safetrain._errors import ReplicaScalingError
  from safetrain._errors import TooWeakRegularizationError
  from safetrain._errors import UnmatchedExclusionError
  from safetrain.audit._audit import AuditResult
  from safetrain.audit._audit import audit_meta_graph
  from safetrain.guard._install import guard_optimizers
  from safetrain.per_variable._ledger import ledger
  from safetrain.per_variable._rows import Ledger
  from safetrain.per_variable._rows import Mechanism
  from safetrain.per_variable._rows import Row
  from safetrain.rule._check import check_regularization
  from safetrain.rule._report import Finding
  from safetrain.rule._report import FindingKind
  from safetrain.rule._report import RegularizationReport
  from safetrain.rule._report import RegularizationTerm
  from safetrain.rule._report import Status
  from safetrain.rule._report import Verdict
  from safetrain.rule._trace import TrainOpTrace
  from safetrain.rule._trace import find_train_ops
  from safetrain.rule._trace import trace_train_op
  from safetrain.tf1._deploy import Clone
  from safetrain.tf1._deploy import assert_counted_once
  from safetrain.tf1._deploy import clone_loss
  from safetrain.tf1._deploy import create_clones
  from safetrain.tf1._deploy import replica_total_loss
  from safetrain.tf1._deploy import sum_clone_losses
  from safetrain.tf1._guard import SafeOptimizer
  from safetrain.tf1._train import create_train_op_safe
  from safetrain.tf1._train import total_loss_from
  from safetrain.tf2._keras_decay import check_weight_decay
  from safetrain.tf2._tape import GradientTape

# Where each public name is defined: imported on first use.
_ORIGINS = {
    "AuditInputError": "safetrain._errors",
    "AuditResult": "safetrain.audit._audit",
    "Clone": "safetrain.tf1._deploy",
    "DoubleCountedRegularizationError": "safetrain._errors",
    "EagerModeError": "safetrain._errors",
    "Error": "safetrain._errors",
    "Finding": "safetrain.rule._report",
    "FindingKind": "safetrain.rule._report",
    "GradientTape": "safetrain.tf2._tape",
    "IneffectiveRegularizerError": "safetrain._errors",
    "InvalidArgumentError": "safetrain._errors",
    "InvalidArgumentTypeError": "safetrain._errors",
    "Ledger": "safetrain.per_variable._rows",
    "Mechanism": "safetrain.per_variable._rows",
    "MissingRegularizationError": "safetrain._errors",
    "MissingRegularizationWarning": "safetrain._errors",
    "NoTrainOpError": "safetrain._errors",
    "RegularizationError": "safetrain._errors",
    "RegularizationReport": "safetrain.rule._report",
    "RegularizationTerm": "safetrain.rule._report",
    "ReplicaScalingError": "safetrain._errors",
    "Row": "safetrain.per_variable._rows",
    "SafeOptimizer": "safetrain.tf1._guard",
    "Status": "safetrain.rule._report",
    "TooWeakRegularizationError": "safetrain._errors",
    "TrainOpTrace": "safetrain.rule._trace",
    "UnmatchedExclusionError": "safetrain._errors",
    "Verdict": "safetrain.rule._report",
    "assert_counted_once": "safetrain.tf1._deploy",
    "audit_meta_graph": "safetrain.audit._audit",
    "check_regularization": "safetrain.rule._check",
    "check_weight_decay": "safetrain.tf2._keras_decay",
    "clone_loss": "safetrain.tf1._deploy",
    "create_clones": "safetrain.tf1._deploy",
    "create_train_op_safe": "safetrain.tf1._train",
    "find_train_ops": "safetrain.rule._trace",
    "guard_optimizers": "safetrain.guard._install",
    "ledger": "safetrain.per_variable._ledger",
    "replica_total_loss": "safetrain.tf1._deploy",
    "sum_clone_losses": "safetrain.tf1._deploy",
    "total_loss_from": "safetrain.tf1._train",
    "trace_train_op": "safetrain.rule._trace",
}

__all__ = (
    "AuditInputError",
    "AuditResult",
    "Clone",
    "DoubleCountedRegularizationError",
    "EagerModeError",
    "Error",
    "Finding",
    "FindingKind",
    "GradientTape",
    "IneffectiveRegularizerError",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "Ledger",
    "Mechanism",
    "MissingRegularizationError",
    "MissingRegularizationWarning",
    "NoTrainOpError",
    "RegularizationError",
    "RegularizationReport",
    "RegularizationTerm",
    "ReplicaScalingError",
    "Row",
    "SafeOptimizer",
    "Status",
    "TooWeakRegularizationError",
    "TrainOpTrace",
    "UnmatchedExclusionError",
    "Verdict",
    "assert_counted_once",
    "audit_meta_graph",
    "check_regularization",
    "check_weight_decay",
    "clone_loss",
    "create_clones",
    "create_train_op_safe",
    "find_train_ops",
    "guard_optimizers",
    "ledger",
    "replica_total_loss",
    "sum_clone_losses",
    "total_loss_from",
    "trace_train_op",
)


def __getattr__(name: str) -> Any:
  origin = _ORIGINS.get(name)
  if origin is None:
    raise AttributeError(f"module 'safetrain' has no attribute {name!r}")
  value = getattr(importlib.import_module(origin), name)
  globals()[name] = value  # Once loaded, a plain attribute.
  return value


def __dir__() -> List[str]:
  return sorted(set(globals()) | set(__all__))
