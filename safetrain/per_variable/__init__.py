"""The weight-decay ledger: per variable, how it is decayed and how strongly.

``safetrain.ledger`` and ``safetrain audit --per-variable``: one row per
trainable variable, its kind (read from the op that consumes it), the
mechanisms that decay it (a loss term, an optimizer's decoupled decay) and
what one step does to it. ``_ledger`` reads a v1 graph, ``_ledger_keras``
a Keras model and optimizer, ``_ledger_text`` prints the table. (The
package is not named ``ledger``: that is the public function.)
The modules are private; the public names are ``safetrain``'s.
"""
