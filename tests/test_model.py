"""trainers/shapes.py and trainers/model.py: exact parameter counts, and the model they build.

No data and no Ray: the model is built and run on random token ids.
"""

from __future__ import annotations

import pytest
import torch
from trainer_fixtures import PAPER_COUNTS

from gzipscale.trainers.model import Llama
from gzipscale.trainers.shapes import PAPER_SHAPES, PAPER_VOCAB, TINY_SHAPES, get_shape

PAPER_NON_EMBEDDING = [82_240, 656_512, 3_935_488, 26_225_152, 209_757_184, 1_258_416_128]


def test_paper_shapes_have_the_papers_exact_parameter_counts():
    assert [s.params(PAPER_VOCAB) for s in PAPER_SHAPES] == PAPER_COUNTS
    assert [s.non_embedding_params() for s in PAPER_SHAPES] == PAPER_NON_EMBEDDING


@pytest.mark.parametrize(
    "shape", [*TINY_SHAPES, PAPER_SHAPES[0], PAPER_SHAPES[2]], ids=lambda s: s.name
)
def test_built_model_has_exactly_the_counted_parameters(shape):
    vocab = 32001 if shape.name.startswith("paper") else 301
    model = Llama(shape, vocab, context_length=64)
    assert sum(p.numel() for p in model.parameters()) == shape.params(vocab)
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_tiny_shapes_span_5k_to_2m_parameters_at_a_pcfg_vocabulary():
    counts = [s.params(301) for s in TINY_SHAPES]
    assert counts == sorted(counts)
    assert 5_000 <= counts[0] <= 15_000 and 1_000_000 <= counts[-1] <= 2_500_000
    # tiny-0 (hidden 8, one head) is the one shape below head dimension 12.
    assert all(s.head_dim >= 8 and s.head_dim % 2 == 0 for s in TINY_SHAPES)
    assert [s.name for s in TINY_SHAPES if s.head_dim < 12] == ["tiny-0"]


def test_model_is_causal():
    torch.manual_seed(0)
    model = Llama(get_shape("tiny-2"), 50, context_length=16).eval()
    ids = torch.randint(0, 50, (1, 16))
    changed = ids.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 50
    with torch.no_grad():
        a, _ = model(ids)
        b, _ = model(changed)
    assert torch.equal(a[0, :10], b[0, :10])
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_unknown_shape_names_the_allowed_ones():
    with pytest.raises(ValueError, match="field 'model' must be one of .*tiny-1"):
        get_shape("tiny-99")
