"""Validation: loss, top-1 and top-5 accuracy, with the paper's ten-crop averaging."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader


def topk_correct(probs: torch.Tensor, target: torch.Tensor, k: int) -> int:
    k = min(k, probs.shape[1])
    return int((probs.topk(k, dim=1).indices == target[:, None]).any(dim=1).sum())


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, device: torch.device, channels_last: bool = False
) -> dict[str, float]:
    """Batches are B×C×H×W (one crop) or B×10×C×H×W (ten crops, softmax averaged).

    With ten crops the loss is the negative log of the averaged probability, so that the
    loss and the accuracies judge the same prediction.
    """
    model.eval()
    total = loss = top1 = top5 = 0.0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        crops = x.shape[1] if x.dim() == 5 else 1
        x = x.flatten(0, 1) if x.dim() == 5 else x
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        probs = model(x).float().softmax(dim=1)
        probs = probs.reshape(-1, crops, probs.shape[1]).mean(dim=1)
        loss += float(nn.functional.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum"))
        top1 += topk_correct(probs, y, 1)
        top5 += topk_correct(probs, y, 5)
        total += len(y)
    return {"val_loss": loss / total, "val_top1": top1 / total, "val_top5": top5 / total}
