"""What ``safetrain run`` loads into the command's Python processes.

``cli.run_command`` puts this directory first on the command's
``PYTHONPATH``, so Python imports ``sitecustomize`` from here at start-up
(see that module). Nothing else in the directory is importable by name.
"""
