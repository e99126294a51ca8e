"""train_epoch counts top-1 hits on the batches it trains on."""

import torch
from torch import nn

from netspec.train.augment import Batch, Windows
from netspec.train.evaluate import Options
from netspec.train.loop import train_epoch


def test_train_top1_is_the_share_of_argmax_hits_on_the_training_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    pairs = [(torch.randn(8, 3, 2, 2), torch.randint(0, 4, (8,))) for _ in range(5)]
    with torch.no_grad():  # the reference, before any step changes the weights
        hits = sum(int((model(x).argmax(1) == y).sum()) for x, y in pairs)
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)  # a step that changes nothing
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    batches = [Batch(x, y, torch.arange(8), Windows(*[torch.zeros(8)] * 3, None)) for x, y in pairs]
    as_given = Options(torch.device("cpu"), finish=lambda batch: batch.crops)
    stats = train_epoch(model, batches, len(batches), frozen, scaler, as_given, "test")
    assert stats["train_top1"] == hits / 40
    assert 0 < hits < 40
