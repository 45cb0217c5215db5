"""Score corpora other than our PCFG datasets: real text and user-supplied token data.

Real data is scored two ways, beside the PCFG datasets (the paper's Figure 1):
- ``text``: the corpus's bytes in chunks of 4·L bytes, so a chunk has the raw size of an
  L-token document (1024 bytes for L = 256);
- ``byte-tokens``: the corpus's bytes as token ids 0..255 in L-token documents, encoded
  like any token document (4-byte big-endian ints). This is H measured on token ids, as
  the paper's metric is, with the simplest tokenizer available offline.

Real data that is on every machine with Python: the standard library's own ``.py``
files (code) and the documentation topics that ship with Python (``pydoc_data``,
English prose).
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gzipscale.helpers import InputError, PathNotFound
from gzipscale.vocabulary import DEFAULT_CONTEXT_LENGTH, MANIFEST_FILE

from .gzip_metric import GzipStats, gzip_ratio, gzip_ratios, gzip_ratios_chunks

REAL_CORPUS_BYTES = 4_000_000  # enough for ~4000 documents per corpus, a few seconds to score
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".c", ".h", ".js", ".html", ".json", ".csv", ".tex"}


@dataclass(frozen=True)
class CorpusScore:
    name: str
    kind: str  # "pcfg", "tokens", "text", "byte-tokens"
    stats: GzipStats
    source: str = ""
    # per-document values, for figures; not part of the JSON summary
    ratios: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "source": self.source, **self.stats.to_dict()}


def python_code_bytes(limit: int = REAL_CORPUS_BYTES) -> bytes:
    """Python standard library source, files in sorted order, up to ``limit`` bytes."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if "site-packages" in path.parts:
            continue
        data = path.read_bytes()
        parts.append(data)
        size += len(data)
        if size >= limit:
            break
    if not parts:
        raise PathNotFound(f"no Python source files found under {root}")
    return b"\n".join(parts)[:limit]


