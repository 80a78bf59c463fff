"""On-disk build cache shared by Verilog generation, Verilator builds and synthesis runs.

Entries are folders named by a hash of everything that determines their content; a folder is complete once its
``.complete`` marker exists. Concurrent builders of one entry (pytest-xdist workers, parallel benchmarks) are
serialised by a lock file, so a build is done once and reused by everyone.

The cache is bounded: each use of an entry refreshes its marker's time, and after each new entry is completed the
least recently used entries are deleted until the whole cache is within ``$RPACCEL_CACHE_MAX_GB`` (default 8 GB).
Entries used within the last two hours are never deleted (a test session may still be running their simulators),
nor entries whose lock another process holds.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

__all__ = ["cache_budget", "cache_dir", "cache_entry", "cache_size", "digest", "evict", "mark_complete",
           "source_digest"]

_MARKER = ".complete"
_DEFAULT_BUDGET_GB = 8.0
_RECENT_SECONDS = 2 * 3600


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
        if complete:
            (folder / _MARKER).touch()
        elif folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(exist_ok=True)
        yield folder, complete


def mark_complete(folder):
    """Mark a cache entry folder as completely built, then bound the cache (`evict`)."""
    (Path(folder) / _MARKER).touch()
    evict(cache_budget())


def cache_budget():
    """The cache's size limit in bytes: ``$RPACCEL_CACHE_MAX_GB`` gigabytes (default 8)."""
    text = os.environ.get("RPACCEL_CACHE_MAX_GB")
    if text is None:
        return int(_DEFAULT_BUDGET_GB * 1e9)
    try:
        gigabytes = float(text)
    except ValueError:
        gigabytes = -1.0
    if not gigabytes > 0:
        raise ValueError(f"RPACCEL_CACHE_MAX_GB must be a positive number of gigabytes, not {text!r}")
    return int(gigabytes * 1e9)


def _tree_size(path):
    total = 0
    stack = [path]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total


def _entries(root):
    """Every complete entry of the cache as ``(last use, size, folder)``."""
    found = []
    for kind in (p for p in root.iterdir() if p.is_dir()):
        for folder in (p for p in kind.iterdir() if p.is_dir()):
            marker = folder / _MARKER
            try:
                used = marker.stat().st_mtime
            except FileNotFoundError:
                continue
            found.append((used, _tree_size(folder), folder))
    return found


def cache_size():
    """Bytes held by the cache's complete entries."""
    return sum(size for _, size, _ in _entries(cache_dir()))


def evict(budget, *, recent_seconds=_RECENT_SECONDS, now=None):
    """Delete the least recently used complete entries until the cache holds at most ``budget`` bytes.

    Entries used within ``recent_seconds`` of ``now`` and entries locked by another process are kept, so the cache
    may stay above the budget while they are in use. Returns the folders deleted.
    """
    now = time.time() if now is None else now
    entries = sorted(_entries(cache_dir()), key=lambda entry: entry[0])
    total = sum(size for _, size, _ in entries)
    deleted = []
    for used, size, folder in entries:
        if total <= budget:
            break
        if now - used < recent_seconds:
            continue
        with open(folder.parent / f"{folder.name}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            (folder / _MARKER).unlink(missing_ok=True)
            shutil.rmtree(folder, ignore_errors=True)
        total -= size
        deleted.append(folder)
    return deleted
