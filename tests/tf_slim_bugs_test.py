"""tf_slim 1.1.0's own bugs, fixed by ``import safetrain`` (``_slim_fixes``).

Each scenario runs twice in a fresh process: with ``import safetrain`` it
must work, and without it it must fail as tf_slim 1.1.0 does on current
NumPy and TensorFlow, so each test proves that the fix is what makes it pass.
"""

import subprocess
import sys
import textwrap

from absl.testing import absltest
from absl.testing import parameterized

_SCENARIOS = textwrap.dedent("""
    import os, sys, tempfile
    import numpy as np
    import tensorflow as tf
    if sys.argv[1] == "with":
      import safetrain
    import tf_slim as slim
    from tf_slim.metrics import metric_ops

    def partitioned(name):
      return tf.compat.v1.get_variable(
          name, shape=[6, 2], initializer=tf.compat.v1.zeros_initializer(),
          partitioner=tf.compat.v1.fixed_size_partitioner(3))

    def assign_partitioned(with_whole=False):
      directory = tempfile.mkdtemp()
      values = np.arange(12, dtype=np.float32).reshape(6, 2)
      with tf.Graph().as_default():
        w = partitioned("w")
        with tf.compat.v1.Session() as sess:
          sess.run(tf.compat.v1.global_variables_initializer())
          for part, rows in zip(w, np.split(values, 3)):
            part.load(rows, sess)
          path = tf.compat.v1.train.Saver().save(
              sess, os.path.join(directory, "model"))
      with tf.Graph().as_default():
        w = partitioned("w")
        # One checkpoint name for the partitions and a whole variable too.
        whole = [tf.compat.v1.get_variable("whole", shape=[6, 2])]
        var_list = {"w": list(w) + whole} if with_whole else list(w)
        op, feed = slim.assign_from_checkpoint(path, var_list)
        with tf.compat.v1.Session() as sess:
          sess.run(tf.compat.v1.global_variables_initializer())
          sess.run(op, feed)
          restored = np.concatenate(sess.run(list(w)))
          if with_whole and not np.array_equal(sess.run(whole[0]), values):
            return "wrong whole"
      return "ok" if np.array_equal(restored, values) else "wrong values"

    def concat_size():
      with tf.Graph().as_default():
        size = metric_ops._next_array_size(7371556)
        with tf.compat.v1.Session() as sess:
          value = sess.run(size)
      return "ok" if value >= 7371556 else "too small: %d" % value

    def covariance(metric):
      # Two batches: the first all padding (weight 0), the second weighted.
      x = np.array([[9., -9., 9.], [1., 2., 4.]], np.float32)
      y = np.array([[-9., 9., 9.], [2., 1., 5.]], np.float32)
      w = np.array([[0., 0., 0.], [1., 2., 1.]], np.float32)
      cov = np.cov(x[1], y[1], fweights=w[1].astype(int))
      expected = {"covariance": cov[0, 1],
                  "pearson": cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])}
      with tf.Graph().as_default():
        xs, ys, ws = (tf.compat.v1.placeholder(tf.float32, [3])
                      for _ in range(3))
        value, update = getattr(slim.metrics, {
            "covariance": "streaming_covariance",
            "pearson": "streaming_pearson_correlation"}[metric])(
                xs, ys, weights=ws)
        with tf.compat.v1.Session() as sess:
          sess.run(tf.compat.v1.local_variables_initializer())
          for batch in range(2):
            sess.run(update, {xs: x[batch], ys: y[batch], ws: w[batch]})
          result = sess.run(value)
      if np.isclose(result, expected[metric], rtol=1e-5):
        return "ok"
      return "nan" if np.isnan(result) else "wrong: %r" % result

    name = sys.argv[2]
    try:
      outcome = {"assign_partitioned": assign_partitioned,
                 "assign_partitioned_and_whole":
                     lambda: assign_partitioned(with_whole=True),
                 "concat_size": concat_size,
                 "covariance_zero_weights": lambda: covariance("covariance"),
                 "pearson_zero_weights": lambda: covariance("pearson"),
                 }[name]()
    except Exception as e:
      outcome = type(e).__name__
    print("RESULT", outcome)
""")


def _run(with_safetrain, scenario):
  result = subprocess.run(
      [sys.executable, "-c", _SCENARIOS,
       "with" if with_safetrain else "without", scenario],
      capture_output=True, text=True, timeout=300, check=False)
  lines = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")]
  if not lines:
    raise AssertionError(result.stderr[-3000:])
  return lines[-1][len("RESULT "):]


class TfSlimBugsTest(parameterized.TestCase):

  @parameterized.named_parameters(
      # NumPy >= 1.23 refuses a list of slices as an index.
      ("assign_from_checkpoint_partitioned", "assign_partitioned",
       "IndexError"),
      # The same, with a whole variable under the partitions' name too
      # (upstream's testLoadPartitionedVariables after 1.1.0).
      ("assign_from_checkpoint_partitioned_and_whole",
       "assign_partitioned_and_whole", "IndexError"),
      # float32 logarithms round the capacity below the size required.
      ("streaming_concat_large_size", "concat_size", "too small: 7371555"),
      # 0/0 in the comoment merge while the weights seen sum to zero: NaN
      # for every later batch (upstream's testMultiUpdateWithErrorAndWeights).
      ("streaming_covariance_zero_weight_batch", "covariance_zero_weights",
       "nan"),
      ("streaming_pearson_correlation_zero_weight_batch",
       "pearson_zero_weights", "nan"),
  )
  def test_fixed_by_safetrain(self, scenario, failure_without):
    self.assertEqual(_run(False, scenario), failure_without)
    self.assertEqual(_run(True, scenario), "ok")


if __name__ == "__main__":
  absltest.main()
