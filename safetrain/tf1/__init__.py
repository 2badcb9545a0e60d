"""The TF1 entry points: the safe train op, clones and replicas, the guard.

``_train`` wraps tf_slim's ``create_train_op`` and ``get_total_loss``
(``create_train_op_safe``, ``total_loss_from``), ``_deploy`` builds and
checks clone and replica losses so regularization counts once, and
``_guard`` checks each ``tf.compat.v1.train.Optimizer`` update. Each asks
the rule (``safetrain.rule``) for the verdict; none decides one itself.
The modules are private; the public names are ``safetrain``'s.
"""
