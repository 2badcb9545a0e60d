"""``--on_missing``: what safetrain does when a loss leaves out weight decay.

The same name and choices as the library's ``on_missing`` and ``safetrain
run --on_missing``; read by the trainer and the Keras custom loop (see
``model_flags`` for how the example programs share flags). The default is
the trainer's, ``add``; the Keras loop sets ``raise`` in its ``__main__``
block, so ``--loop=broken`` stops at the first step.
"""

from absl import flags

ON_MISSING = flags.DEFINE_enum(
    "on_missing", "add", ("raise", "add", "warn"),
    "What safetrain does when the optimized loss leaves out regularization "
    "losses: add them (and say so), raise MissingRegularizationError, or "
    "warn and train without them.")
