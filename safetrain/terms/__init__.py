"""Where regularization comes from: the term sources the rule asks.

A regularization term reaches the rule from a registry: TensorFlow's
``REGULARIZATION_LOSSES`` collection, Keras layers in a v1 graph
(``_keras``), Keras variables in TF2. Each module answers which terms exist
and which variables they regularize; none of them judges a loss.
The modules are private; the public names are ``safetrain``'s.
"""
