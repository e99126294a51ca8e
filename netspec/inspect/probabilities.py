"""Class probabilities as `netspec eval` computes them, one row an image."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from netspec.train.augment import Batch
from netspec.train.evaluate import Options


def image_probabilities(logits: Tensor, views: int) -> Tensor:
    """Softmax of each view's logits, averaged over an image's `views` crops, as `evaluate`
    averages the paper's ten: [B·V, C] → [B, C] float32."""
    probs = logits.float().softmax(dim=1)
    if views == 1:
        return probs
    return probs.reshape(-1, views, logits.shape[1]).mean(dim=1)


def views_of(batch: Batch) -> int:
    return batch.crops.shape[1] if batch.crops.dim() == 5 else 1


@torch.no_grad()
def probabilities(model: nn.Module, batches: Iterable[Batch], opts: Options) -> Tensor:
    """[N, C] on the CPU for the loader's images, in its order, computed as `evaluate` does."""
    model.eval()
    rows = []
    for batch in batches:
        x = opts.prepare(batch)
        with torch.autocast(opts.device.type, enabled=opts.amp):
            logits = model(x)
        rows.append(image_probabilities(logits, views_of(batch)).cpu())
    return torch.cat(rows) if rows else torch.empty(0, 0)
