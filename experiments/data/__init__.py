"""Datasets: MNIST-like sets (:mod:`experiments.data.mnist`: loading, caching, batching),
ImageNet (:mod:`experiments.data.imagenet`: JPEG reading, preprocessing, preparation) and
byte-level text (:mod:`experiments.data.text`: the King James Bible, split by books).

Nothing here imports the training loop, the CLIs or the models."""


def check_eval_subset(eval_subset: int) -> None:
    """Refuses a negative ``eval_subset`` (the sources' "first N evaluation examples"; 0: all)."""
    if eval_subset < 0:
        raise ValueError(f"eval_subset must be >= 0 (0: all), got {eval_subset}")
