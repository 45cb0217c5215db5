"""Nested data sizes without torch: which steps a nested-data run shares and which it branches.

A run of D_max tokens with smaller sizes ``eval_at`` (``trainers.train.RunSpec``) reports
a row for every size, each trained as an independent run of that size would be. This
module plans those rows (:func:`plan_sizes`: per size its documents, optimizer steps and
the trunk step where it branches off) and counts the training tokens the nested run
spends (:func:`trained_tokens`), exactly as :func:`trainers.train.train_run` will. It
imports no torch, so a sweep's plan (``gzipscale sweep --dry-run``) can use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .config import TrainConfig


@dataclass(frozen=True)
class Row:
    """One data size a run reports, trained as an independent run of that size would be."""

    tokens: int  # D as asked: the key of its results row
    docs: int  # the documents an independent run of D trains on
    steps: int  # its optimizer steps
    branch_at: int  # the trunk step where it leaves the trunk (== steps: it never does)

    @property
    def branch_steps(self) -> int:
        return self.steps - self.branch_at


def prefix_documents(tokens: int, context_length: int) -> int:
    """The documents of a ``tokens``-token prefix: rounded up to whole ones, as
    ``load_tokens`` reads them."""
    return math.ceil(tokens / context_length)


def total_steps(n_docs: int, batch_size: int, world: int = 1) -> int:
    """Optimizer steps of one epoch over ``n_docs`` documents; under DDP a last batch
    smaller than the world is dropped."""
    steps = math.ceil(n_docs / batch_size)
    if world > 1 and (n_docs - (steps - 1) * batch_size) < world:
        steps -= 1
    return steps


def plan_sizes(
    cfg: TrainConfig,
    tokens: int,
    eval_at: Iterable[int],
    n_docs: int,
    context: int,
    world: int = 1,
) -> list[Row]:
    """The rows of a run of ``tokens`` (over its ``n_docs`` documents) that also reports
    ``eval_at``, smallest first; the last is the trunk's own end (``tokens``).

    An independent run of a smaller D trains the trunk's batches at the trunk's learning
    rates (constant and wsd agree before a cooldown starts) until one of two things
    differs: its wsd cooldown starts, or its last batch stops short at D's last document.
    There its branch leaves the trunk. Branch points only grow with D, so the rows are
    scored in order.
    """
    rows = []
    for size in sorted(set(eval_at) - {tokens}):
        docs = min(n_docs, prefix_documents(size, context))
        steps = total_steps(docs, cfg.batch_size, world)
        if cfg.schedule == "wsd":
            branch_at = steps - cfg.cooldown_for(steps)
        elif docs < steps * cfg.batch_size:  # its last batch is short
            branch_at = steps - 1
        else:
            branch_at = steps
        rows.append(Row(size, docs, steps, branch_at))
    steps = total_steps(n_docs, cfg.batch_size, world)
    return [*rows, Row(tokens, n_docs, steps, steps)]


def step_tokens(step: int, batch_size: int, docs: int, context: int) -> int:
    """Training tokens of global batch ``step`` of a run over the first ``docs`` documents."""
    return (min((step + 1) * batch_size, docs) - min(step * batch_size, docs)) * context


def trained_tokens(rows: list[Row], batch_size: int, context: int) -> int:
    """Every training token a nested run of ``rows`` (:func:`plan_sizes`) spends: its
    trunk's, and each branch's from its branch point to its size's end."""
    trunk = rows[-1].docs * context
    branches = sum(
        (row.docs - min(row.branch_at * batch_size, row.docs)) * context for row in rows[:-1]
    )
    return trunk + branches
