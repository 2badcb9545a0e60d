"""safetrain: TF-Slim training ops that never silently drop regularization.

``create_train_op_safe`` and ``total_loss_from`` wrap tf_slim's functions so
regularization losses are always collected, and building a train op whose loss
leaves out a regularized graph's terms raises ``MissingRegularizationError``
at graph-build time. ``import safetrain.slim as slim`` is a drop-in for
``import tf_slim as slim``. Importing safetrain also makes tf_slim 1.1.0 work
on current TensorFlow (see ``safetrain.compat._compat``).
"""

from safetrain.compat import _quiet

_quiet.apply()  # Before TensorFlow loads; the safetrain command only.

# pylint: disable=g-import-not-at-top,g-bad-import-order
from safetrain.compat import _compat

_compat.apply()

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

__version__ = "0.1.0"

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
