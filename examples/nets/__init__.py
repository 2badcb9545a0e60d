"""Slim networks for the examples: LeNet, MobileNetV2 and a factory."""
