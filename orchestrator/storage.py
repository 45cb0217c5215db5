"""Where a sweep's run directory lives: a local (or NFS) path, or a URI pyarrow knows.

Ray Tune needs shared storage for multi-node sweeps (``s3://``, ``gs://``, NFS). The
sweep keeps its own small files (``sweep.json``, ``results.csv``, the report) and its
datasets in the same run directory, through :class:`RunStore`, so that a laptop run and
a cluster run have the same layout. Datasets are generated on the driver, uploaded when
the store is remote, and fetched once per node into a local cache by the trials.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from gzipscale.helpers import atomic_write_bytes, bytes_sha256
from gzipscale.vocabulary import MANIFEST_FILE

CACHE_ROOT = Path(
    os.environ.get("GZIPSCALE_CACHE", Path(tempfile.gettempdir()) / "gzipscale-cache")
)


def is_uri(location: str) -> bool:
    return "://" in location


def join(location: str, *parts: str) -> str:
    if is_uri(location):
        return "/".join([location.rstrip("/"), *parts])
    return str(Path(location, *parts))


def resolve_storage(storage: str) -> str:
    """An absolute path (``ray job submit`` runs in a temporary working directory, where a
    relative path would vanish with the job) or the URI unchanged."""
    if is_uri(storage):
        return storage
    return str(Path(storage).expanduser().resolve())


class RunStore:
    """Small-file access to a run directory at ``location`` (path or URI)."""

    def __init__(self, location: str):
        self.location = location
        if is_uri(location):
            self.fs, self.root = pafs.FileSystem.from_uri(location)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), str(Path(location).resolve())
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}" if rel else self.root

    def local_path(self, rel: str = "") -> Path | None:
        return Path(self.path(rel)) if self.local else None

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def read_text(self, rel: str) -> str:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read().decode()

    def write_text(self, rel: str, text: str) -> None:
        """Atomic on a local file system (temp file + rename); object stores replace a
        whole object in one PUT, which is atomic for readers too."""
        if self.local:
            atomic_write_bytes(Path(self.path(rel)), text.encode())
            return
        self.fs.create_dir(self.path(rel).rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(self.path(rel)) as f:
            f.write(text.encode())

    def upload_dir(self, local_dir: Path, rel: str) -> None:
        self.fs.create_dir(self.path(rel), recursive=True)
        pafs.copy_files(str(local_dir), self.path(rel), destination_filesystem=self.fs)


def local_dataset(location: str) -> Path:
    """A local directory holding the dataset at ``location`` (fetched once per node).

    The cache path depends only on the location, so a trial restarted on the same node
    (or on any node, for the checkpoint's run identity) uses the same path.
    """
    if not is_uri(location):
        return Path(location)
    fs, root = pafs.FileSystem.from_uri(location)
    if isinstance(fs, pafs.LocalFileSystem):
        return Path(root)
    key = bytes_sha256(location.encode())[:16]
    target = CACHE_ROOT / f"{Path(root).name}-{key}"
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / f".{target.name}.lock", "w") as lock:
        # Two trials on one node must not download the same dataset at once.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / MANIFEST_FILE).exists():
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=CACHE_ROOT))
            pafs.copy_files(root, str(staging), source_filesystem=fs)
            os.replace(staging, target)
    return target
