"""safetrain's version: ``safetrain.__version__`` and ``setup.cfg`` read it.

A module of its own, below everything, so the command line can print it
without importing the package's public names (and with them TensorFlow).
"""

__version__ = "0.1.0"
