"""The model flags every example program reads, defined once.

absl flags are global and the tests import the trainer, the evaluator, the
experiment and the Keras loop into one process, so a flag they share is
defined once, in one of four modules, each adopted whole by the programs
that read all of its flags (``flags.adopt_module_key_flags``, so ``--help``
shows them):

* ``model_flags`` (this one): the network and its input; all three programs.
* ``data_flags``: the dataset and the training directory; trainer and
  evaluator.
* ``training_flags``: the optimizer and the seed; trainer and experiment.
* ``policy_flags``: ``--on_missing``; trainer and Keras custom loop.

A program that wants another default sets it in its ``__main__`` block with
``flags.FLAGS.set_default``; code that needs a default reads ``.default``.
"""

from absl import flags

from examples.nets import nets_factory

MODEL_NAME = flags.DEFINE_enum(
    "model_name", "mobilenet_v2", nets_factory.NETWORKS,
    "The network to train.")
DEPTH_MULTIPLIER = flags.DEFINE_float(
    "depth_multiplier", 1.0,
    "Channel multiplier for mobilenet_v2 and lenet.")
BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 32,
    "The number of images in each batch; with --num_clones, in each clone's "
    "batch, as in TF-Slim's trainer.", lower_bound=1)
TRAIN_IMAGE_SIZE = flags.DEFINE_integer(
    "train_image_size", None,
    "Images are resized to this size; default: the network's (32 for lenet "
    "and mobilenet_v2).", lower_bound=8)
