"""Which rows of a global batch one process reads (shared by every data source)."""

from __future__ import annotations

__all__ = ["check_shard", "shard_rows"]


def check_shard(batch_size: int, shard_index: int, num_shards: int) -> int:
    """Rows per shard of a global batch of ``batch_size``; ValueError naming bad values.

    Shard ``i`` reads the contiguous rows ``[i * per_shard, (i + 1) * per_shard)``.
    """
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"need 0 <= shard_index < num_shards, got {shard_index}, {num_shards}")
    if batch_size <= 0 or batch_size % num_shards:
        raise ValueError(
            f"batch_size {batch_size} must be a positive multiple of num_shards {num_shards}"
        )
    return batch_size // num_shards


def shard_rows(batch_size: int, shard_index: int, num_shards: int) -> slice:
    """The rows of a global batch that shard ``shard_index`` reads (:func:`check_shard`)."""
    per_shard = check_shard(batch_size, shard_index, num_shards)
    return slice(shard_index * per_shard, (shard_index + 1) * per_shard)
