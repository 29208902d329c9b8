"""Datasets: MNIST-like sets (:mod:`experiments.data.mnist`: loading, caching, batching)
and ImageNet (:mod:`experiments.data.imagenet`: JPEG reading, preprocessing, preparation).

Nothing here imports the training loop, the CLIs or the models."""
