"""The examples' data: scikit-learn's digits, or TF-Slim format TFRecords.

* ``digits``: the 1,797 labelled 8x8 digits bundled with scikit-learn (read
  from the installed package; nothing is downloaded), split once and for all
  into 1,437 training and 360 validation images, scaled up to the network's
  input size.
* ``tfrecord``: ``--dataset_dir`` files named ``<split>-*.tfrecord`` (as
  ``convert_image_folders.py`` writes them) holding ``tf.train.Example``
  records in TF-Slim's standard format: ``image/encoded`` (PNG or JPEG bytes),
  ``image/format`` and ``image/class/label`` (plus optional
  ``image/height``/``image/width``). A ``labels.txt`` of ``id:name`` lines
  gives the number of classes when ``--num_classes`` is not set.

Both give float32 images in [-1, 1] of shape [size, size, 3] and int64 labels.
``check_tfrecords`` reads every record before training starts, so a missing
directory, no records, a corrupt record or a label out of range is a clear
``DataError``, not a failure at step 10,000.
"""

import dataclasses
import glob
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

__all__ = (
    "DIGITS_NUM_CLASSES",
    "DataError",
    "DatasetInfo",
    "build_dataset",
    "ImageCoder",
    "check_tfrecords",
    "digits_dataset",
    "get_dataset",
    "load_digits_split",
    "read_labels_file",
    "tfrecord_dataset",
    "tfrecord_files",
)

DIGITS_NUM_CLASSES = 10
DIGITS_VALIDATION_SIZE = 360
_DIGITS_SPLIT_SEED = 0
LABELS_FILENAME = "labels.txt"
# check_tfrecords decodes at most this many images (every record is parsed).
MAX_IMAGES_TO_DECODE = 1000


class DataError(ValueError):
  """The data cannot be used for training: says what, where and the fix."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the trainer needs to know about a dataset split."""

  name: str
  split: str
  num_examples: int
  num_classes: int
  files: Tuple[str, ...] = ()


# --- digits -----------------------------------------------------------------


def load_digits_split(split: str) -> Tuple[np.ndarray, np.ndarray]:
  """The digits of one split: uint8 [N, 8, 8] images (0..16), int64 labels.

  The split is fixed (stratified, seed 0): 1,437 ``train``, 360
  ``validation`` images.
  """
  # pylint: disable=g-import-not-at-top  (sklearn is slow to import)
  from sklearn import datasets as sk_datasets
  from sklearn import model_selection
  if split not in ("train", "validation"):
    raise DataError(f"The digits have the splits 'train' and 'validation', "
                    f"not {split!r}.")
  digits = sk_datasets.load_digits()
  images = digits.images.astype(np.uint8)
  labels = digits.target.astype(np.int64)
  train_x, val_x, train_y, val_y = model_selection.train_test_split(
      images, labels, test_size=DIGITS_VALIDATION_SIZE,
      random_state=_DIGITS_SPLIT_SEED, stratify=labels)
  if split == "train":
    return train_x, train_y
  return val_x, val_y


def preprocess_digits(images: tf.Tensor, image_size: int) -> tf.Tensor:
  """uint8 [..., 8, 8] digits (0..16) to [..., size, size, 3] in [-1, 1]."""
  images = tf.cast(images, tf.float32)[..., tf.newaxis] / 16.0
  images = tf.image.resize(images, [image_size, image_size],
                           method="bilinear")
  images = tf.image.grayscale_to_rgb(images)
  return images * 2.0 - 1.0


def digits_dataset(split: str, image_size: int, batch_size: int, *,
                   shuffle: bool = True, repeat: bool = True,
                   seed: Optional[int] = None) -> tf.data.Dataset:
  """Batches of (images, labels) from the digits' ``split``."""
  images, labels = load_digits_split(split)
  dataset = tf.data.Dataset.from_tensor_slices((images, labels))
  if shuffle:
    dataset = dataset.shuffle(len(labels), seed=seed,
                              reshuffle_each_iteration=True)
  if repeat:
    dataset = dataset.repeat()
  dataset = dataset.batch(batch_size, drop_remainder=repeat)
  return dataset.map(lambda x, y: (preprocess_digits(x, image_size), y))


# --- TFRecords ----------------------------------------------------------------


