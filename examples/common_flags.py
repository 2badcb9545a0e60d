"""Flags shared by the example programs, defined once.

absl flags are global: the trainer, the evaluator and the experiment are
imported together by the tests, so a flag they share (``--model_name``,
``--batch_size``, ...) is defined here, once, and each program declares the
ones it reads as key flags (``flags.declare_key_flag``, so ``--help``
shows them). A program that wants a
different default sets it in its ``__main__`` block with
``flags.FLAGS.set_default``.
"""

from absl import flags

from examples.nets import nets_factory

OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam")

TRAIN_DIR = flags.DEFINE_string(
    "train_dir", "/tmp/safetrain_train",
    "Where checkpoints and event logs are written (trainer) and read "
    "(evaluator).")
CHECKPOINT_PATH = flags.DEFINE_string(
    "checkpoint_path", None,
    "Trainer: a checkpoint (file or directory) to start from when --train_dir "
    "has none. Evaluator: evaluate this checkpoint instead of the latest in "
    "--train_dir.")
MODEL_NAME = flags.DEFINE_enum(
    "model_name", "mobilenet_v2", nets_factory.NETWORKS,
    "The network to train.")
DEPTH_MULTIPLIER = flags.DEFINE_float(
    "depth_multiplier", 1.0,
    "Channel multiplier for mobilenet_v2 and lenet.")
DATASET_NAME = flags.DEFINE_enum(
    "dataset_name", None, ("digits", "tfrecord"),
    "'digits' (scikit-learn's bundled 8x8 digits) or 'tfrecord' (TF-Slim "
    "format files in --dataset_dir). Default: tfrecord if --dataset_dir is "
    "set, else digits.")
DATASET_DIR = flags.DEFINE_string(
    "dataset_dir", None,
    "The directory of <split>-*.tfrecord files (see "
    "examples/convert_image_folders.py).")
DATASET_SPLIT_NAME = flags.DEFINE_string(
    "dataset_split_name", None,
    "The split to read; default 'train' for the trainer, 'validation' for "
    "the evaluator.")
NUM_CLASSES = flags.DEFINE_integer(
    "num_classes", None,
    "The number of classes; default: 10 for the digits, the entries of "
    "labels.txt for TFRecords.", lower_bound=2)
BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 32, "The number of images in each batch.", lower_bound=1)
TRAIN_IMAGE_SIZE = flags.DEFINE_integer(
    "train_image_size", None,
    "Images are resized to this size; default: the network's (32 for lenet "
    "and mobilenet_v2).", lower_bound=8)
OPTIMIZER = flags.DEFINE_enum(
    "optimizer", "momentum", OPTIMIZERS, "The optimizer.")
LEARNING_RATE = flags.DEFINE_float(
    "learning_rate", 0.01, "The (constant) learning rate.")
MOMENTUM = flags.DEFINE_float(
    "momentum", 0.9, "Momentum for the momentum and rmsprop optimizers.")

SEED = flags.DEFINE_integer(
    "seed", None, "Graph-level random seed, for repeatable runs.")
