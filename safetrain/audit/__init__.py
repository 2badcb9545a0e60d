"""The audit of saved training graphs (``safetrain.audit_meta_graph``).

A MetaGraph file is untrusted input: ``_legacy`` repairs, in the parsed
protobuf, what today's importer refuses in graphs an older TensorFlow wrote;
``_audit`` imports the graph without running anything, finds its train ops,
traces each to its loss and variables, and judges them with the rule, so a
saved graph gets the verdict the live check gives. The ``safetrain audit``
command (``safetrain.cli``) prints it.
The modules are private; the public names are ``safetrain``'s.
"""
