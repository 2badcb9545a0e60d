"""Tests for the examples' data: digits, the converter, TFRecords, bad data."""

import io
import os
from unittest import mock

from absl import app
from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image
import tensorflow as tf

import safetrain  # pylint: disable=unused-import  (tf_slim on current TF)
from examples import convert_image_folders
from examples import datasets

import helpers


def make_image_folders(root: str, per_class: int = 4, classes=("cat", "dog",
                                                               "emu")) -> str:
  """Class folders of tiny images: PNG and JPEG, odd sizes, one stray file."""
  for label, name in enumerate(classes):
    folder = os.path.join(root, name)
    os.makedirs(folder)
    for i in range(per_class):
      # Solid colours (so JPEG keeps them): red says the class.
      pixels = np.empty((10 + i, 12, 3), np.uint8)
      pixels[...] = (40 * label, 30 * i, 200)
      ext = "png" if i % 2 else "jpg"
      Image.fromarray(pixels).save(os.path.join(folder, f"{i}.{ext}"))
  with open(os.path.join(root, classes[0], "notes.txt"), "w") as f:
    f.write("not an image")
  return root


def make_tempdir(test: absltest.TestCase) -> str:
  return helpers.make_tempdir(test, prefix="safetrain_examples_")


parse_flags = helpers.parse_flags


def read_batches(make_dataset):
  """Every (images, labels) batch of a finite dataset, in a fresh graph."""
  with tf.Graph().as_default():
    next_batch = tf.compat.v1.data.make_one_shot_iterator(
        make_dataset()).get_next()
    batches = []
    with tf.compat.v1.Session() as session:
      while True:
        try:
          batches.append(session.run(next_batch))
        except tf.errors.OutOfRangeError:
          return batches


def write_records(path: str, records) -> None:
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)


def png_bytes() -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, format="PNG")
  return buffer.getvalue()


def example(label: int, encoded=None, **drop) -> bytes:
  record = convert_image_folders.image_to_tfexample(
      encoded if encoded is not None else png_bytes(), "png", 4, 4, label)
  for key in drop.get("without", ()):
    del record.features.feature[key]
  return record.SerializeToString()


class DigitsTest(absltest.TestCase):

  def test_fixed_split(self):
    train_x, train_y = datasets.load_digits_split("train")
    val_x, val_y = datasets.load_digits_split("validation")
    self.assertEqual((len(train_y), len(val_y)), (1437, 360))
    self.assertEqual(train_x.shape[1:], (8, 8))
    # Stratified: every class in both splits.
    self.assertLen(np.unique(val_y), 10)
    again_x, again_y = datasets.load_digits_split("validation")
    np.testing.assert_array_equal(val_x, again_x)
    np.testing.assert_array_equal(val_y, again_y)

  def test_unknown_split(self):
    with self.assertRaisesRegex(datasets.DataError, "'train' and "
                                "'validation', not 'test'"):
      datasets.load_digits_split("test")

  def test_batches_scaled_to_image_size(self):
    info = datasets.get_dataset(None, None, "validation")
    self.assertEqual((info.name, info.num_examples, info.num_classes),
                     ("digits", 360, 10))
    batches = read_batches(lambda: datasets.build_dataset(
        info, 32, 100, shuffle=False, repeat=False))
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    self.assertEqual(images.shape, (360, 32, 32, 3))
    self.assertGreaterEqual(images.min(), -1.0)
    self.assertLessEqual(images.max(), 1.0)
    self.assertGreater(images.max() - images.min(), 1.5)
    np.testing.assert_array_equal(labels,
                                  datasets.load_digits_split("validation")[1])

  def test_digits_refuse_tfrecord_flags(self):
    with self.assertRaisesRegex(datasets.DataError, "--dataset_dir is for"):
      datasets.get_dataset("digits", "/tmp", "train")
    with self.assertRaisesRegex(datasets.DataError, "10 classes"):
      datasets.get_dataset("digits", None, "train", num_classes=5)


class ConverterTest(absltest.TestCase):

  def test_converts_and_reads_back(self):
    root = make_image_folders(make_tempdir(self))
    out = make_tempdir(self)
    written = convert_image_folders.convert(root, out, validation_fraction=0.25,
                                            images_per_shard=4)
    self.assertEqual(written, {"train": 9, "validation": 3})
    self.assertEqual(datasets.read_labels_file(out),
                     {0: "cat", 1: "dog", 2: "emu"})
    self.assertLen(datasets.tfrecord_files(out, "train"), 3)  # 9 / 4 shards.
    info = datasets.get_dataset(None, out, "train")  # Classes: labels.txt.
    self.assertEqual((info.name, info.num_examples, info.num_classes),
                     ("tfrecord", 9, 3))
    batches = read_batches(lambda: datasets.build_dataset(
        info, 16, 4, shuffle=False, repeat=False))
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    self.assertEqual(images.shape, (9, 16, 16, 3))
    self.assertEqual(sorted(np.bincount(labels)), [3, 3, 3])
    # Red channel encodes the class (40 * label), JPEG or PNG alike.
    red = (images[..., 0].mean(axis=(1, 2)) + 1) / 2 * 255
    np.testing.assert_allclose(red, 40 * labels, atol=4)

  def test_standard_features(self):
    root = make_image_folders(make_tempdir(self),
                              per_class=2)
    out = make_tempdir(self)
    convert_image_folders.convert(root, out, validation_fraction=0.0)
    path, = datasets.tfrecord_files(out, "train")
    formats = set()
    for record in tf.compat.v1.io.tf_record_iterator(path):
      features = tf.train.Example.FromString(record).features.feature
      self.assertContainsSubset(
          ["image/encoded", "image/format", "image/class/label",
           "image/height", "image/width"], list(features))
      formats.add(features["image/format"].bytes_list.value[0])
      self.assertEqual(features["image/width"].int64_list.value[0], 12)
    self.assertEqual(formats, {b"png", b"jpeg"})

  def test_needs_two_class_folders(self):
    root = make_tempdir(self)
    os.makedirs(os.path.join(root, "only"))
    with self.assertRaisesRegex(datasets.DataError, "1 class folders"):
      convert_image_folders.convert(root, make_tempdir(self))


