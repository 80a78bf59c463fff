"""On-disk build cache shared by Verilog generation, Verilator builds and synthesis runs.

Entries are folders named by a hash of everything that determines their content; a folder is complete once its
``.complete`` marker exists. Concurrent builders of one entry (pytest-xdist workers, parallel benchmarks) are
serialised by a lock file, so a build is done once and reused by everyone.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

__all__ = ["cache_dir", "cache_entry", "digest", "mark_complete", "source_digest"]

_MARKER = ".complete"


def cache_dir():
    """Root of the cache: ``$RPACCEL_CACHE_DIR``, else ``$XDG_CACHE_HOME/rpaccel``, else ``~/.cache/rpaccel``."""
    root = os.environ.get("RPACCEL_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "rpaccel")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def digest(*parts):
    """A short stable hash of JSON-serialisable ``parts`` (anything else is hashed through ``repr``)."""
    text = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


_source_digests = {}


def source_digest(*paths):
    """Hash of the Python sources under ``paths`` (files or folders), so that caches follow code changes."""
    key = tuple(str(p) for p in paths)
    if key not in _source_digests:
        h = hashlib.sha256()
        for path in map(Path, paths):
            files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
            for file in files:
                h.update(str(file.name).encode())
                h.update(file.read_bytes())
        _source_digests[key] = h.hexdigest()[:20]
    return _source_digests[key]


@contextlib.contextmanager
def cache_entry(kind, key):
    """Lock and yield ``(folder, complete)`` for the cache entry ``kind/key``.

    The caller builds into ``folder`` when ``complete`` is false and then calls ``mark_complete(folder)``;
    the lock is held for the whole ``with`` block. A folder left incomplete by a crashed build is wiped first.
    """
    root = cache_dir() / kind
    root.mkdir(parents=True, exist_ok=True)
    folder = root / key
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        complete = (folder / _MARKER).exists()
        if not complete and folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(exist_ok=True)
        yield folder, complete


def mark_complete(folder):
    """Mark a cache entry folder as completely built."""
    (Path(folder) / _MARKER).touch()
