"""Synthetic data and the Criteo TSV format: determinism, skew, round trips, DLRM preprocessing, bad input."""

import gzip
import time

import numpy as np
import pytest

from rpaccel.host.data import (
    DataError,
    ReadStats,
    Records,
    SyntheticConfig,
    SyntheticCriteo,
    load_records,
    preprocess,
    read_criteo_tsv,
    save_records,
    split_data,
    write_criteo_tsv,
)

from host_fixtures import TINY_ROWS, tiny_cat_towers, tiny_data, tiny_dot

CRITEO_SMALL = SyntheticConfig.criteo(max_rows=300, seed=5)


@pytest.fixture(scope="module")
def criteo_records():
    return SyntheticCriteo(CRITEO_SMALL).generate(3000)


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a.arrays().values(), b.arrays().values()))


def test_generator_is_deterministic_and_position_addressable(criteo_records):
    again = SyntheticCriteo(CRITEO_SMALL).generate(3000)
    assert _same(criteo_records, again)
    other = SyntheticCriteo(SyntheticConfig.criteo(max_rows=300, seed=6)).generate(3000)
    assert not np.array_equal(other.cats, criteo_records.cats)
    # Sample i depends only on the seed and i: a window across the 65536-sample chunk boundary matches.
    generator = SyntheticCriteo(SyntheticConfig(dense=2, rows=(50, 7), seed=1))
    whole = generator.generate(65636)
    window = generator.generate(200, start=65436)
    assert _same(whole.take(slice(65436, 65636)), window)


def test_shape_click_rate_missing_fields_and_skew(criteo_records):
    r = criteo_records
    assert (r.num_dense, r.num_tables, r.pooling) == (13, 26, 1)
    assert set(np.unique(r.labels)) == {0, 1}
    assert abs(r.labels.mean() - 0.25) < 0.03
    assert 0.05 < r.dense_missing.mean() < 0.3 and 0.02 < r.cat_missing.mean() < 0.3
    assert r.cats.min() >= 0 and r.cats.max() < 2**32
    assert np.all(r.cats[r.cat_missing] == 0) and np.all(r.dense[r.dense_missing] == 0)
    # Zipf skew: the most frequent value of a 300-row feature takes its rank-1 share of the lookups.
    gen = SyntheticCriteo(SyntheticConfig(dense=1, rows=(300,), skew=1.0, missing=False, seed=2))
    values = gen.generate(20000).cats[:, 0, 0]
    top_share = np.unique(values, return_counts=True)[1].max() / len(values)
    assert top_share == pytest.approx(gen.samplers[0].probabilities[0], rel=0.1)
    uniform = SyntheticCriteo(SyntheticConfig(dense=1, rows=(300,), skew=0.0, missing=False, seed=2))
    assert np.unique(uniform.generate(20000).cats, return_counts=True)[1].max() / 20000 < 0.01


def test_planted_labels_are_learnable_signal():
    records, logits = SyntheticCriteo(CRITEO_SMALL).generate(4000, with_logits=True)
    from rpaccel.host.quality import auc

    assert auc(logits, records.labels) > 0.8


def test_hashing_into_the_generating_table_size_is_exact(criteo_records):
    spec = tiny_dot(dense=13, tables=CRITEO_SMALL.rows, bottom=(8, 4))
    dense, ids = preprocess(criteo_records, spec)
    for t in range(26):
        present = ~criteo_records.cat_missing[:, t, 0]
        values, slots = criteo_records.cats[present, t, 0], ids[present, t, 0]
        # Distinct values map to distinct rows: no collisions when the table has the generator's size.
        assert len(np.unique(values)) == len(np.unique(slots))
    assert np.all(ids[criteo_records.cat_missing] == 0)
    expected = np.log1p(np.maximum(criteo_records.dense, 0)).astype(np.float32)
    assert np.array_equal(dense, np.where(criteo_records.dense_missing, 0, expected))
    assert dense.dtype == np.float32 and ids.dtype == np.int64


def test_tsv_round_trip_and_byte_identical_files(tmp_path, criteo_records):
    path = write_criteo_tsv(tmp_path / "a.tsv", criteo_records)
    write_criteo_tsv(tmp_path / "b.tsv", SyntheticCriteo(CRITEO_SMALL).generate(3000))
    assert path.read_bytes() == (tmp_path / "b.tsv").read_bytes()
    first = path.read_text().splitlines()[0].split("\t")
    assert len(first) == 40 and first[0] in ("0", "1")
    assert all(len(c) == 8 for c in first[14:] if c)
    back = load_records(path)
    assert _same(back, criteo_records)
    chunks = list(read_criteo_tsv(path, chunk=1000))
    assert [len(c) for c in chunks] == [1000, 1000, 1000]
    assert _same(load_records(path, skip=100, limit=50), criteo_records.take(slice(100, 150)))
    gz = write_criteo_tsv(tmp_path / "a.tsv.gz", criteo_records)
    assert _same(load_records(gz), criteo_records)


