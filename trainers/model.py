"""A Llama-style decoder in one file, in the spirit of nanoGPT's ``model.py``.

Token embedding, then ``layers`` blocks of (RMSNorm -> causal self-attention with rotary
position embeddings -> residual, RMSNorm -> SwiGLU MLP -> residual), a final RMSNorm and an
untied output head. No biases, no dropout. With vocabulary V, hidden h, intermediate i and
L layers the parameter count is exactly ``2*V*h + L*(4*h*h + 3*h*i + 2*h) + h`` (the
paper's N; :func:`trainers.shapes.count_params` computes it without building a model).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .shapes import ModelShape

ROPE_THETA = 10_000.0
NORM_EPS = 1e-6


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 even under bf16 autocast, as Llama does: the mean square of
        # a bf16 activation loses too many bits. F.rms_norm is one kernel (20% faster
        # than the four-op formula on CPU, forward and backward).
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)


def rope_tables(head_dim: int, length: int, theta: float = ROPE_THETA) -> torch.Tensor:
    """cos and sin of every (position, frequency) pair, shape (2, length, head_dim // 2)."""
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), freqs)
    return torch.stack([angles.cos(), angles.sin()]).float()


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :d/2], x[..., d/2:]) of a (B, heads, T, d) tensor (Llama's
    "rotate half" layout, the same as Hugging Face's ``LlamaForCausalLM``)."""
    cos, sin = rope[0, : x.shape[-2]].to(x.dtype), rope[1, : x.shape[-2]].to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.heads = shape.heads
        self.head_dim = shape.hidden // shape.heads
        # q, k and v as one matmul: the same parameters as three (h, h) matrices.
        self.qkv = nn.Linear(shape.hidden, 3 * shape.hidden, bias=False)
        self.out = nn.Linear(shape.hidden, shape.hidden, bias=False)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        q, k, v = (
            self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        )
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, h))


class SwiGLU(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        # gate and up as one matmul; down separately.
        self.gate_up = nn.Linear(shape.hidden, 2 * shape.intermediate, bias=False)
        self.down = nn.Linear(shape.intermediate, shape.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.attn_norm = RMSNorm(shape.hidden)
        self.attn = Attention(shape)
        self.mlp_norm = RMSNorm(shape.hidden)
        self.mlp = SwiGLU(shape)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), rope)
        return x + self.mlp(self.mlp_norm(x))


def ce_chunk_rows(vocab_size: int) -> int:
    # About 2M logits (8 MB) per chunk: measured fastest on CPU for vocabularies of 300
    # and 32001 alike (chunks of 64 rows at 32001, 4096 at 300).
    return max(32, min(4096, (1 << 21) // vocab_size))


class LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets``, with gradients.

    The usual path materialises (tokens x vocab) logits, their log-softmax, a zero-filled
    gradient and the log-softmax backward: at batch 32 x 256 and the paper's vocabulary of
    32001 that is four passes over 1 GB, which took 60% of a CPU training step of the
    smallest paper shape. Here the logits are made a chunk of rows at a time and turned
    straight into their gradient (softmax minus one-hot) while they are in cache; the
    input and weight gradients are accumulated in the forward pass and only scaled in
    the backward. Same three matmuls, no 1 GB tensors (2.3x faster on that shape's head).
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets):
        n = hidden.shape[0]
        chunk = ce_chunk_rows(weight.shape[0])
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight)
        total = torch.zeros((), dtype=torch.float64, device=hidden.device)
        for start in range(0, n, chunk):
            h = hidden[start : start + chunk]
            t = targets[start : start + chunk, None]
            logits = h @ weight.t()
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            total += (lse - logits.gather(1, t)).sum()
            grad = logits.sub_(lse).exp_()  # softmax, in place
            grad.scatter_add_(1, t, torch.full(t.shape, -1.0, dtype=grad.dtype, device=grad.device))
            grad.mul_(1.0 / n)
            torch.mm(grad, weight, out=grad_hidden[start : start + chunk])
            grad_weight.addmm_(grad.t(), h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return (total / n).to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss, grad_weight * grad_loss, None


class Llama(nn.Module):
    """Decoder-only transformer; ``forward(ids, targets)`` returns (logits or None, loss)."""

    def __init__(self, shape: ModelShape, vocab_size: int, context_length: int):
        super().__init__()
        if shape.hidden % shape.heads or (shape.hidden // shape.heads) % 2:
            raise ValueError(
                f"shape {shape.name!r}: hidden={shape.hidden} must split into {shape.heads} "
                "heads of an even dimension"
            )
        self.shape = shape
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.embed = nn.Embedding(vocab_size, shape.hidden)
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.layers))
        self.norm = RMSNorm(shape.hidden)
        self.head = nn.Linear(shape.hidden, vocab_size, bias=False)
        self.register_buffer(
            "rope", rope_tables(shape.hidden // shape.heads, context_length), persistent=False
        )
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        # Llama's initializer_range (what the paper's Hugging Face models used), with the
        # residual projections scaled down by depth as GPT-2/nanoGPT do, so deep and
        # shallow shapes start at the same residual-stream scale.
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
            elif name.endswith(("out.weight", "down.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.shape.layers))
            else:
                nn.init.normal_(p, 0.0, std)

    def forward(
        self, ids: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean"
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if ids.shape[1] > self.context_length:
            raise ValueError(
                f"sequence of {ids.shape[1]} tokens exceeds context_length={self.context_length}"
            )
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x, self.rope)
        x = self.norm(x)
        if (
            targets is not None
            and reduction == "mean"
            and x.device.type == "cpu"
            and torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu")
        ):
            # Training on CPU: never materialise the logits (see LinearCrossEntropy).
            loss = LinearCrossEntropy.apply(
                x.reshape(-1, x.shape[-1]), self.head.weight, targets.reshape(-1)
            )
            return None, loss
        logits = self.head(x)
        if targets is None:
            return logits, None
        # Cross-entropy in fp32 whatever the autocast dtype: a bf16 log-softmax over a
        # large vocabulary is visibly biased.
        loss = F.cross_entropy(
            logits.float().view(-1, logits.shape[-1]), targets.reshape(-1), reduction=reduction
        )
        return None, loss

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: matrices decay, norms' weights never do."""
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
