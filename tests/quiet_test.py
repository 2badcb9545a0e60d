"""Tests for safetrain.compat._quiet: the command's stderr, without TF noise.

The lines below are the ones TensorFlow 2.21 and 2.15 printed here
(``tensorflow``, the CUDA build, on a machine without a GPU;
``tensorflow-cpu``). The command's own process with each package is tested
in ``command_test``.
"""

import os
import subprocess
import sys
import textwrap
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized

from safetrain.compat import _quiet

_NOISE_221 = (
    "WARNING: All log messages before absl::InitializeLog() is called are "
    "written to STDERR",
    "I0000 00:00:1796660053.121029   14947 cudart_stub.cc:31] Could not find "
    "cuda drivers on your machine, GPU will not be used.",
    "E0000 00:00:1796660070.934552   15128 cuda_platform.cc:52] failed call "
    "to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR "
    "(303)",
)
_NOISE_215 = (  # tensorflow 2.15.1, the CUDA build, without a GPU.
    "2026-12-07 16:25:30.631035: I external/local_tsl/tsl/cuda/"
    "cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU "
    "will not be used.",
    "2026-12-07 16:25:30.997821: E external/local_xla/xla/stream_executor/"
    "cuda/cuda_dnn.cc:9261] Unable to register cuDNN factory: Attempting to "
    "register factory for plugin cuDNN when one has already been registered",
    "2026-12-07 16:25:30.997874: E external/local_xla/xla/stream_executor/"
    "cuda/cuda_fft.cc:607] Unable to register cuFFT factory: Attempting to "
    "register factory for plugin cuFFT when one has already been registered",
    "2026-12-07 16:25:31.024778: E external/local_xla/xla/stream_executor/"
    "cuda/cuda_blas.cc:1515] Unable to register cuBLAS factory: Attempting "
    "to register factory for plugin cuBLAS when one has already been "
    "registered",
    "2026-12-07 16:25:33.208393: W tensorflow/compiler/tf2tensorrt/utils/"
    "py_utils.cc:38] TF-TRT Warning: Could not find TensorRT",
)
_KEPT = (
    "E0000 00:00:1796660070.934552   15128 meta_graph.cc:1] could not read",
    "W0000 00:00:1796660070.934552   15128 cuda_platform.cc:52] other",
    "I0000 00:00:1796660064.591199   15128 cpu_feature_guard.cc:227] This "
    "TensorFlow binary is optimized to use available CPU instructions in "
    "performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, "
    "rebuild TensorFlow with the appropriate compiler flags.",
    "[safetrain] audit: /x.meta: no such file or directory.",
    "Traceback (most recent call last):",
    "my script: failed call to cuInit: I print this myself",
)


class NoiseTest(parameterized.TestCase):

  @parameterized.parameters(*(_NOISE_221 + _NOISE_215))
  def test_start_up_line_is_noise(self, line):
    self.assertTrue(_quiet.STARTUP_NOISE.match(line + "\n"), line)

  @parameterized.parameters(*_KEPT)
  def test_other_line_is_kept(self, line):
    self.assertFalse(_quiet.STARTUP_NOISE.match(line + "\n"), line)


_FILTERED = """
import os, sys
from safetrain.compat import _quiet
print("before", file=sys.stderr, flush=True)
with _quiet.filtered_stderr(_quiet.STARTUP_NOISE):
  for line in sys.argv[1:]:
    os.write(2, (line + "\\n").encode())  # As C++ writes: the descriptor.
  print("python's own", file=sys.stderr)
  sys.stderr.write("no newline")
print(" after", file=sys.stderr)
"""


class FilteredStderrTest(absltest.TestCase):

  def test_passes_on_every_other_line_in_order(self):
    lines = list(_NOISE_221 + _KEPT[:2] + _NOISE_221 + _KEPT[4:5])
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_FILTERED), *lines],
        capture_output=True, text=True, timeout=120, check=True)
    self.assertEqual(result.stderr.splitlines(), [
        "before", _KEPT[0], _KEPT[1], _KEPT[4], "python's own",
        "no newline after"])


class TensorflowQuietedTest(absltest.TestCase):

  def _quieted(self, environ, enabled):
    with mock.patch.dict("os.environ", environ, clear=True), \
        mock.patch.object(_quiet, "_set_here", False), \
        mock.patch.object(_quiet, "_enabled", enabled), \
        mock.patch.object(_quiet, "filtered_stderr") as filtered:
      with _quiet.tensorflow_quieted():
        mine = dict(os.environ)
      return mine, _quiet.child_environ(os.environ), filtered.called

  def test_the_command_quiets_info_and_its_child_gets_the_users_environ(self):
    mine, child, filtered = self._quieted({"HOME": "/h"}, enabled=True)
    self.assertEqual(mine, {"HOME": "/h", _quiet.ENV: "1"})
    self.assertEqual(child, {"HOME": "/h"})
    self.assertTrue(filtered)

  def test_a_users_setting_is_kept_for_both(self):
    for value in ("0", "1", "3"):
      mine, child, _ = self._quieted({_quiet.ENV: value}, enabled=True)
      self.assertEqual(mine, {_quiet.ENV: value})
      self.assertEqual(child, {_quiet.ENV: value})

  def test_outside_the_command_nothing_changes(self):
    # A test calling cli.main, or a program that imports the cli.
    mine, child, filtered = self._quieted({"HOME": "/h"}, enabled=False)
    self.assertEqual(mine, {"HOME": "/h"})
    self.assertEqual(child, {"HOME": "/h"})
    self.assertFalse(filtered)


if __name__ == "__main__":
  absltest.main()
