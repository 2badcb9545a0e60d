r"""What ``safetrain --help`` costs next to importing TensorFlow, side by side.

Starts fresh processes, alternately, ``--repeats`` times each:

    safetrain --help                  the installed console script
    safetrain audit                   a usage error (exit 2)
    python -c "import tensorflow"     the baseline

and prints each one's median wall time and the ratios to the baseline. The
command answers help, version and usage errors before it imports
TensorFlow. Target: ``--help`` at most 0.1 of the baseline.

Usage:
    python benchmarks/cli_startup.py [--repeats=7]
"""

import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Sequence

from absl import app
from absl import flags

_REPEATS = flags.DEFINE_integer("repeats", 7, "Runs of each command.",
                                lower_bound=1)

_SCRIPT = os.path.join(os.path.dirname(sys.executable), "safetrain")
_COMMANDS = {
    "safetrain --help": [_SCRIPT, "--help"],
    "safetrain audit (usage error)": [_SCRIPT, "audit"],
    'python -c "import tensorflow"': [sys.executable, "-c",
                                      "import tensorflow"],
}
_BASELINE = 'python -c "import tensorflow"'


def _seconds(command: Sequence[str]) -> float:
  start = time.perf_counter()
  subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                 check=False)
  return time.perf_counter() - start


def medians(repeats: int) -> Dict[str, float]:
  """Each command's median wall time, the runs interleaved."""
  for command in _COMMANDS.values():  # Warm the file cache once.
    _seconds(command)
  times: Dict[str, List[float]] = {name: [] for name in _COMMANDS}
  for _ in range(repeats):
    for name, command in _COMMANDS.items():
      times[name].append(_seconds(command))
  return {name: statistics.median(t) for name, t in times.items()}


def main(argv):
  del argv
  print("# cli_startup\n")
  result = medians(_REPEATS.value)
  baseline = result[_BASELINE]
  print(f"median of {_REPEATS.value} runs each, interleaved:")
  for name, seconds in result.items():
    print(f"  {name:<32} {seconds:7.3f} s   {seconds / baseline:.3f}")
  print(f"safetrain --help / import tensorflow = "
        f"{result['safetrain --help'] / baseline:.3f}   (target <= 0.1)")


if __name__ == "__main__":
  app.run(main)
