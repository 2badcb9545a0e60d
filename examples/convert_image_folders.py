r"""Converts a folder of class-named image folders to TF-Slim TFRecords.

    python examples/convert_image_folders.py \
        --image_dir=photos/ --tfrecord_dir=data/photos

``photos/cat/*.jpg``, ``photos/dog/*.png``, ... become
``train-00000-of-00002.tfrecord``, ..., ``validation-00000-of-00001.tfrecord``
and ``labels.txt`` (``0:cat``, ``1:dog``: classes in sorted order) in
``--tfrecord_dir``, one ``tf.train.Example`` per image in TF-Slim's standard
format (``image/encoded``, ``image/format``, ``image/class/label``,
``image/height``, ``image/width``), readable by ``train_image_classifier.py
--dataset_dir=data/photos``. PNG and JPEG bytes are stored as they are;
other files are skipped with a warning.

Exit codes: 0 converted, 2 bad usage or unreadable input.
"""

import os
import random
import sys
from typing import Dict, List, Tuple

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

if __package__ in (None, ""):  # Run as a script: make `examples` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,g-bad-import-order
from examples import datasets

_IMAGE_DIR = flags.DEFINE_string(
    "image_dir", None, "A folder with one subfolder of images per class.")
_TFRECORD_DIR = flags.DEFINE_string(
    "tfrecord_dir", None, "Where to write the TFRecord files and labels.txt.")
_VALIDATION_FRACTION = flags.DEFINE_float(
    "validation_fraction", 0.2,
    "The fraction of each class's images put in the validation split.")
_IMAGES_PER_SHARD = flags.DEFINE_integer(
    "images_per_shard", 1000, "At most this many images per TFRecord file.")
_SHUFFLE_SEED = flags.DEFINE_integer(
    "shuffle_seed", 0, "Seed of the split and of the order of records.")


def _int64(value: int) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def _bytes(value: bytes) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def image_to_tfexample(encoded: bytes, image_format: str, height: int,
                       width: int, label: int) -> tf.train.Example:
  """One image as TF-Slim's ``dataset_utils.image_to_tfexample`` writes it."""
  return tf.train.Example(features=tf.train.Features(feature={
      "image/encoded": _bytes(encoded),
      "image/format": _bytes(image_format.encode()),
      "image/class/label": _int64(label),
      "image/height": _int64(height),
      "image/width": _int64(width),
  }))


def find_images(input_dir: str) -> Tuple[List[str], List[Tuple[str, int]]]:
  """Class names (sorted subfolder names) and (path, label) pairs."""
  if not os.path.isdir(input_dir):
    raise datasets.DataError(f"--image_dir {input_dir!r} is not a directory.")
  classes = sorted(d for d in os.listdir(input_dir)
                   if os.path.isdir(os.path.join(input_dir, d))
                   and not d.startswith("."))
  if len(classes) < 2:
    raise datasets.DataError(
        f"{input_dir!r} has {len(classes)} class folders; a classifier needs "
        "at least 2 (one subfolder of images per class).")
  images = []
  for label, name in enumerate(classes):
    folder = os.path.join(input_dir, name)
    for filename in sorted(os.listdir(folder)):
      path = os.path.join(folder, filename)
      if os.path.isfile(path) and not filename.startswith("."):
        images.append((path, label))
  return classes, images


def _split(images: List[Tuple[str, int]], validation_fraction: float,
           seed: int) -> Dict[str, List[Tuple[str, int]]]:
  """A per-class random split, so both splits see every class."""
  rng = random.Random(seed)
  splits = {"train": [], "validation": []}
  for label in sorted({lbl for _, lbl in images}):
    members = [item for item in images if item[1] == label]
    rng.shuffle(members)
    n_val = int(round(len(members) * validation_fraction))
    if validation_fraction > 0 and len(members) > 1:
      n_val = max(1, min(n_val, len(members) - 1))
    splits["validation"] += members[:n_val]
    splits["train"] += members[n_val:]
  for items in splits.values():
    rng.shuffle(items)
  return splits


def convert(input_dir: str, output_dir: str, validation_fraction: float = 0.2,
            images_per_shard: int = 1000, seed: int = 0) -> Dict[str, int]:
  """Writes the TFRecords and labels.txt; returns {split: records written}."""
  if not 0 <= validation_fraction < 1:
    raise ValueError(f"validation_fraction must be in [0, 1), got "
                     f"{validation_fraction}.")
  if images_per_shard < 1:
    raise ValueError(f"images_per_shard must be positive, got "
                     f"{images_per_shard}.")
  classes, images = find_images(input_dir)
  tf.io.gfile.makedirs(output_dir)
  coder = datasets.ImageCoder()
  written = {}
  try:
    for split, items in _split(images, validation_fraction, seed).items():
      examples = []
      for path, label in items:
        with open(path, "rb") as f:
          encoded = f.read()
        image_format = datasets.image_format(encoded)
        if image_format is None:
          logging.warning("Skipped %s: not a PNG or JPEG file.", path)
          continue
        try:
          height, width = coder.shape(encoded)
        except tf.errors.OpError as e:
          raise datasets.DataError(f"Cannot decode {path}: "
                                   f"{e.message}") from None
        examples.append(image_to_tfexample(encoded, image_format, height,
                                           width, label))
      if not examples:
        continue
      num_shards = -(-len(examples) // images_per_shard)
      for shard in range(num_shards):
        filename = os.path.join(
            output_dir, f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord")
        with tf.io.TFRecordWriter(filename) as writer:
          for example in examples[shard::num_shards]:
            writer.write(example.SerializeToString())
      written[split] = len(examples)
  finally:
    coder.close()
  if not written:
    raise datasets.DataError(f"No PNG or JPEG images in the class folders "
                             f"of {input_dir!r}.")
  with tf.io.gfile.GFile(os.path.join(output_dir, datasets.LABELS_FILENAME),
                         "w") as f:
    for label, name in enumerate(classes):
      f.write(f"{label}:{name}\n")
  return written


def main(argv: List[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}", exitcode=2)
  if not _IMAGE_DIR.value or not _TFRECORD_DIR.value:
    raise app.UsageError("--image_dir and --tfrecord_dir are required.",
                         exitcode=2)
  try:
    written = convert(_IMAGE_DIR.value, _TFRECORD_DIR.value,
                      _VALIDATION_FRACTION.value, _IMAGES_PER_SHARD.value,
                      _SHUFFLE_SEED.value)
  except (datasets.DataError, ValueError) as e:
    logging.error("%s", e)
    return 2
  for split, count in sorted(written.items()):
    print(f"{split}: {count} images")
  print(f"wrote {_TFRECORD_DIR.value}")
  return 0


if __name__ == "__main__":
  app.run(main)
