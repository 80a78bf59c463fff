"""Files written whole or not at all, deterministic plots, and plot types checked before drawing."""

import time

import numpy as np
import pytest

from rpaccel.host.files import FileFormatError, load_arrays, replacing, save_arrays
from rpaccel.host.quality import check_plot_path, plot_quality


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "a.npz"
    save_arrays(path, {"x": np.arange(3)})
    old = path.read_bytes()
    with pytest.raises(TypeError, match="array 'y' has dtype object"):
        save_arrays(path, {"x": np.arange(5), "y": np.array([None])})
    assert path.read_bytes() == old and [p.name for p in path.parent.iterdir()] == ["a.npz"]
    with pytest.raises(KeyboardInterrupt), replacing(path) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert path.read_bytes() == old and [p.name for p in path.parent.iterdir()] == ["a.npz"]
    with replacing(path) as tmp:
        assert tmp.parent == path.parent and tmp.name.startswith(".a.npz.") and tmp.name.endswith(".part")
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new" and [p.name for p in path.parent.iterdir()] == ["a.npz"]


def test_foreign_files_are_format_errors(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(FileFormatError, match=r"empty\.npz: not a weights file \(the file is empty\)"):
        load_arrays(tmp_path / "empty.npz", kind="weights file")
    (tmp_path / "cut.npz").write_bytes(save_arrays(tmp_path / "whole.npz", {"x": np.arange(99)}).read_bytes()[:60])
    with pytest.raises(FileFormatError, match=r"cut\.npz: not a weights file"):
        load_arrays(tmp_path / "cut.npz", kind="weights file")
    with pytest.raises(FileFormatError, match=r": is a folder, not a weights file"):
        load_arrays(tmp_path, kind="weights file")


ROWS = [{"pipeline": "a", "macs_per_query": 1000, "ndcg": 0.5, "ndcg_sem": 0.01, "kind": "int8"},
        {"pipeline": "b", "macs_per_query": 4000, "ndcg": 0.6, "ndcg_sem": 0.01, "kind": "int8"}]


@pytest.mark.parametrize(("name", "magic"), [("q.png", b"\x89PNG"), ("q.svg", b"<?xml"), ("q.pdf", b"%PDF")])
def test_plots_are_deterministic_in_each_type(tmp_path, monkeypatch, name, magic):
    first = plot_quality(ROWS, tmp_path / "a" / name).read_bytes()
    assert first.startswith(magic)
    later = time.time() + 86400 * 400
    monkeypatch.setattr(time, "time", lambda: later)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(later)))
    assert plot_quality(ROWS, tmp_path / "b" / name).read_bytes() == first


def test_a_plot_type_matplotlib_cannot_write_is_refused_before_drawing(tmp_path):
    for name, message in (("q.xyz", r"q\.xyz: unsupported plot file type \.xyz \(supported: .*\.png"),
                          ("q", r"q: no file type \(supported: ")):
        with pytest.raises(ValueError, match=message):
            check_plot_path(tmp_path / name)
        with pytest.raises(ValueError, match=message):
            plot_quality(ROWS, tmp_path / name)
    check_plot_path("Q.PNG")
    assert list(tmp_path.iterdir()) == []
