"""safetrain's examples: trainers, nets, data and the weight-decay experiment.

Run them as scripts from the repository root (``python
examples/train_image_classifier.py --help``); tests import them as the
``examples`` package.
"""
