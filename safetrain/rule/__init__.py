"""The rule: which regularization a loss must include, and the one verdict.

From an update (a loss and the variables it trains) to a verdict:
``_trace`` recovers the loss and variables of a built train op, ``_check``
says which terms are required and included (and how many times, through
``graph._coefficient``), ``_report`` holds the result as data, text and
JSON, and ``_policy`` turns it into the one verdict and action that every
entry point takes. ``_args`` checks the arguments of the public functions,
``_on_missing`` names the policy's choices (without TensorFlow, for the
command), and ``_installed`` holds the policy the process-wide guard
applies now.
The modules are private; the public names are ``safetrain``'s.
"""
