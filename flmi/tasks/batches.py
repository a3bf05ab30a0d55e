"""Seeded mini-batch schedules shared by every task's local training."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def batch_indices(
    *, n: int, batch_size: int, local_epochs: int, local_steps: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Yield index batches for one round of local training.

    With ``local_steps > 0`` exactly that many batches are drawn, reshuffling at
    each pass over the data; otherwise every example is seen ``local_epochs``
    times. The last batch of a pass may be smaller than ``batch_size``.
    """
    if n < 1:
        return
    steps = 0
    epoch = 0
    while True:
        if local_steps <= 0 and epoch >= local_epochs:
            return
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            if 0 < local_steps <= steps:
                return
            yield order[start : start + batch_size]
            steps += 1
        epoch += 1
