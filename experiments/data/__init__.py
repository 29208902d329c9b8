"""Datasets: MNIST-like sets (:mod:`experiments.data.mnist`: loading, caching, batching),
ImageNet (:mod:`experiments.data.imagenet`: JPEG reading, preprocessing, preparation) and
byte-level text (:mod:`experiments.data.text`: the King James Bible, split by books).

Nothing here imports the training loop, the CLIs or the models."""
