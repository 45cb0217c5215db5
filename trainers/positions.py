"""A model's held-out loss at each position of its context, the curve the dataset's
per-position floor (:mod:`gzipscale.grammars.floor`) is drawn against.

Position ``t`` (1-based) is the prediction of token ``x_t`` from ``x_0 ... x_{t-1}``: the
trainer scores ``context_length - 1`` of them per document, and so does the floor.  The
mean over positions is the run's ``val_loss``; the curve shows where in its context a model
falls short of the Bayes-optimal predictor (early positions, with little context, or late
ones, where long-range structure matters).
"""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def position_losses(
    model: torch.nn.Module, docs: torch.Tensor, batch_size: int, device, autocast
) -> tuple[list[float], list[float]]:
    """Mean loss at each predicted position over ``docs``, and its standard error over
    documents (a document's positions are correlated; documents are independent)."""
    was_training = model.training
    model.eval()
    positions = docs.shape[1] - 1
    total = torch.zeros(positions, dtype=torch.float64)
    squares = torch.zeros(positions, dtype=torch.float64)
    for start in range(0, len(docs), batch_size):
        batch = docs[start : start + batch_size].to(device, non_blocking=True).long()
        with autocast:
            _, losses = model(batch[:, :-1], batch[:, 1:], reduction="none")
        per_position = losses.view(len(batch), positions).double().cpu()
        total += per_position.sum(dim=0)
        squares += per_position.pow(2).sum(dim=0)
    model.train(was_training)
    n = len(docs)
    mean = total / n
    var = (squares / n - mean.pow(2)).clamp(min=0.0) * n / max(1, n - 1)
    stderr = (var / n).sqrt()
    return [float(v) for v in mean], [float(v) if math.isfinite(v) else 0.0 for v in stderr]
