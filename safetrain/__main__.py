"""``python -m safetrain``: the safetrain command line (see safetrain.cli)."""

from safetrain import cli

if __name__ == "__main__":
  cli.run()
