"""Named model shapes and their exact parameter counts.

The paper's six shapes (head dimension 64, intermediate = 2 x hidden) and a family of tiny
shapes for CPU sweeps with the same proportions (intermediate = 2 x hidden, head
dimension 16). Parameter counts depend on the vocabulary, so shapes are named by size
class, not by count: ``gzipscale models --vocab V`` prints the counts for any V.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from gzipscale.helpers import SpecError

PAPER_VOCAB = 32001  # Llama-2's tokenizer plus a pad token, as the paper's models had
PARAM_COUNTS = ("total", "non_embedding")


@dataclass(frozen=True)
class ModelShape:
    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def params(self, vocab_size: int) -> int:
        return count_params(self, vocab_size)

    def non_embedding_params(self) -> int:
        return count_params(self, 0)

    def to_dict(self, vocab_size: int) -> dict:
        return {
            **asdict(self),
            "params": self.params(vocab_size),
            "non_embedding_params": self.non_embedding_params(),
        }


def count_params(shape: ModelShape, vocab_size: int) -> int:
    """N = 2*V*h + L*(4h^2 + 3*h*i + 2h) + h: untied embedding and head, per layer q, k, v,
    o, gate, up, down and two RMSNorm weights, plus the final RMSNorm.

    "Non-embedding" (``vocab_size=0``) drops both V x h matrices, as Kaplan et al. do.
    """
    h, i, n_layers = shape.hidden, shape.intermediate, shape.layers
    return 2 * vocab_size * h + n_layers * (4 * h * h + 3 * h * i + 2 * h) + h


PAPER_SHAPES = (
    ModelShape("paper-4m", 64, 128, 2, 1),
    ModelShape("paper-9m", 128, 256, 4, 2),
    ModelShape("paper-20m", 256, 512, 6, 4),
    ModelShape("paper-59m", 512, 1024, 10, 8),
    ModelShape("paper-275m", 1024, 2048, 20, 16),
    ModelShape("paper-1.4b", 2048, 4096, 30, 32),
)

# About 5K to 2M parameters at a PCFG's vocabulary (~300 ids), each about twice the
# last (tiny-0, hidden 8, is where even the simplest syntax limits a model); intermediate = 2 x hidden and head dimension 12-16, as the paper's proportions.
# The `tiny` sweep preset uses the six smallest (up to ~430K parameters) so that 36 runs
# per grammar fit a laptop; tiny-7 and tiny-8 extend the range for longer CPU sweeps.
TINY_SHAPES = (
    ModelShape("tiny-0", 8, 16, 1, 1),
    ModelShape("tiny-1", 16, 32, 1, 1),
    ModelShape("tiny-2", 24, 48, 2, 2),
    ModelShape("tiny-3", 32, 64, 2, 2),
    ModelShape("tiny-4", 48, 96, 3, 3),
    ModelShape("tiny-5", 64, 128, 4, 4),
    ModelShape("tiny-6", 96, 192, 4, 6),
    ModelShape("tiny-7", 128, 256, 6, 8),
    ModelShape("tiny-8", 160, 320, 8, 10),
)

SHAPES = {s.name: s for s in PAPER_SHAPES + TINY_SHAPES}


def get_shape(name: str) -> ModelShape:
    try:
        return SHAPES[name]
    except KeyError:
        raise SpecError(
            f"field 'model' must be one of {', '.join(SHAPES)}, got {name!r} "
            "(`gzipscale models` lists them with their sizes)"
        ) from None


def counted_params(shape: ModelShape, vocab_size: int, param_count: str) -> int:
    """The N a fit uses: ``total`` (the paper's choice) or ``non_embedding``."""
    if param_count == "total":
        return shape.params(vocab_size)
    if param_count == "non_embedding":
        return shape.non_embedding_params()
    raise SpecError(
        f"field 'param_count' must be one of {', '.join(PARAM_COUNTS)}, got {param_count!r}"
    )
