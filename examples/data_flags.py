"""The dataset and directory flags of the trainer and the evaluator.

See ``model_flags`` for how the example programs share flags. The flag
combinations that cannot work are refused when the flags are parsed.
"""

from absl import flags

from examples import datasets

TRAIN_DIR = flags.DEFINE_string(
    "train_dir", "/tmp/safetrain_train",
    "Where checkpoints and event logs are written (trainer) and read "
    "(evaluator).")
CHECKPOINT_PATH = flags.DEFINE_string(
    "checkpoint_path", None,
    "Trainer: a checkpoint (file or directory) to start from when --train_dir "
    "has none. Evaluator: evaluate this checkpoint instead of the latest in "
    "--train_dir.")
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


@flags.multi_flags_validator(
    ("dataset_name", "dataset_dir", "num_classes"),
    message="--dataset_name, --dataset_dir and --num_classes disagree")
def _dataset_flags_agree(values) -> bool:
  name = values["dataset_name"] or (
      "tfrecord" if values["dataset_dir"] else "digits")
  if name == "tfrecord" and not values["dataset_dir"]:
    raise flags.ValidationError(
        "--dataset_name=tfrecord needs --dataset_dir.")
  if name == "digits" and values["dataset_dir"]:
    raise flags.ValidationError(
        "--dataset_dir is for --dataset_name=tfrecord; the digits need no "
        "files.")
  if name == "digits" and values["num_classes"] not in (
      None, datasets.DIGITS_NUM_CLASSES):
    raise flags.ValidationError(
        f"the digits have {datasets.DIGITS_NUM_CLASSES} classes, not "
        f"--num_classes={values['num_classes']}.")
  return True