def test_records_npz_round_trip_for_multi_hot_models(tmp_path):
    spec = tiny_cat_towers()
    records = SyntheticCriteo(SyntheticConfig.for_model(spec, seed=3)).generate(500)
    assert records.cats.shape == (500, len(TINY_ROWS), 2)
    save_records(tmp_path / "r.npz", records)
    save_records(tmp_path / "s.npz", records)
    assert (tmp_path / "r.npz").read_bytes() == (tmp_path / "s.npz").read_bytes()
    assert _same(load_records(tmp_path / "r.npz"), records)
    with pytest.raises(DataError, match="has 3 dense and 4 categorical features per sample, but model rm-small"):
        from rpaccel.host.models import get_model

        preprocess(records, get_model("rm-small"))
    with pytest.raises(ValueError, match="Criteo TSV format holds 13 dense"):
        write_criteo_tsv(tmp_path / "x.tsv", records)


GOOD = "\t".join(["1", *["5"] * 13, *["0a1b2c3d"] * 26])


def _line(field, value):
    fields = GOOD.split("\t")
    fields[field] = value
    return "\t".join(fields)


@pytest.mark.parametrize(("bad", "message"), [
    ("\t".join(GOOD.split("\t")[:39]), r"bad\.tsv:2: expected 40 tab-separated fields .* found 39"),
    (GOOD + "\t", r"bad\.tsv:2: expected 40 tab-separated fields .* found 41"),
    (_line(0, "2"), r"bad\.tsv:2: label: '2' is not 0 or 1"),
    (_line(3, "12x"), r"bad\.tsv:2: I3: '12x' is not an integer"),
    (_line(1, "1_0"), r"bad\.tsv:2: I1: '1_0' is not an integer"),
    (_line(2, "-1234567890123456789"), r"bad\.tsv:2: I2: '-1234567890123456789' does not fit 64 bits"),
    (_line(14, "zz12"), r"bad\.tsv:2: C1: 'zz12' is not a hexadecimal value"),
    (_line(39, "0x1f"), r"bad\.tsv:2: C26: '0x1f' is not a hexadecimal value"),
    (_line(20, "123456789"), r"bad\.tsv:2: C7: '123456789' is not a hexadecimal value of at most 8 digits"),
    ("", r"bad\.tsv:2: empty line"),
])
def test_bad_lines_name_file_line_and_field(tmp_path, bad, message):
    path = tmp_path / "bad.tsv"
    path.write_text(GOOD + "\n" + bad + "\n" + GOOD + "\n")
    with pytest.raises(DataError, match=message):
        load_records(path)
    stats = ReadStats()
    records = load_records(path, on_error="skip", stats=stats)
    assert len(records) == 2 and stats.total_skipped == 1 and stats.lines == 3
    assert message.split(": ", 1)[1].split(" ")[0].replace("\\", "") in stats.examples[0]


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.tsv: no such file"):
        load_records(tmp_path / "nope.tsv")
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(DataError, match=r"empty\.tsv: holds no records"):
        load_records(tmp_path / "empty.tsv")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"junk\.npz: not a records file"):
        load_records(tmp_path / "junk.npz")
    (tmp_path / "bin.tsv").write_bytes(b"\xff\xfe\n")
    with pytest.raises(DataError, match=r"bin\.tsv:1: not ASCII text"):
        load_records(tmp_path / "bin.tsv")


def test_empty_fields_are_missing(tmp_path):
    fields = GOOD.split("\t")
    fields[2] = fields[20] = ""
    fields[5] = "-3"
    (tmp_path / "m.tsv").write_text("\t".join(fields) + "\n")
    r = load_records(tmp_path / "m.tsv")
    assert r.dense_missing[0].tolist() == [False, True] + [False] * 11 and r.dense[0, 4] == -3
    assert r.cat_missing[0, :, 0].tolist() == [False] * 6 + [True] + [False] * 19
    assert r.cats[0, 0, 0] == 0x0A1B2C3D
    assert isinstance(r, Records)


