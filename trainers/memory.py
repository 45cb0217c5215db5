"""Will a training run fit in memory? A rough, conservative estimate, checked up front.

A run that does not fit should fail in a second with the number it needs, not after
minutes of loading and compiling with an allocator traceback.
"""

from __future__ import annotations

import torch

from gzipscale.helpers import UserError

from .shapes import ModelShape

GIB = 1024**3


class MemoryTooSmall(UserError, RuntimeError):
    """The run needs more memory than the device has (the message names both numbers)."""


def training_bytes(
    shape: ModelShape, vocab: int, batch: int, context: int, device_type: str
) -> int:
    """Weights, gradients and AdamW's two moments in fp32 (16 bytes a parameter), plus
    activations kept for the backward pass: per layer about 16 values of width ``hidden``
    and 4 of width ``intermediate`` per token, the attention matrix where the kernel
    materialises it (CPU), and the logits with their fp32 copy and gradient."""
    params = shape.params(vocab)
    tokens = batch * context
    act_bytes = 2 if device_type == "cuda" else 4  # bf16 autocast on GPU
    per_layer = tokens * (16 * shape.hidden + 4 * shape.intermediate) * act_bytes
    if device_type != "cuda":
        per_layer += batch * shape.heads * context * context * 4 * 2
    logits = tokens * vocab * (act_bytes + 4 + 4)
    return 16 * params + shape.layers * per_layer + logits


def available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits(
    shape: ModelShape, vocab: int, batch: int, context: int, device: torch.device
) -> None:
    need = training_bytes(shape, vocab, batch, context, device.type)
    have = available_bytes(device)
    if have is not None and need > have:
        raise MemoryTooSmall(
            f"model {shape.name!r} (vocab {vocab}, batch {batch} x {context}) needs about "
            f"{need / GIB:.1f} GiB to train on {device.type}, but only {have / GIB:.1f} GiB "
            "is free; use a smaller shape or batch, or a larger device"
        )