class ImageCoder:
  """Decodes PNG/JPEG bytes in a private graph, so it works in any TF mode.

  The approach of TF-Slim's ``download_and_convert_*`` scripts: one small
  graph and session, reused for every image.
  """

  def __init__(self):
    self._graph = tf.Graph()
    with self._graph.as_default():
      self._data = tf.compat.v1.placeholder(tf.string, [])
      self._shape = tf.shape(
          tf.io.decode_image(self._data, channels=3, expand_animations=False))
    self._session = tf.compat.v1.Session(graph=self._graph)

  def shape(self, encoded: bytes) -> Tuple[int, int]:
    """(height, width) of an encoded image; raises on undecodable bytes."""
    height, width, _ = self._session.run(self._shape,
                                         feed_dict={self._data: encoded})
    return int(height), int(width)

  def close(self) -> None:
    self._session.close()


def image_format(encoded: bytes) -> Optional[str]:
  """'png' or 'jpeg' from the bytes' signature; None for anything else."""
  if encoded.startswith(b"\x89PNG\r\n\x1a\n"):
    return "png"
  if encoded.startswith(b"\xff\xd8\xff"):
    return "jpeg"
  return None


def tfrecord_files(dataset_dir: str, split: str) -> List[str]:
  """The split's TFRecord files, or a ``DataError`` saying what is missing."""
  if not dataset_dir:
    raise DataError("--dataset_dir is empty: give the directory of TFRecord "
                    "files (see examples/convert_image_folders.py).")
  if not tf.io.gfile.isdir(dataset_dir):
    raise DataError(f"--dataset_dir {dataset_dir!r} does not exist or is not "
                    "a directory.")
  files = sorted(set(tf.io.gfile.glob(
      os.path.join(dataset_dir, f"{split}-*.tfrecord")) + tf.io.gfile.glob(
          os.path.join(dataset_dir, f"*_{split}_*.tfrecord"))))
  if not files:
    present = sorted(os.path.basename(f) for f in
                     glob.glob(os.path.join(dataset_dir, "*")))[:5]
    raise DataError(
        f"No TFRecord files for split {split!r} in {dataset_dir!r}: expected "
        f"{split}-*.tfrecord (or *_{split}_*.tfrecord), found "
        f"{present or 'nothing'}. Convert a folder of class folders with "
        "examples/convert_image_folders.py.")
  return files


def read_labels_file(dataset_dir: str) -> Optional[Dict[int, str]]:
  """``labels.txt`` (``id:name`` lines) as a dict, or None if absent."""
  path = os.path.join(dataset_dir, LABELS_FILENAME)
  if not tf.io.gfile.exists(path):
    return None
  labels = {}
  with tf.io.gfile.GFile(path) as f:
    for line_number, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      index, sep, name = line.partition(":")
      if not sep or not index.strip().isdigit():
        raise DataError(f"{path}:{line_number}: expected 'id:name', got "
                        f"{line!r}.")
      labels[int(index)] = name
  return labels


def _feature_value(example, key: str, kind: str):
  feature = example.features.feature.get(key)
  if feature is None:
    return None
  values = getattr(feature, kind).value
  return values[0] if len(values) == 1 else None


def check_tfrecords(files: Sequence[str], num_classes: int,
                    max_images_to_decode: int = MAX_IMAGES_TO_DECODE
                    ) -> Dict[int, int]:
  """Reads every record; returns {label: count} or raises ``DataError``.

  Every record's checksum is verified and it must parse as a
  ``tf.train.Example`` with one ``image/encoded``, ``image/class/label`` in
  ``[0, num_classes)`` and PNG or JPEG bytes; the first
  ``max_images_to_decode`` images are also decoded.
  """
  counts: Dict[int, int] = {}
  coder = ImageCoder()
  decoded = 0
  try:
    for path in files:
      index = -1
      try:
        for index, record in enumerate(
            tf.compat.v1.io.tf_record_iterator(path)):
          where = f"{path}, record {index}"
          try:
            example = tf.train.Example.FromString(record)
          except Exception as e:  # pylint: disable=broad-except
            raise DataError(f"Corrupt record ({where}): not a "
                            f"tf.train.Example ({e}).") from None
          encoded = _feature_value(example, "image/encoded", "bytes_list")
          label = _feature_value(example, "image/class/label", "int64_list")
          if encoded is None or label is None:
            raise DataError(
                f"Bad record ({where}): it needs one 'image/encoded' (bytes) "
                "and one 'image/class/label' (int64), as TF-Slim's "
                f"format has; it has {sorted(example.features.feature)}.")
          if not 0 <= label < num_classes:
            raise DataError(
                f"Label {label} out of range ({where}): --num_classes is "
                f"{num_classes}, so labels must be in [0, {num_classes - 1}]."
                " Set --num_classes to the dataset's number of classes.")
          if image_format(encoded) is None:
            raise DataError(f"Corrupt record ({where}): image/encoded is "
                            "neither PNG nor JPEG.")
          if decoded < max_images_to_decode:
            try:
              coder.shape(encoded)
            except tf.errors.OpError as e:
              raise DataError(f"Corrupt image ({where}): "
                              f"{e.message}") from None
            decoded += 1
          counts[label] = counts.get(label, 0) + 1
      except tf.errors.OpError as e:  # DataLossError: checksum, truncation.
        raise DataError(f"Corrupt TFRecord file {path} after record {index}: "
                        f"{e.message}") from None
  finally:
    coder.close()
  if not counts:
    raise DataError(f"No records in {', '.join(files)}: the files are "
                    "empty.")
  return counts


