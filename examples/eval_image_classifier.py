r"""Evaluates the latest checkpoint of a trainer's --train_dir on one split.

    python examples/eval_image_classifier.py --train_dir=/tmp/digits \
        --model_name=mobilenet_v2 --depth_multiplier=0.35

Give the same model and data flags as the trainer. Prints the top-1 accuracy
on --dataset_split_name (default: validation) to stdout:

    accuracy 0.9611 (346/360) on digits/validation, global step 1000

Exit codes: 0 evaluated, 2 bad usage, no checkpoint or unusable data.
"""

import dataclasses
import os
import sys
from typing import List, Optional

from absl import app
from absl import flags
from absl import logging
import numpy as np

if __package__ in (None, ""):  # Run as a script: make `examples` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,g-bad-import-order,wrong-import-position
from examples import program

if __name__ == "__main__":
  program.import_tensorflow_quietly()

import tensorflow as tf

import safetrain  # pylint: disable=unused-import  (tf_slim on current TF)

from examples import data_flags
from examples import datasets
from examples import model_flags
from examples.nets import nets_factory

flags.adopt_module_key_flags(model_flags)
flags.adopt_module_key_flags(data_flags)


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """The accuracy of one checkpoint on one split."""

  accuracy: float
  correct: int
  total: int
  global_step: int
  checkpoint: str
  dataset: str

  def to_text(self) -> str:
    return (f"accuracy {self.accuracy:.4f} ({self.correct}/{self.total}) on "
            f"{self.dataset}, global step {self.global_step}")


def find_checkpoint(train_dir: str, checkpoint_path: Optional[str] = None
                    ) -> str:
  """--checkpoint_path if given, else the latest checkpoint in --train_dir."""
  path = checkpoint_path or train_dir
  if tf.io.gfile.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    if latest is None:
      raise datasets.DataError(f"No checkpoint in {path!r}: train first, or "
                               "point --train_dir at the trainer's.")
    return latest
  if not tf.io.gfile.exists(path + ".index"):
    raise datasets.DataError(f"No checkpoint at {path!r}.")
  return path


def evaluate(train_dir: str, *,
             model_name: str = model_flags.MODEL_NAME.default,
             depth_multiplier: float = model_flags.DEPTH_MULTIPLIER.default,
             dataset_name: Optional[str] = None,
             dataset_dir: Optional[str] = None,
             split: str = "validation", num_classes: Optional[int] = None,
             batch_size: int = 100, image_size: Optional[int] = None,
             checkpoint_path: Optional[str] = None) -> EvalResult:
  """Restores a checkpoint and counts correct top-1 predictions on a split."""
  checkpoint = find_checkpoint(train_dir, checkpoint_path)
  info = datasets.get_dataset(dataset_name, dataset_dir, split,
                              num_classes=num_classes)
  image_size = image_size or nets_factory.default_image_size(model_name)
  with tf.Graph().as_default():
    dataset = datasets.build_dataset(info, image_size, batch_size,
                                     shuffle=False, repeat=False)
    images, labels = tf.compat.v1.data.make_one_shot_iterator(
        dataset).get_next()
    network_fn = nets_factory.get_network_fn(
        model_name, num_classes=info.num_classes, is_training=False,
        depth_multiplier=depth_multiplier)
    logits, _ = network_fn(images)
    correct = tf.reduce_sum(tf.cast(
        tf.equal(tf.argmax(logits, axis=1), labels), tf.int64))
    count = tf.size(labels, out_type=tf.int64)
    global_step = tf.compat.v1.train.get_or_create_global_step()
    saver = tf.compat.v1.train.Saver()
    with tf.compat.v1.Session() as session:
      saver.restore(session, checkpoint)
      totals = np.zeros(2, np.int64)
      while True:
        try:
          totals += session.run([correct, count])
        except tf.errors.OutOfRangeError:
          break
      step = int(session.run(global_step))
  right, total = int(totals[0]), int(totals[1])
  return EvalResult(right / max(total, 1), right, total, step, checkpoint,
                    f"{info.name}/{info.split}")


def main(argv: List[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}", exitcode=2)
  try:
    result = evaluate(
        data_flags.TRAIN_DIR.value,
        model_name=model_flags.MODEL_NAME.value,
        depth_multiplier=model_flags.DEPTH_MULTIPLIER.value,
        dataset_name=data_flags.DATASET_NAME.value,
        dataset_dir=data_flags.DATASET_DIR.value,
        split=data_flags.DATASET_SPLIT_NAME.value or "validation",
        num_classes=data_flags.NUM_CLASSES.value,
        batch_size=model_flags.BATCH_SIZE.value,
        image_size=model_flags.TRAIN_IMAGE_SIZE.value,
        checkpoint_path=data_flags.CHECKPOINT_PATH.value)
  except datasets.DataError as e:
    logging.error("%s", e)
    return 2
  logging.info("Evaluated %s.", result.checkpoint)
  print(result.to_text())
  return 0


if __name__ == "__main__":
  program.run(main)
