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
import stat
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from gzipscale.helpers import UserError, atomic_write_bytes, bytes_sha256
from gzipscale.vocabulary import MANIFEST_FILE


def cache_root() -> Path:
    """The node-local dataset cache, private to this user: ``GZIPSCALE_CACHE``, or
    ``gzipscale-cache-<uid>`` in the temp directory, created with mode 0700.

    The default sits at a predictable path in a world-writable directory, so the cache (either
    one) is used only if it is a real directory (not a symlink) owned by this user with no
    group or other permissions; anything else there could have been planted or opened up by
    another user (to feed trials a dataset of their choosing), and is refused, not repaired.
    """
    root = Path(
        os.environ.get("GZIPSCALE_CACHE")
        or Path(tempfile.gettempdir()) / f"gzipscale-cache-{os.getuid()}"
    )
    try:
        root.mkdir(mode=0o700, parents=True)
        os.chmod(root, 0o700)  # whatever the umask
    except FileExistsError:
        pass
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory" + (" (a symlink)" if stat.S_ISLNK(info.st_mode) else "")
    elif info.st_uid != os.getuid():
        problem = f"is owned by uid {info.st_uid}, not this user (uid {os.getuid()})"
    elif info.st_mode & 0o077:
        problem = f"has mode {stat.S_IMODE(info.st_mode):04o}; it must be 0700"
    else:
        return root
    raise UserError(
        f"dataset cache {root} {problem}; remove it (or `chmod 700` your own) or set "
        "GZIPSCALE_CACHE to a private directory"
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
    cache = cache_root()
    target = cache / f"{Path(root).name}-{key}"
    with open(cache / f".{target.name}.lock", "w") as lock:
        # Two trials on one node must not download the same dataset at once.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / MANIFEST_FILE).exists():
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache))
            pafs.copy_files(root, str(staging), source_filesystem=fs)
            os.replace(staging, target)
    return target