def _parse_example(record: tf.Tensor, image_size: int):
  features = tf.io.parse_single_example(record, {
      "image/encoded": tf.io.FixedLenFeature([], tf.string),
      "image/class/label": tf.io.FixedLenFeature([], tf.int64),
  })
  image = tf.io.decode_image(features["image/encoded"], channels=3,
                             expand_animations=False)
  image = tf.image.convert_image_dtype(image, tf.float32)
  image = tf.image.resize(image, [image_size, image_size])
  return image * 2.0 - 1.0, features["image/class/label"]


def tfrecord_dataset(files: Sequence[str], image_size: int, batch_size: int,
                     *, shuffle: bool = True, repeat: bool = True,
                     seed: Optional[int] = None) -> tf.data.Dataset:
  """Batches of (images, labels) from TF-Slim format TFRecord ``files``."""
  dataset = tf.data.TFRecordDataset(list(files))
  if shuffle:
    dataset = dataset.shuffle(10000, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    dataset = dataset.repeat()
  dataset = dataset.map(lambda r: _parse_example(r, image_size),
                        num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.batch(batch_size, drop_remainder=repeat).prefetch(1)


def get_dataset(name: Optional[str], dataset_dir: Optional[str], split: str,
                *, num_classes: Optional[int] = None) -> DatasetInfo:
  """Resolves and checks the trainer's and evaluator's dataset flags.

  Args:
    name: ``"digits"``, ``"tfrecord"``, or None for ``"tfrecord"`` when
      ``dataset_dir`` is set and ``"digits"`` otherwise.
    dataset_dir: the TFRecord directory (tfrecord only).
    split: ``"train"``, ``"validation"``, or for TFRecords any file prefix.
    num_classes: TFRecords: the number of classes; if None, the count of
      ``labels.txt`` entries. Digits: must be None or 10.

  Returns:
    A ``DatasetInfo`` for ``build_dataset``. Raises ``DataError`` for
    unusable data: every TFRecord is read once here (``check_tfrecords``).
  """
  if name is None:
    name = "tfrecord" if dataset_dir else "digits"
  if name == "digits":
    if dataset_dir:
      raise DataError("--dataset_dir is for --dataset_name=tfrecord; the "
                      "digits need no files.")
    if num_classes not in (None, DIGITS_NUM_CLASSES):
      raise DataError(f"The digits have {DIGITS_NUM_CLASSES} classes; "
                      f"--num_classes={num_classes} does not match.")
    _, labels = load_digits_split(split)
    return DatasetInfo("digits", split, len(labels), DIGITS_NUM_CLASSES)
  if name != "tfrecord":
    raise DataError(f"Unknown dataset_name {name!r}: use 'digits' or "
                    "'tfrecord'.")
  files = tfrecord_files(dataset_dir, split)
  if num_classes is None:
    labels = read_labels_file(dataset_dir)
    if not labels:
      raise DataError(f"Set --num_classes: {dataset_dir!r} has no "
                      f"{LABELS_FILENAME} to count the classes from.")
    num_classes = max(labels) + 1
  if num_classes < 2:
    raise DataError(f"--num_classes must be at least 2, got {num_classes}.")
  counts = check_tfrecords(files, num_classes)
  return DatasetInfo("tfrecord", split, sum(counts.values()), num_classes,
                     tuple(files))


def build_dataset(info: DatasetInfo, image_size: int, batch_size: int, *,
                  shuffle: bool = True, repeat: bool = True,
                  seed: Optional[int] = None) -> tf.data.Dataset:
  """Batches of (images, labels) of a checked dataset, in the default graph.

  For training, ``repeat`` (which drops the last partial batch) and
  ``shuffle``; for evaluation, neither.
  """
  if info.name == "digits":
    return digits_dataset(info.split, image_size, batch_size,
                          shuffle=shuffle, repeat=repeat, seed=seed)
  return tfrecord_dataset(info.files, image_size, batch_size, shuffle=shuffle,
                          repeat=repeat, seed=seed)
