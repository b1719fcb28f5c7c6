"""Command-line training and benchmark entry points (`python -m train.mnist`, `train.cifar`, `train.bench`)."""
