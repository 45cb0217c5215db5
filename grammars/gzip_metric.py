"""gzip compressibility H, the paper's metric (Pandey 2024, Eq. 3), and the same measure
with other compressors.

For one document: every token id as a 4-byte big-endian signed integer, gzip at level 9
with its 18 bytes of header and trailer counted, compressed size / raw size. A dataset's H
is the median over documents. ``zlib.compress(raw, 9, wbits=31)`` writes exactly the
stream ``gzip.compress(raw, 9)`` and ``gzip.GzipFile`` write (same deflate settings, a
10-byte header without file name, an 8-byte trailer), without their Python overhead.

:func:`compression_ratios` computes the same ratio with another compressor of the
standard library, each at its strongest standard setting and with its file container
counted, as gzip's is (:data:`COMPRESSORS`):

* ``lzma``: what ``xz -9`` writes (``lzma.compress(raw, preset=9)``: the .xz container, an
  LZMA2 stream, a CRC64 check; 60-odd bytes of container on a short document). Preset 9
  allocates a 64 MiB dictionary per call (~70 ms on a 1 KiB document), so the dictionary
  is sized to the document instead (``max(4 KiB, raw size)``, liblzma's minimum is 4 KiB):
  with the whole input inside the window the encoder finds the same matches, and the
  compressed sizes were equal to preset 9's on every document compared (900 documents
  of six grammars; ``tests/test_series_floor.py`` checks one against the plain call).
* ``bz2``: what ``bzip2 -9`` writes (``bz2.compress(raw, 9)``; the level only sets the
  block size, 900 KB, which no document reaches).
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from gzipscale.helpers import InputError

GZIP_LEVEL = 9
_GZIP_WBITS = 31  # 16 + 15: gzip container, 32 KiB window
LZMA_PRESET = 9
BZ2_LEVEL = 9
_LZMA_MIN_DICT = 4096  # liblzma's LZMA_DICT_SIZE_MIN
_LZMA_PRESET_DICT = 64 << 20  # preset 9's dictionary
# The compressors of compression_ratios, the paper's first; each one's setting, in words.
COMPRESSORS: dict[str, str] = {
    "gzip": "zlib level 9, gzip container (18 bytes) counted",
    "lzma": "xz -9: LZMA2 preset 9, .xz container with CRC64 counted, window >= document",
    "bz2": "bzip2 -9: bz2.compress level 9, .bz2 container counted",
}
DEFAULT_COMPRESSOR = "gzip"


def gzip_ratio_bytes(raw: bytes | memoryview) -> float:
    """Compressed/raw size of a byte string (text corpora)."""
    n = len(raw)
    if n == 0:
        raise InputError("cannot score an empty document")
    return len(zlib.compress(raw, GZIP_LEVEL, wbits=_GZIP_WBITS)) / n


def token_bytes(tokens) -> bytes:
    """Token ids as 4-byte big-endian signed integers (the paper's encoding)."""
    arr = np.asarray(tokens)
    if arr.size and (arr.min() < -(2**31) or arr.max() >= 2**31):
        raise InputError("token ids must fit in a 32-bit signed integer")
    return arr.astype(">i4", copy=False).tobytes()


def gzip_ratio(tokens) -> float:
    """H of one document given as a sequence of token ids."""
    return gzip_ratio_bytes(token_bytes(tokens))


def compress_function(name: str, raw_size: int) -> Callable[[bytes | memoryview], bytes]:
    """The compression call of compressor ``name`` for inputs of ``raw_size`` bytes."""
    if name == "gzip":
        return lambda raw: zlib.compress(raw, GZIP_LEVEL, wbits=_GZIP_WBITS)
    if name == "lzma":
        size = min(max(_LZMA_MIN_DICT, raw_size), _LZMA_PRESET_DICT)
        filters = [{"id": lzma.FILTER_LZMA2, "preset": LZMA_PRESET, "dict_size": size}]
        return lambda raw: lzma.compress(raw, format=lzma.FORMAT_XZ, filters=filters)
    if name == "bz2":
        return lambda raw: bz2.compress(raw, BZ2_LEVEL)
    raise InputError(f"compressor must be one of {', '.join(COMPRESSORS)}, got {name!r}")


def compression_ratios(documents: np.ndarray, compressor: str = DEFAULT_COMPRESSOR) -> np.ndarray:
    """Compressed/raw size of every row of a 2-D array of token ids, as float64, with
    ``compressor`` (one of :data:`COMPRESSORS`; gzip: H of every row).

    Every compressor sees the same bytes (the paper's token encoding) and is normalised
    the same way: compressed size, container included, over the raw size.
    """
    if compressor == "gzip":
        return gzip_ratios(documents)
    docs, n, length = _checked_documents(documents)
    width = 4 * length
    compress = compress_function(compressor, width)
    raw = memoryview(token_bytes(docs))
    return (
        np.fromiter(
            (len(compress(raw[i * width : (i + 1) * width])) for i in range(n)),
            dtype=np.float64,
            count=n,
        )
        / width
    )


def _checked_documents(documents) -> tuple[np.ndarray, int, int]:
    """The documents as a 2-D array with their count and length, or a clear error."""
    docs = np.asarray(documents)
    if docs.ndim != 2:
        raise InputError(
            f"documents must be a 2-D array (documents x tokens), got shape {docs.shape}"
        )
    n, length = docs.shape
    if length == 0:
        raise InputError("cannot score empty documents")
    return docs, n, length


def gzip_ratios(documents: np.ndarray) -> np.ndarray:
    """H of every row of a 2-D array of token ids, as float64.

    One byte-order conversion for the whole batch, then one zlib call per document on a
    zero-copy slice: the per-document cost is the bare compression call.
    """
    docs, n, length = _checked_documents(documents)
    raw = memoryview(token_bytes(docs))
    width = 4 * length
    compress = zlib.compress
    return (
        np.fromiter(
            (
                len(compress(raw[i * width : (i + 1) * width], GZIP_LEVEL, wbits=_GZIP_WBITS))
                for i in range(n)
            ),
            dtype=np.float64,
            count=n,
        )
        / width
    )


def gzip_ratios_chunks(data: bytes, chunk_bytes: int) -> np.ndarray:
    """H of consecutive ``chunk_bytes``-byte chunks of a byte string (last partial dropped)."""
    view = memoryview(data)
    n = len(data) // chunk_bytes
    compress = zlib.compress
    return (
        np.fromiter(
            (
                len(
                    compress(
                        view[i * chunk_bytes : (i + 1) * chunk_bytes], GZIP_LEVEL, wbits=_GZIP_WBITS
                    )
                )
                for i in range(n)
            ),
            dtype=np.float64,
            count=n,
        )
        / chunk_bytes
    )


@dataclass(frozen=True)
class GzipStats:
    """Summary of per-document H values. ``median`` is the dataset's H."""

    median: float
    mean: float
    std: float  # sample standard deviation (ddof=1), 0 for a single document
    iqr: float
    q25: float
    q75: float
    n: int

    @classmethod
    def of(cls, ratios) -> GzipStats:
        r = np.asarray(ratios, dtype=np.float64)
        if r.size == 0:
            raise InputError("no documents to summarise")
        q25, med, q75 = np.percentile(r, [25, 50, 75])
        return cls(
            median=float(med),
            mean=float(r.mean()),
            std=float(r.std(ddof=1)) if r.size > 1 else 0.0,
            iqr=float(q75 - q25),
            q25=float(q25),
            q75=float(q75),
            n=int(r.size),
        )

    def to_dict(self) -> dict:
        return asdict(self)
