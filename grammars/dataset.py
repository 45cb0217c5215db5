"""Dataset directories: what a complete dataset is, how shards are made and checked.

Layout of a dataset directory::

    DIR/manifest.json            written last, atomically: its presence means "complete"
    DIR/train/part-000000.parquet  one shard per block of ``block_docs`` documents
    DIR/eval/part-000000.parquet   held-out split, from an independent random stream
    DIR/.incomplete.json         the spec being generated; removed when the manifest lands

Shards have the columns ``tokens`` (each document's ids, a fixed-size list of
``context_length`` int32) and ``gzip`` (the document's compressibility), plus ``doc`` (the
document's index in its split). Block b of a split is sampled from
``np.random.default_rng([seed, split_stream, b])``, so the tokens depend only on the spec,
never on how many workers made them, and a dataset of D tokens is a prefix of the same
spec's dataset of more tokens.

This module is pure Python/numpy/pyarrow; the Ray glue is in ``pipeline``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gzipscale.helpers import (
    SpecError,
    UserError,
    atomic_write_json,
    check_int_field,
    file_sha256,
    spec_differences,
)
from gzipscale.vocabulary import (
    DATASET_EVAL_TOKENS,
    DEFAULT_CONTEXT_LENGTH,
    MANIFEST_FILE,
    SAMPLER_MODES,
)

from .compiled import compile_grammar
from .gzip_metric import GzipStats, gzip_ratios
from .random_pcfg import grammar_text
from .sampler import compiled_for, sample_documents
from .spec import GrammarSpec

FORMAT = "gzipscale-dataset"
FORMAT_VERSION = 1
BLOCK_DOCS = 1024
INCOMPLETE = ".incomplete.json"
SPLIT_STREAMS = {"train": 0, "eval": 1}


class DatasetError(UserError, RuntimeError):
    """A dataset directory that is missing, incomplete, corrupt or not the one asked for."""


@dataclass(frozen=True)
class DatasetSpec:
    """Everything that determines a dataset's bytes."""

    grammar: GrammarSpec
    tokens: int  # training tokens requested; rounded up to whole documents
    eval_tokens: int = DATASET_EVAL_TOKENS
    context_length: int = DEFAULT_CONTEXT_LENGTH
    sampler: str = "prefix"
    block_docs: int = BLOCK_DOCS

    def __post_init__(self) -> None:
        check_int_field("tokens", self.tokens, 1, 10**13)
        check_int_field("eval_tokens", self.eval_tokens, 1, 10**12)
        check_int_field("context_length", self.context_length, 1, 1 << 20)
        check_int_field("block_docs", self.block_docs, 1, 1 << 20)
        if self.sampler not in SAMPLER_MODES:
            raise SpecError(
                f"field 'sampler' must be one of {', '.join(SAMPLER_MODES)}, got {self.sampler!r}"
            )

    def documents(self, split: str = "train") -> int:
        wanted = self.tokens if split == "train" else self.eval_tokens
        return math.ceil(wanted / self.context_length)

    def blocks(self, split: str = "train") -> int:
        return math.ceil(self.documents(split) / self.block_docs)

    def block_size(self, split: str, block: int) -> int:
        return min(self.block_docs, self.documents(split) - block * self.block_docs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["grammar"] = self.grammar.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DatasetSpec:
        d = dict(d)
        d["grammar"] = GrammarSpec.from_dict(d["grammar"])
        return cls(**d)

    @property
    def name(self) -> str:
        return self.grammar.name


def shard_path(split: str, block: int) -> str:
    return f"{split}/part-{block:06d}.parquet"


def block_rng(spec: DatasetSpec, split: str, block: int) -> np.random.Generator:
    return np.random.default_rng([spec.grammar.seed, SPLIT_STREAMS[split], block])


def make_block(spec: DatasetSpec, split: str, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample and score one block: (documents (n, L) int32, gzip ratios (n,))."""
    g = compiled_for(grammar_text(spec.grammar), spec.sampler, spec.grammar.name)
    # Always sample a whole block and cut: the last block of a small dataset is then the
    # prefix of the same block of a larger one.
    docs = sample_documents(g, spec.block_docs, block_rng(spec, split, block), spec.context_length)
    docs = docs[: spec.block_size(split, block)]
    return docs, gzip_ratios(docs)


def shard_table(docs: np.ndarray, ratios: np.ndarray, first_doc: int) -> pa.Table:
    n, length = docs.shape
    tokens = pa.FixedSizeListArray.from_arrays(pa.array(docs.ravel(), pa.int32()), length)
    return pa.table(
        {
            "doc": pa.array(np.arange(first_doc, first_doc + n, dtype=np.int64)),
            "tokens": tokens,
            "gzip": pa.array(ratios, pa.float64()),
        }
    )


def shard_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def build_shard(spec: DatasetSpec, split: str, block: int) -> dict:
    """Make one shard in memory: its Parquet bytes and what the manifest records of it."""
    start = time.perf_counter()
    docs, ratios = make_block(spec, split, block)
    data = shard_bytes(shard_table(docs, ratios, block * spec.block_docs))
    return {
        "split": split,
        "block": block,
        "path": shard_path(split, block),
        "documents": int(len(docs)),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "data": data,
        "seconds": time.perf_counter() - start,
    }


def _identity(spec: DatasetSpec) -> dict:
    return {"format": FORMAT, "version": FORMAT_VERSION, "spec": spec.to_dict()}


def prepare_output(out: Path, spec: DatasetSpec) -> dict | None:
    """Decide what to do with ``out``: return its manifest if the dataset is already complete,
    otherwise mark it as being generated (creating it) and return None.

    Refuses, without touching anything, a directory that holds a different dataset or
    something that is not a gzipscale dataset.
    """
    want = _identity(spec)
    manifest_path, marker = out / MANIFEST_FILE, out / INCOMPLETE
    for path, state in ((manifest_path, "complete"), (marker, "partly generated")):
        if path.exists():
            have = json.loads(path.read_text())
            have_id = {k: have.get(k) for k in ("format", "version", "spec")}
            if have_id != want:
                diffs = spec_differences(have_id, want)
                raise DatasetError(
                    f"{out} holds a different {state} dataset ({'; '.join(diffs)}). "
                    "Nothing was changed: choose another --out, or delete that directory "
                    "to replace it."
                )
            if state == "complete":
                return have
            return None
    if out.exists() and any(out.iterdir()):
        raise DatasetError(
            f"{out} exists and is not a gzipscale dataset (no {MANIFEST_FILE} or {INCOMPLETE}); "
            "refusing to write into it. Choose an empty or new --out directory."
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, {**want, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return None


def missing_blocks(out: Path, spec: DatasetSpec) -> list[tuple[str, int]]:
    """Blocks whose shard is not on disk yet (a renamed shard is always complete)."""
    for stale in out.glob("*/.part-*.tmp-*"):
        stale.unlink()  # left by a killed writer; never a complete shard
    return [
        (split, b)
        for split in SPLIT_STREAMS
        for b in range(spec.blocks(split))
        if not (out / shard_path(split, b)).exists()
    ]


def read_gzip_column(path: Path) -> np.ndarray:
    return pq.read_table(path, columns=["gzip"])["gzip"].to_numpy()


def finalize(
    out: Path, spec: DatasetSpec, known: dict[str, dict], wall_s: float, floor: dict | None = None
) -> dict:
    """Write the manifest for a dataset whose shards are all on disk.

    ``known`` maps shard paths to the records the workers returned; shards made by an
    earlier, interrupted run are hashed here. ``floor`` is the dataset's floor block
    (``gzipscale.grammars.floor``), recorded as it is.
    """
    manifest = _identity(spec)
    text = grammar_text(spec.grammar)
    splits = {}
    for split in SPLIT_STREAMS:
        shards, ratios = [], []
        for b in range(spec.blocks(split)):
            rel = shard_path(split, b)
            rec = known.get(rel)
            if rec is None:
                path = out / rel
                rec = {
                    "sha256": file_sha256(path),
                    "bytes": path.stat().st_size,
                    "documents": spec.block_size(split, b),
                }
            shards.append(
                {
                    "path": rel,
                    "first_document": b * spec.block_docs,
                    "documents": rec["documents"],
                    "sha256": rec["sha256"],
                    "bytes": rec["bytes"],
                }
            )
            ratios.append(read_gzip_column(out / rel))
        docs = spec.documents(split)
        splits[split] = {
            "documents": docs,
            "tokens": docs * spec.context_length,
            "gzip": GzipStats.of(np.concatenate(ratios)).to_dict(),
            "shards": shards,
        }
    g = compile_grammar(text, spec.grammar.name)
    manifest.update(
        {
            "name": spec.name,
            "grammar": spec.grammar.to_dict(),
            "grammar_text": text,
            "sampler": spec.sampler,
            "context_length": spec.context_length,
            "block_docs": spec.block_docs,
            "tokens_requested": spec.tokens,
            "tokens": splits["train"]["tokens"],
            "documents": splits["train"]["documents"],
            "vocab_size": spec.grammar.terminals + 1,
            "separator": 0,
            "gzip": splits["train"]["gzip"],
            "shards": splits["train"]["shards"],
            "eval": splits["eval"],
            "grammar_stats": {
                "productions": int(len(g.prod_lhs)),
                "spectral_radius": g.spectral_radius(),
                "p_sentence_finite": float(g.finite_probabilities()[g.start]),
            },
            "floor": floor,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "wall_s": wall_s,
        }
    )
    atomic_write_json(out / MANIFEST_FILE, manifest)
    (out / INCOMPLETE).unlink(missing_ok=True)
    return manifest


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.exists():
        if (path / INCOMPLETE).exists():
            raise DatasetError(
                f"{path} is an incomplete dataset (generation was interrupted); run the same "
                "`gzipscale data` command again to finish it"
            )
        raise DatasetError(f"{path} is not a dataset directory (no {MANIFEST_FILE})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{manifest_path} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(f"{manifest_path} is not a gzipscale dataset manifest")
    check_manifest(path, manifest)
    return manifest


# -- what a command may rely on -----------------------------------------------------------------
# The manifest is a file anyone can edit, so nothing a command relies on is taken from it
# unchecked: its counts must agree with each other and with the shards' own Parquet
# metadata, its shard paths must be the fixed layout's, and a shard's bytes must hash to
# the recorded checksum before they are parsed.


def _split(manifest: dict, split: str) -> dict:
    return manifest if split == "train" else manifest["eval"]


def check_manifest(path: Path, manifest: dict) -> None:
    """Refuse a manifest whose counts disagree or whose shard paths leave the layout."""
    where = f"dataset {path}: {MANIFEST_FILE}"
    try:
        length = int(manifest["context_length"])
        for split in SPLIT_STREAMS:
            part = _split(manifest, split)
            docs, shards = int(part["documents"]), part["shards"]
            if int(part["tokens"]) != docs * length:
                raise DatasetError(
                    f"{where} says {split} has {part['tokens']} tokens but {docs} documents of "
                    f"{length} ({docs * length} tokens); it was edited or is corrupt"
                )
            for b, shard in enumerate(shards):
                rel = str(shard["path"])
                # Refused before any file is opened: a manifest must never point a command
                # at a file outside its own directory.
                if Path(rel).is_absolute() or ".." in Path(rel).parts:
                    raise DatasetError(
                        f"{where} names shard path {rel!r}, outside the dataset directory; "
                        "refusing to read it"
                    )
                if rel != shard_path(split, b):
                    raise DatasetError(
                        f"{where} names shard {b} of {split} {rel!r}, expected "
                        f"{shard_path(split, b)!r}; it was edited or is corrupt"
                    )
            listed = sum(int(s["documents"]) for s in shards)
            if listed != docs:
                raise DatasetError(
                    f"{where} says {split} has {docs} documents but its shards list {listed}; "
                    "it was edited or is corrupt"
                )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{where} is malformed ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class ShardProblem:
    """One shard that cannot be used as its manifest records it."""

    path: str  # relative to the dataset directory, as in the manifest
    split: str
    block: int
    problem: str  # "is missing", "fails its checksum", ...


def repair_command(path: Path, manifest: dict) -> str:
    """The `gzipscale data` command that regenerates the bad shards of this dataset."""
    try:
        spec = DatasetSpec.from_dict(manifest["spec"])
    except (KeyError, TypeError, ValueError, UserError):
        return f"delete {path} and generate it again with `gzipscale data`"
    g = spec.grammar
    return (
        f"`gzipscale data --grammar {g.short} --seed {g.seed} --tokens {spec.tokens} "
        f"--eval-tokens {spec.eval_tokens} --context-length {spec.context_length} "
        f"--sampler {spec.sampler} --out {path} --repair`"
    )


def shard_problem(path: Path, shard: dict, length: int, checksums: bool) -> str | None:
    """What is wrong with one shard on disk (None: it is as recorded)."""
    file = path / shard["path"]
    if not file.is_file():
        return "is missing"
    size = file.stat().st_size
    if size != shard["bytes"]:
        return f"has {size} bytes, the manifest records {shard['bytes']}"
    if checksums and file_sha256(file) != shard["sha256"]:
        return "fails its checksum (its bytes changed)"
    try:
        meta = pq.read_metadata(file)
        schema = meta.schema.to_arrow_schema()
    except (OSError, pa.ArrowException) as exc:
        return f"is not a readable Parquet file ({exc})"
    if meta.num_rows != shard["documents"]:
        return f"has {meta.num_rows} rows, the manifest records {shard['documents']}"
    tokens = schema.field("tokens").type if "tokens" in schema.names else None
    if tokens is None or getattr(tokens, "list_size", None) != length:
        return f"does not hold {length}-token documents (column 'tokens' is {tokens})"
    return None


def shard_problems(
    path: str | Path,
    manifest: dict,
    splits: tuple[str, ...] = tuple(SPLIT_STREAMS),
    checksums: bool = True,
) -> list[ShardProblem]:
    """Every shard of ``splits`` that is missing, resized, altered or not as recorded."""
    path = Path(path)
    length = int(manifest["context_length"])
    found = []
    for split in splits:
        for b, shard in enumerate(_split(manifest, split)["shards"]):
            problem = shard_problem(path, shard, length, checksums)
            if problem is not None:
                found.append(ShardProblem(shard["path"], split, b, problem))
    return found


def bad_shards_error(path: Path, manifest: dict, problems: list[ShardProblem]) -> DatasetError:
    shown = "; ".join(f"{p.path} {p.problem}" for p in problems[:3])
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return DatasetError(
        f"dataset {path}: shard {shown}{more}. Nothing was read from it; every shard is a "
        f"pure function of the spec, so regenerate exactly the bad ones with "
        f"{repair_command(path, manifest)}"
    )


def verify_dataset(
    path: str | Path, checksums: bool = True, splits: tuple[str, ...] = tuple(SPLIT_STREAMS)
) -> dict:
    """Check that every shard of ``splits`` is present, as recorded (size, rows, document
    length) and, with ``checksums``, intact; return the manifest."""
    path = Path(path)
    manifest = read_manifest(path)
    problems = shard_problems(path, manifest, splits, checksums)
    if problems:
        raise bad_shards_error(path, manifest, problems)
    return manifest


def read_shard(path: Path, manifest: dict, split: str, block: int, columns: list[str]) -> pa.Table:
    """One shard's columns, parsed from bytes that were hashed first (one read, no window
    between the check and the use)."""
    shard = _split(manifest, split)["shards"][block]
    file = path / shard["path"]
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        data = None
    if data is None or hashlib.sha256(data).hexdigest() != shard["sha256"]:
        problem = "is missing" if data is None else "fails its checksum (its bytes changed)"
        raise bad_shards_error(path, manifest, [ShardProblem(shard["path"], split, block, problem)])
    return pq.read_table(pa.BufferReader(data), columns=columns)


def load_tokens(
    path: str | Path, split: str = "train", max_tokens: int | None = None
) -> np.ndarray:
    """The first documents of a split as one (documents, context_length) int32 array.

    ``max_tokens`` reads only the shards needed for that many tokens (rounded up to whole
    documents); asking for more than the split holds is an error. Each shard read is
    checked against its checksum first, and the count returned is the shards' own.
    """
    path = Path(path)
    manifest = read_manifest(path)
    part = _split(manifest, split)
    length = manifest["context_length"]
    n_docs = part["documents"]
    if max_tokens is not None:
        want = math.ceil(max_tokens / length)
        if want > n_docs:
            raise DatasetError(
                f"dataset {path} has {n_docs * length} {split} tokens, {max_tokens} requested"
            )
        n_docs = want
    chunks, have = [], 0
    for block in range(len(part["shards"])):
        if have >= n_docs:
            break
        col = read_shard(path, manifest, split, block, ["tokens"])["tokens"].combine_chunks()
        chunks.append(col.flatten().to_numpy().reshape(-1, length))
        have += len(chunks[-1])
    if have < n_docs:
        # The shards hold fewer documents than the manifest promised: never train or score
        # on less than was asked for and call it done.
        raise DatasetError(
            f"dataset {path}: its {split} shards hold {have} documents, {n_docs} needed; "
            f"{MANIFEST_FILE} overstates them (edited or corrupt)"
        )
    return np.concatenate(chunks)[:n_docs].astype(np.int32, copy=False)
