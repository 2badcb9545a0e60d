"""Where regularization comes from: the term sources the rule asks.

A regularization term reaches the rule from a registry, or is found by what
it computes: TensorFlow's ``REGULARIZATION_LOSSES`` collection, Keras layers
in a v1 graph (``_keras``), weight decay registered by hand in any
collection or none (``_penalties``). ``_forms`` reads a term's form on a
variable (``c * sum(w^2)``, ...), and ``_decoupled`` the decay an
optimizer's own update applies. Each module answers which terms exist and
which variables they decay; none of them judges a loss.
The modules are private; the public names are ``safetrain``'s.
"""
