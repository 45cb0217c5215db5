"""A run's tokens: the first D training tokens and a fixed held-out slice, read once.

Both are read from the dataset's Parquet shards into one int32 tensor each (a 100M-token
prefix is 400 MB), so the training loop only slices; no per-step parsing. Documents are
used in dataset order, which makes prefixes nested: the 1M-token run sees the 100K-token
run's documents first, then more of the same stream. A nested-data run (RunSpec.eval_at)
reads only the largest prefix and scores each smaller one on the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gzipscale.grammars.dataset import DatasetError, load_tokens, verify_dataset


@dataclass
class RunData:
    train: torch.Tensor  # (documents, context_length) int32
    eval: torch.Tensor  # (documents, context_length) int32
    vocab_size: int  # the dataset's: terminals + separator
    context_length: int
    name: str
    gzip: float  # the dataset's H (median over training documents)
    grammar: dict

    @property
    def tokens(self) -> int:
        return self.train.numel()

    @property
    def eval_tokens(self) -> int:
        return self.eval.numel()


def load_run_data(path: str | Path, tokens: int, eval_tokens: int) -> RunData:
    """Check the dataset (complete, intact, big enough) and read the run's tokens.

    Raises DatasetError before anything is read if the directory is incomplete, a shard is
    missing or not as recorded (size, Parquet row count, document length), or either split
    is smaller than asked for; and as it reads, if a shard it reads fails its checksum
    (``load_tokens`` hashes the bytes it parses, so each shard is read once).
    """
    path = Path(path)
    # The counts below are the manifest's, checked against the shards' own metadata here.
    manifest = verify_dataset(path, checksums=False)
    have, have_eval = manifest["tokens"], manifest["eval"]["tokens"]
    if tokens > have:
        raise DatasetError(
            f"field 'tokens': {tokens} training tokens requested but dataset {path} has "
            f"{have}; generate a larger one with `gzipscale data --tokens {tokens}`"
        )
    if eval_tokens > have_eval:
        raise DatasetError(
            f"field 'eval_tokens': {eval_tokens} held-out tokens requested but dataset {path} "
            f"has {have_eval}; lower --eval-tokens or regenerate with --eval-tokens {eval_tokens}"
        )
    train = torch.from_numpy(load_tokens(path, "train", tokens))
    held_out = torch.from_numpy(load_tokens(path, "eval", eval_tokens))
    return RunData(
        train=train,
        eval=held_out,
        vocab_size=int(manifest["vocab_size"]),
        context_length=int(manifest["context_length"]),
        name=manifest["name"],
        gzip=float(manifest["gzip"]["median"]),
        grammar=manifest["grammar"],
    )
