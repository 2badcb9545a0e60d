"""The process-wide guard: ``safetrain run`` on unchanged scripts.

``safetrain run`` puts ``_run_hook`` first on the command's
``PYTHONPATH``; its ``sitecustomize`` installs the guard on every
optimizer and tape in each Python process the command starts, and the
tf_slim fixes when the script imports tf_slim.
The modules are private; the public names are ``safetrain``'s.
"""
