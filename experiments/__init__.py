"""Experiments built on admmjax: data, models and the training pipeline.

Importing any module of this package changes no global state; the CLIs pick the CPU
kernels and XLA flags at start-up with :func:`experiments.kernels.configure_cpu`.
"""
