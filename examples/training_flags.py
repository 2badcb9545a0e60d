"""The optimizer and seed flags of the trainer and the experiment.

See ``model_flags`` for how the example programs share flags.
"""

from absl import flags

OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam")

OPTIMIZER = flags.DEFINE_enum(
    "optimizer", "momentum", OPTIMIZERS, "The optimizer.")
LEARNING_RATE = flags.DEFINE_float(
    "learning_rate", 0.01, "The (constant) learning rate.")
MOMENTUM = flags.DEFINE_float(
    "momentum", 0.9, "Momentum for the momentum and rmsprop optimizers.")
SEED = flags.DEFINE_integer(
    "seed", None, "Graph-level random seed, for repeatable runs.")