class ConverterMainTest(absltest.TestCase):

  def _main(self, *args: str) -> int:
    argv = ["convert_image_folders.py", *args]
    parse_flags(self, argv)
    return convert_image_folders.main(argv[:1])

  def test_exit_codes(self):
    root = make_image_folders(make_tempdir(self), per_class=2)
    out = os.path.join(make_tempdir(self), "records")
    with mock.patch("sys.stdout", new_callable=io.StringIO) as stdout:
      self.assertEqual(self._main(f"--image_dir={root}",
                                  f"--tfrecord_dir={out}"), 0)
    # At least one image of each class goes to validation.
    self.assertIn("train: 3 images\nvalidation: 3 images", stdout.getvalue())
    self.assertEqual(self._main(f"--image_dir={root}/missing",
                                f"--tfrecord_dir={out}"), 2)
    with self.assertRaisesRegex(app.UsageError, "are required") as e:
      self._main(f"--image_dir={root}")
    self.assertEqual(e.exception.exitcode, 2)


class BadDataTest(parameterized.TestCase):
  """Each way data can be unusable gets a DataError that says so."""

  def _dir_with(self, records=None, corrupt=None, labels=True) -> str:
    path = make_tempdir(self)
    if records is not None:
      filename = os.path.join(path, "train-00000-of-00001.tfrecord")
      write_records(filename, records)
      if corrupt:
        data = bytearray(open(filename, "rb").read())
        corrupt(data)
        with open(filename, "wb") as f:
          f.write(bytes(data))
    if labels:
      with open(os.path.join(path, "labels.txt"), "w") as f:
        f.write("0:a\n1:b\n")
    return path

  def _flip_byte(self, data: bytearray) -> None:
    data[len(data) // 2] ^= 0xFF

  def _truncate(self, data: bytearray) -> None:
    del data[-7:]

  @parameterized.named_parameters(
      ("no_files", None, None, r"No TFRecord files for split 'train'"),
      ("empty_file", [], None, r"No records in"),
      ("checksum", [example(0), example(1)], "_flip_byte",
       r"Corrupt TFRecord file .*train-00000-of-00001\.tfrecord"),
      ("truncated", [example(0), example(1)], "_truncate",
       r"Corrupt TFRecord file"),
      ("not_an_example", [b"\x01\x02garbage"], None,
       r"Corrupt record \(.*record 0\): not a tf.train.Example"),
      ("no_label", [example(0, without=["image/class/label"])], None,
       r"Bad record .* needs one 'image/encoded' .* and one "
       r"'image/class/label'"),
      ("label_out_of_range", [example(0), example(2)], None,
       r"Label 2 out of range \(.*record 1\): --num_classes is 2, so labels "
       r"must be in \[0, 1\]"),
      ("negative_label", [example(-1)], None, r"Label -1 out of range"),
      ("not_an_image", [example(0, encoded=b"GIF89a...")], None,
       r"neither PNG nor JPEG"),
      ("undecodable_png", [example(0, encoded=b"\x89PNG\r\n\x1a\nbroken")],
       None, r"Corrupt image \(.*record 0\)"),
  )
  def test_bad_records(self, records, corrupt, message):
    path = self._dir_with(records, corrupt and getattr(self, corrupt))
    with self.assertRaisesRegex(datasets.DataError, message):
      datasets.get_dataset("tfrecord", path, "train")

  def test_missing_dir(self):
    missing = os.path.join(make_tempdir(self), "nope")
    with self.assertRaisesRegex(datasets.DataError,
                                r"--dataset_dir '.*nope' does not exist"):
      datasets.get_dataset(None, missing, "train")

  def test_no_labels_file_needs_num_classes(self):
    path = self._dir_with([example(0), example(1)], labels=False)
    with self.assertRaisesRegex(datasets.DataError, "Set --num_classes"):
      datasets.get_dataset("tfrecord", path, "train")
    info = datasets.get_dataset("tfrecord", path, "train", num_classes=2)
    self.assertEqual(info.num_examples, 2)

  def test_good_records_pass(self):
    path = self._dir_with([example(0), example(1), example(1)])
    self.assertEqual(datasets.check_tfrecords(
        datasets.tfrecord_files(path, "train"), 2), {0: 1, 1: 2})


if __name__ == "__main__":
  absltest.main()
