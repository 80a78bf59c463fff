"""The build cache's bound: least recently used entries go first; recent and locked ones stay."""

import fcntl
import os

import pytest

from rpaccel.sim.cache import cache_budget, cache_entry, cache_size, evict, mark_complete


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("RPACCEL_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("RPACCEL_CACHE_MAX_GB", "1000")
    return tmp_path


def _build(kind, key, size, used):
    with cache_entry(kind, key) as (folder, complete):
        assert not complete
        (folder / "payload").write_bytes(b"x" * size)
        mark_complete(folder)
    os.utime(folder / ".complete", (used, used))
    return folder


def test_evicts_least_recently_used_first(cache_root):
    now = 1_000_000_000.0
    old = _build("verilator", "old", 1000, now - 90_000)
    middle = _build("verilog", "middle", 1000, now - 50_000)
    new = _build("verilator", "new", 1000, now - 20_000)
    assert cache_size() == 3000
    assert evict(2000, now=now) == [old]
    assert not old.exists() and middle.exists() and new.exists()
    assert evict(500, now=now) == [middle, new]
    assert cache_size() == 0


def test_use_refreshes_an_entry(cache_root):
    now = 1_000_000_000.0
    first = _build("verilog", "first", 1000, now - 90_000)
    second = _build("verilog", "second", 1000, now - 80_000)
    with cache_entry("verilog", "first") as (folder, complete):
        assert complete and folder == first
    assert evict(1000, now=os.stat(first / ".complete").st_mtime + 10_000) == [second]
    assert first.exists()


def test_keeps_recent_and_locked_entries(cache_root):
    now = 1_000_000_000.0
    locked = _build("verilator", "locked", 1000, now - 90_000)
    recent = _build("verilator", "recent", 1000, now - 60)
    with open(cache_root / "verilator" / "locked.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert evict(0, now=now) == []
    assert locked.exists() and recent.exists()
    assert evict(0, now=now) == [locked]


def test_incomplete_entries_are_not_counted(cache_root):
    with cache_entry("verilog", "building") as (folder, _):
        (folder / "payload").write_bytes(b"x" * 1000)
        assert cache_size() == 0


@pytest.mark.parametrize("text", ["0", "-1", "lots"])
def test_budget_must_be_positive(monkeypatch, text):
    monkeypatch.setenv("RPACCEL_CACHE_MAX_GB", text)
    with pytest.raises(ValueError, match="RPACCEL_CACHE_MAX_GB must be a positive number"):
        cache_budget()