def test_a_byte_that_is_not_ascii_is_reported_on_its_line_and_can_be_skipped(tmp_path):
    # Far enough down that the old reader (a text decoder over 8 kB buffers) blamed another line.
    lines = [GOOD.encode()] * 3000
    fields = GOOD.encode().split(b"\t")
    fields[20] = b"0a1b\xc3\xa92c"  # C7, as UTF-8 text would hold an accent
    lines[2499] = b"\t".join(fields)
    column = len(b"\t".join(fields[:20])) + 6
    message = rf"bad\.tsv{{}}:2500: not ASCII text \(byte 0xc3 in field C7, column {column}\)"
    for name, write in (("bad.tsv", lambda p, data: p.write_bytes(data)),
                        ("bad.tsv.gz", lambda p, data: p.write_bytes(gzip.compress(data)))):
        path = tmp_path / name
        write(path, b"\n".join(lines) + b"\n")
        with pytest.raises(DataError, match=message.format(r"\.gz" if name.endswith(".gz") else "")):
            load_records(path)
        stats = ReadStats()
        records = load_records(path, on_error="skip", stats=stats)
        assert len(records) == 2999 and stats.lines == 3000 and dict(stats.skipped) == {"not ASCII text": 1}
    # A byte past the last field's tab (a 41st field) is reported without a field name.
    (tmp_path / "tail.tsv").write_bytes(GOOD.encode() + b"\t\xff\n")
    with pytest.raises(DataError, match=r"tail\.tsv:1: not ASCII text \(byte 0xff, column 2\d\d\)"):
        load_records(tmp_path / "tail.tsv")


def test_files_appear_whole_or_not_at_all(tmp_path, criteo_records, monkeypatch):
    path = tmp_path / "a.tsv"

    def chunks():
        yield criteo_records.take(slice(0, 1000))
        raise RuntimeError("the generator failed half way")

    with pytest.raises(RuntimeError, match="half way"):
        write_criteo_tsv(path, chunks())
    assert list(tmp_path.iterdir()) == []
    write_criteo_tsv(path, (criteo_records.take(slice(i, i + 1000)) for i in range(0, 3000, 1000)))
    assert path.read_bytes() == write_criteo_tsv(tmp_path / "b.tsv", criteo_records).read_bytes()
    # A .gz file carries no time stamp: the same records give the same bytes at another time.
    first = write_criteo_tsv(tmp_path / "x" / "c.tsv.gz", criteo_records).read_bytes()
    later = time.time() + 86400
    monkeypatch.setattr(time, "time", lambda: later)
    assert write_criteo_tsv(tmp_path / "y" / "c.tsv.gz", criteo_records).read_bytes() == first
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.tsv", "b.tsv", "c.tsv.gz", "c.tsv.gz", "x", "y"]


def test_empty_and_foreign_npz_files_are_data_errors(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.npz: not a records file \(the file is empty\)"):
        load_records(tmp_path / "empty.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    with pytest.raises(DataError, match=r"one\.npz: not a records file \(a single array"):
        load_records(tmp_path / "one.npz")
    (tmp_path / "folder.npz").mkdir()
    with pytest.raises(DataError, match=r"folder\.npz: is a folder, not a records file"):
        load_records(tmp_path / "folder.npz")


def test_split_holds_out_the_last_samples_in_the_inputs_format(tmp_path, criteo_records):
    path = write_criteo_tsv(tmp_path / "all.tsv", criteo_records)
    assert split_data(path, tmp_path / "train.tsv", tmp_path / "test.tsv.gz", 1000) == (2000, 1000)
    assert _same(load_records(tmp_path / "train.tsv"), criteo_records.take(slice(0, 2000)))
    assert _same(load_records(tmp_path / "test.tsv.gz"), criteo_records.take(slice(2000, None)))
    assert (tmp_path / "train.tsv").read_bytes() + gzip.decompress((tmp_path / "test.tsv.gz").read_bytes()) \
        == path.read_bytes()
    records = tiny_data(tiny_cat_towers(), 50)
    save_records(tmp_path / "all.npz", records)
    assert split_data(tmp_path / "all.npz", tmp_path / "a.npz", tmp_path / "b.npz", 8) == (42, 8)
    assert _same(load_records(tmp_path / "b.npz"), records.take(slice(42, None)))
    with pytest.raises(DataError, match=r"all\.tsv: holds 3,000 lines, none left for training after 3,000"):
        split_data(path, tmp_path / "x.tsv", tmp_path / "y.tsv", 3000)
    with pytest.raises(DataError, match=r"all\.npz: a split writes the input's format"):
        split_data(tmp_path / "all.npz", tmp_path / "x.npz", tmp_path / "y.tsv", 8)
    with pytest.raises(DataError, match=r"nope\.tsv: no such file"):
        split_data(tmp_path / "nope.tsv", tmp_path / "x.tsv", tmp_path / "y.tsv", 8)
    assert not any(p.name.startswith(("x", "y", ".")) for p in tmp_path.iterdir())