def english_prose_bytes(limit: int = REAL_CORPUS_BYTES) -> bytes:
    """The documentation topics shipped with Python (English prose), up to ``limit`` bytes."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # some distributions strip pydoc_data
        raise PathNotFound("this Python has no pydoc_data documentation topics") from exc
    text = "\n\n".join(topics[key] for key in sorted(topics))
    return text.encode("utf-8")[:limit]


def byte_token_documents(data: bytes, context_length: int = DEFAULT_CONTEXT_LENGTH) -> np.ndarray:
    n = len(data) // context_length
    return (
        np.frombuffer(data[: n * context_length], np.uint8)
        .reshape(n, context_length)
        .astype(np.int32)
    )


def score_text(
    name: str, data: bytes, context_length: int = DEFAULT_CONTEXT_LENGTH, source: str = ""
) -> list[CorpusScore]:
    """Score raw text both as text chunks and as byte-level token documents."""
    if len(data) < 4 * context_length:
        raise InputError(
            f"corpus {name} has {len(data)} bytes; at least {4 * context_length} are needed "
            "for one document"
        )
    text = gzip_ratios_chunks(data, 4 * context_length)
    tokens = gzip_ratios(byte_token_documents(data, context_length))
    return [
        CorpusScore(name, "text", GzipStats.of(text), source, text),
        CorpusScore(name, "byte-tokens", GzipStats.of(tokens), source, tokens),
    ]


def real_data_scores(context_length: int = DEFAULT_CONTEXT_LENGTH) -> list[CorpusScore]:
    scores = []
    for name, reader, source in (
        ("python-stdlib", python_code_bytes, "Python standard library .py files"),
        ("python-docs", english_prose_bytes, "pydoc_data documentation topics (English)"),
    ):
        try:
            scores += score_text(name, reader(), context_length, source)
        except FileNotFoundError:
            continue
    return scores


def _token_documents_from_parquet(path: Path, context_length: int) -> list[np.ndarray]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    names = [
        f.name
        for f in table.schema
        if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)
    ]
    if not names:
        raise InputError(
            f"{path}: no list-of-integers column; expected a column such as 'tokens' holding "
            "each document's token ids"
        )
    column = "tokens" if "tokens" in names else names[0]
    values = table[column].combine_chunks()
    if pa.types.is_fixed_size_list(values.type):
        return [values.flatten().to_numpy().reshape(len(values), values.type.list_size)]
    return [np.asarray(v, dtype=np.int64) for v in values.to_pylist() if v]


def score_path(
    path: str | Path, text: bool = False, context_length: int = DEFAULT_CONTEXT_LENGTH
) -> list[CorpusScore]:
    """Score a dataset directory, a Parquet file, a ``.npy`` file, or text files/directories."""
    from .dataset import read_shard, verify_dataset

    path = Path(path)
    if not path.exists():
        raise PathNotFound(f"{path} does not exist")
    if path.is_dir() and (path / MANIFEST_FILE).exists() and not text:
        # Every training shard present and as recorded, then each one's bytes checked
        # against its checksum as it is read: a bad shard is named, never scored.
        manifest = verify_dataset(path, checksums=False, splits=("train",))
        ratios = np.concatenate(
            [
                read_shard(path, manifest, "train", b, ["gzip"])["gzip"].to_numpy()
                for b in range(len(manifest["shards"]))
            ]
        )
        return [CorpusScore(manifest["name"], "pcfg", GzipStats.of(ratios), str(path), ratios)]
    if path.suffix == ".parquet" and not text:
        docs = _token_documents_from_parquet(path, context_length)
        if len(docs) == 1 and docs[0].ndim == 2:
            ratios = gzip_ratios(docs[0])
        else:
            ratios = np.array([gzip_ratio(d) for d in docs])
        return [CorpusScore(path.stem, "tokens", GzipStats.of(ratios), str(path), ratios)]
    if path.suffix == ".npy" and not text:
        arr = np.load(path, allow_pickle=False)
        if arr.ndim == 1:
            n = len(arr) // context_length
            if n == 0:
                raise InputError(
                    f"{path}: {len(arr)} tokens, fewer than one {context_length}-token document"
                )
            arr = arr[: n * context_length].reshape(n, context_length)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise InputError(
                f"{path}: expected integer token ids, 1-D (a stream) or 2-D (documents), got {arr.dtype} {arr.shape}"
            )
        ratios = gzip_ratios(arr)
        return [CorpusScore(path.stem, "tokens", GzipStats.of(ratios), str(path), ratios)]
    files = (
        [path]
        if path.is_file()
        else sorted(
            p for p in path.rglob("*") if p.is_file() and (text or p.suffix in TEXT_SUFFIXES)
        )
    )
    if not files:
        raise InputError(
            f"{path}: no text files found (suffixes {', '.join(sorted(TEXT_SUFFIXES))}; use --text to take every file)"
        )
    data = b"\n".join(f.read_bytes() for f in files)
    return score_text(path.name or str(path), data, context_length, str(path))


def plot_scores(scores: list[CorpusScore], path: str | Path, title: str | None = None) -> Path:
    """Box plot of per-document H for each corpus (the paper's Figure 1), written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = [s for s in scores if s.ratios is not None and len(s.ratios)]
    if not scores:
        raise InputError("nothing to plot: no corpus has per-document values")
    colours = {
        "pcfg": "tab:blue",
        "tokens": "tab:purple",
        "text": "tab:orange",
        "byte-tokens": "tab:green",
    }
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(scores) + 1.6))
    positions = np.arange(len(scores))[::-1]
    box = ax.boxplot(
        [s.ratios for s in scores],
        positions=positions,
        orientation="horizontal",
        widths=0.6,
        showfliers=False,
        patch_artist=True,
        medianprops={"color": "black"},
    )
    for patch, s in zip(box["boxes"], scores, strict=True):
        patch.set_facecolor(colours.get(s.kind, "tab:gray"))
        patch.set_alpha(0.6)
    for y, s in zip(positions, scores, strict=True):
        ax.annotate(
            f"H = {s.stats.median:.3f}",
            (s.stats.median, y + 0.3),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set_yticks(positions, [f"{s.name} ({s.kind})" for s in scores], fontsize=8)
    ax.set_xlabel("gzip compressibility H per document (compressed / raw size, gzip -9)")
    ax.set_title(
        title or "gzip compressibility: median (line), quartiles (box), 1.5 IQR (whiskers)",
        fontsize=10,
    )
    ax.grid(axis="x", alpha=0.3)
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.6)
        for k, c in colours.items()
        if any(s.kind == k for s in scores)
    ]
    labels = [k for k in colours if any(s.kind == k for s in scores)]
    ax.legend(handles, labels, loc="lower right", fontsize=8, title="scored as", title_fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
