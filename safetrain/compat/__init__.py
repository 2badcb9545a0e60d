"""tf_slim 1.1.0 on current TensorFlow, and a quiet start for the command.

``_compat`` puts back the names TensorFlow moved where tf_slim looks for
them; ``_slim_fixes`` replaces tf_slim functions that are wrong on current
TensorFlow and NumPy; ``_quiet`` keeps TensorFlow's C++ start-up lines off
the ``safetrain`` command's own stderr; ``_on_import`` runs an action when
a module (tf_slim) is imported, so ``import safetrain`` loads nothing heavy.
Nothing here knows the rule.
The modules are private; the public names are ``safetrain``'s.
"""
