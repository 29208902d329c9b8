"""Experiments built on admmjax: data, models and the training pipeline."""

from experiments.cpu_kernels import enable_fast_cpu_kernels

# Before any JAX computation: XLA reads XLA_FLAGS when its CPU backend starts.
enable_fast_cpu_kernels()
