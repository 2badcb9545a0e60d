"""The TF2 entry points: the tape and Keras optimizers' decoupled decay.

``_tape`` is ``safetrain.GradientTape`` (and the guard on
``tf.GradientTape`` under ``safetrain run``); ``_keras_decay`` checks a
Keras optimizer's ``weight_decay`` against the loss's terms; ``_tf2``
holds what both share: the terms Keras regularizers compute while a tape
records, and the replica rule under a strategy.
The modules are private; the public names are ``safetrain``'s.
"""
