"""Validation: loss, top-1 and top-5 accuracy, with the paper's ten-crop averaging."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from netspec.train.augment import Batch, Finish


def topk_correct(probs: torch.Tensor, target: torch.Tensor, k: int) -> int:
    k = min(k, probs.shape[1])
    return int((probs.topk(k, dim=1).indices == target[:, None]).any(dim=1).sum())


@dataclass(frozen=True)
class Options:
    """Where and how batches run: the device, its speed-ups, and how a loader's uint8 crops
    become the network's input there."""

    device: torch.device
    finish: Finish
    amp: bool = False
    channels_last: bool = False

    def prepare(self, batch: Batch) -> torch.Tensor:
        """A loader's batch, finished on the device: [N, 3, c, c] floats (N = B·V for V
        views an image)."""
        x = self.finish(batch)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def labels(self, batch: Batch) -> torch.Tensor:
        return batch.labels.to(self.device, non_blocking=True)


Reduce = Callable[[torch.Tensor], torch.Tensor]


def _alone(sums: torch.Tensor) -> torch.Tensor:
    return sums


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, opts: Options, reduce: Reduce = _alone
) -> dict[str, float]:
    """Batches hold one crop an image, or ten (their softmax averaged).

    With ten crops the loss is the negative log of the averaged probability, so that the
    loss and the accuracies judge the same prediction. `reduce` adds up the float64 sums
    (loss, top-1, top-5, images) of every process that evaluated a share of the set, so
    that each process returns the whole set's figures.
    """
    model.eval()
    total = loss = top1 = top5 = 0.0
    for batch in loader:
        y = opts.labels(batch)
        crops = batch.crops.shape[1] if batch.crops.dim() == 5 else 1
        x = opts.prepare(batch)
        with torch.autocast(opts.device.type, enabled=opts.amp):
            logits = model(x)
        logits = logits.float()
        if crops == 1:
            probs = logits.softmax(dim=1)
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        else:
            probs = logits.softmax(dim=1).reshape(-1, crops, logits.shape[1]).mean(dim=1)
            log_probs = probs.clamp_min(torch.finfo(torch.float32).tiny).log()
            loss += float(nn.functional.nll_loss(log_probs, y, reduction="sum"))
        top1 += topk_correct(probs, y, 1)
        top5 += topk_correct(probs, y, 5)
        total += len(y)
    sums = reduce(torch.tensor([loss, top1, top5, total], dtype=torch.float64))
    loss, top1, top5, total = sums.tolist()
    return {"val_loss": loss / total, "val_top1": top1 / total, "val_top5": top5 / total}
