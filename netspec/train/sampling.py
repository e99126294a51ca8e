"""Which images each process sees: global batches split across replicas, sharded evaluation.

`train.batch_size` is the global batch whatever the number of processes, so a spec means
the same at any process count: global batch t of an epoch holds the same images for one
process or eight. The epoch's order is one permutation of the whole training set (drawn
from the epoch's generator, identical in every process), cut into global batches with the
last partial one dropped; replica r takes the r-th contiguous slice of each. The slices of
one step, put back together in replica order, are exactly the one-process batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class GlobalBatches(Sampler[list[int]]):
    """A DataLoader `batch_sampler`: replica `replica`'s slice of every global batch."""

    def __init__(
        self, images: int, batch_size: int, seed: int, replica: int = 0, replicas: int = 1
    ) -> None:
        if batch_size % replicas:
            raise ValueError(f"batch size {batch_size} does not split into {replicas} replicas")
        self.images, self.batch_size, self.seed = images, batch_size, seed
        self.replica, self.replicas = replica, replicas

    def __len__(self) -> int:
        return self.images // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.images, generator=torch.Generator().manual_seed(self.seed))
        part = self.batch_size // self.replicas
        for step in range(len(self)):
            start = step * self.batch_size + self.replica * part
            yield order[start : start + part].tolist()


def shard(images: int, replica: int, replicas: int) -> range:
    """Replica `replica`'s contiguous share of `images` items for evaluation: every item
    exactly once across the replicas (no padding, unlike DistributedSampler), so sums over
    the shards equal the sums over the whole set."""
    return range(images * replica // replicas, images * (replica + 1) // replicas)
