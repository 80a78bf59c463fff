"""Query traces: distributions, determinism, the file format round trip, and every bad line named."""

import itertools
import json
import math

import numpy as np
import pytest

from rpaccel.cli import main
from rpaccel.host.data import DataError, SyntheticConfig, SyntheticCriteo, write_criteo_tsv
from rpaccel.host.runtime.trace import (
    MLPERF_DLRM_QUANTILES,
    ArrivalProcess,
    QueryRecord,
    SizeDist,
    TraceData,
    generate_trace,
    read_trace,
    trace_summary,
    write_trace,
)

SYNTHETIC = {"kind": "synthetic", "seed": 1, "max_rows": 300, "skew": 1.05, "ctr": 0.25, "start": 0}


def records_of(queries, **kwargs):
    kwargs.setdefault("data", SYNTHETIC)
    header, records = generate_trace(queries, **kwargs)
    return header, list(records)


def test_the_same_seed_writes_the_same_bytes_and_a_longer_trace_extends_a_shorter(tmp_path):
    for name in ("a.jsonl", "a.jsonl.gz"):
        paths = [tmp_path / f"{i}{name}" for i in range(2)]
        for path in paths:
            write_trace(path, *generate_trace(5000, sizes="lognormal:5.1,0.2", arrivals="poisson:300",
                                              data=SYNTHETIC, seed=7))
        assert paths[0].read_bytes() == paths[1].read_bytes()
    _, short = records_of(100, sizes="normal:165,16", arrivals="poisson:300", seed=3)
    _, long = records_of(5000, sizes="normal:165,16", arrivals="poisson:300", seed=3)
    assert long[:100] == short
    _, other = records_of(100, sizes="normal:165,16", arrivals="poisson:300", seed=4)
    assert other != short


def test_the_load_changes_the_gaps_only():
    _, slow = records_of(2000, sizes="lognormal:5.1,0.2", arrivals="poisson:100")
    _, fast = records_of(2000, sizes="lognormal:5.1,0.2", arrivals="poisson:200")
    assert [r.size for r in slow] == [r.size for r in fast]
    assert [r.first for r in slow] == [r.first for r in fast]
    assert abs(slow[-1].t_ns / fast[-1].t_ns - 2) < 1e-6


def test_size_distributions():
    rng = np.random.default_rng(0)
    n = 40_000
    normal = SizeDist.parse("normal:165,16").draw(rng, n)
    assert abs(normal.mean() - 165) < 0.5 and abs(normal.std() - 16) < 0.5
    lognormal = SizeDist.parse("lognormal:5.1,0.2").draw(rng, n)
    assert abs(np.median(lognormal) - math.exp(5.1)) < 2
    clipped = SizeDist.parse("normal:1000,200", low=10, high=1024).draw(rng, n)
    assert clipped.max() == 1024 and clipped.min() >= 10 and (clipped == 1024).mean() > 0.4
    table = SizeDist.parse("table:mlperf-dlrm").draw(rng, n)
    values, counts = np.unique(table, return_counts=True)
    assert set(values) == set(MLPERF_DLRM_QUANTILES)
    expected = {v: MLPERF_DLRM_QUANTILES.count(v) / len(MLPERF_DLRM_QUANTILES) for v in values}
    for value, count in zip(values, counts):
        assert abs(count / n - expected[value]) < 0.01, value
    assert SizeDist.parse("table:3,5").draw(rng, 100).tolist().count(4) == 0
    assert (SizeDist.parse("fixed:4096").draw(rng, 5) == 4096).all()     # fixed sizes are never clipped


def test_arrival_processes():
    rng = np.random.default_rng(0)
    gaps = ArrivalProcess.parse("poisson:500").gaps_ns(rng, 50_000) / 1e6
    assert abs(gaps.mean() - 2.0) < 0.05 and abs(gaps.std() / gaps.mean() - 1) < 0.03   # exponential: CV 1
    whole = ArrivalProcess.parse("recpipe:0.5").gaps_ns(rng, 50_000)
    assert (whole % 1_000_000 == 0).all()
    assert abs((whole == 0).mean() - math.exp(-0.5)) < 0.01     # RecPipe's whole-millisecond gaps: 61% zero


def test_queries_take_consecutive_samples_and_wrap_around_a_file():
    _, records = records_of(50, sizes="normal:20,5", arrivals="poisson:10")
    assert records[0] == QueryRecord(0, 0, records[0].size, 0)
    for a, b in itertools.pairwise(records):
        assert b.first == a.first + a.size and b.t_ns >= a.t_ns and b.q == a.q + 1
    _, wrapped = records_of(50, sizes="fixed:30", arrivals="poisson:10", data={"kind": "file", "path": "x.tsv",
                                                                              "samples": 100})
    assert [r.first for r in wrapped[:5]] == [0, 30, 60, 90, 20]


@pytest.mark.parametrize("name", ["t.jsonl", "t.jsonl.gz"])
def test_round_trip_and_summary(tmp_path, name):
    header, records = records_of(3000, sizes="table:mlperf-dlrm", arrivals="recpipe:0.5", seed=2)
    write_trace(tmp_path / name, header, records)
    back_header, back = read_trace(tmp_path / name)
    assert back_header == header and list(back) == records
    summary = trace_summary(*read_trace(tmp_path / name))
    assert summary["queries"] == 3000 and summary["candidates"] == sum(r.size for r in records)
    assert summary["size"]["max"] == 700 and summary["zero_gaps"] > 0.5


def test_trace_data_gives_the_query_samples(tmp_path):
    header, records = records_of(4, sizes="fixed:10", arrivals="poisson:10")
    data = TraceData(header)
    generator = SyntheticCriteo(SyntheticConfig.criteo(max_rows=300, seed=1))
    assert np.array_equal(data.query(records[2]).cats, generator.generate(10, start=20).cats)
    write_criteo_tsv(tmp_path / "d.tsv", [generator.generate(25)])
    file_header, file_records = records_of(4, sizes="fixed:10", arrivals="poisson:10",
                                           data={"kind": "file", "path": "d.tsv", "samples": 25})
    wrapped = TraceData(file_header, base=tmp_path).query(file_records[2])     # samples 20-24, then 0-4
    assert np.array_equal(wrapped.labels, generator.generate(25).labels[np.r_[20:25, 0:5]])
    short = dict(file_header.data, samples=30)
    with pytest.raises(DataError, match="holds 25 samples"):
        TraceData(type(file_header)(**{**file_header.__dict__, "data": short}), base=tmp_path)


def _retime(line, t_ns):
    return json.dumps({**json.loads(line), "t_ns": t_ns}) + "\n"


def _lines(tmp_path, queries=5):
    path = tmp_path / "t.jsonl"
    write_trace(path, *generate_trace(queries, sizes="fixed:8", arrivals="poisson:100", data=SYNTHETIC))
    return path, path.read_text().splitlines(keepends=True)


@pytest.mark.parametrize("edit, line, message", [
    (lambda ls: [*ls[:3], "{oops\n", *ls[4:]], 4, "not JSON"),
    (lambda ls: [*ls[:2], ls[2].replace('"size":8,', ""), *ls[3:]], 3, "size: missing"),
    (lambda ls: [*ls[:2], ls[2].replace('"size":8', '"size":0'), *ls[3:]], 3, "size: must be an integer >= 1"),
    (lambda ls: [*ls[:2], ls[3], *ls[3:]], 3, "q: query 2 out of sequence"),
    (lambda ls: [*ls[:2], json.dumps({**json.loads(ls[2]), "t_ns": -1}) + "\n", *ls[3:]], 3, "t_ns: must be"),
    (lambda ls: [*ls[:2], _retime(ls[2], 10 ** 12), *ls[3:]], 4, "t_ns: arrival"),
    (lambda ls: ls[:-1], 6, "truncated: the header announces 5 queries, the file holds 4"),
    (lambda ls: [*ls[:-1], ls[-1].rstrip("\n")], 6, "truncated line"),
    (lambda ls: [*ls, ls[-1].replace('"q":4', '"q":5')], 7, "more records than the 5"),
    (lambda ls: [ls[0].replace('"version":1', '"version":2'), *ls[1:]], 1, "version: version 2"),
    (lambda ls: [ls[0].replace("rpaccel-trace", "other"), *ls[1:]], 1, "not an rpaccel trace"),
])
def test_every_bad_line_is_named(tmp_path, edit, line, message):
    path, lines = _lines(tmp_path)
    path.write_text("".join(edit(lines)))
    with pytest.raises(DataError) as info:
        _header, records = read_trace(path)
        list(records)
    assert f"{path}:{line}: " in str(info.value) and message in str(info.value)


def test_a_cut_gzip_trace_is_named(tmp_path):
    path = tmp_path / "t.jsonl.gz"
    write_trace(path, *generate_trace(2000, sizes="fixed:8", arrivals="poisson:100", data=SYNTHETIC))
    path.write_bytes(path.read_bytes()[:-200])      # cut off in the middle of the compressed stream
    with pytest.raises(DataError, match=f"{path}:\\d+: unreadable"):
        list(read_trace(path)[1])


@pytest.mark.parametrize("text, message", [
    ("gauss:1,2", "Unknown size distribution"), ("normal:1", "needs 2"), ("normal:1,-2", "spread must be"),
    ("fixed:0", "positive integer"), ("table:nope", "known name"), ("fixed:nan", "finite"),
])
def test_bad_size_distributions(text, message):
    with pytest.raises(ValueError, match=message):
        SizeDist.parse(text)


@pytest.mark.parametrize("text, message", [("poisson:0", "positive"), ("uniform:3", "Unknown arrival"),
                                           ("recpipe:x", "needs 1")])
def test_bad_arrival_processes(text, message):
    with pytest.raises(ValueError, match=message):
        ArrivalProcess.parse(text)


def test_cli_gen_and_info(tmp_path, capsys):
    out = tmp_path / "q.jsonl"
    assert main(["trace", "gen", "--out", str(out), "--queries", "200", "--sizes", "table:mlperf-dlrm",
                 "--arrivals", "poisson:1000", "--max-rows", "300", "--quiet"]) == 0
    first = out.read_bytes()
    assert main(["trace", "gen", "--out", str(out), "--queries", "200", "--sizes", "table:mlperf-dlrm",
                 "--arrivals", "poisson:1000", "--max-rows", "300", "--quiet"]) == 0
    assert out.read_bytes() == first
    capsys.readouterr()
    assert main(["trace", "info", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["queries"] == 200 and summary["sizes"] == "table:mlperf-dlrm"
    assert summary["data"]["max_rows"] == 300


@pytest.mark.parametrize("argv, message", [
    (["trace", "gen", "--out", "{d}/q.jsonl", "--sizes", "normal:1"], "--sizes: normal:MEAN,STD needs 2"),
    (["trace", "gen", "--out", "{d}/q.jsonl", "--arrivals", "poisson:-1"], "--arrivals: poisson: the rate"),
    (["trace", "gen", "--out", "{d}/q.txt"], "a trace is a .jsonl or .jsonl.gz file"),
    (["trace", "gen", "--out", "{d}/q.jsonl", "--ctr", "5"], "A trace's data: ctr: must be in (0, 1), not 5.0"),
    (["trace", "gen", "--out", "{d}/q.jsonl", "--data", "{d}/missing.tsv"], "no such file"),
    (["trace", "info", "{d}/bad.jsonl"], "bad.jsonl:2: not JSON"),
])
def test_cli_bad_input_is_one_line_with_status_2(tmp_path, argv, message, capsys):
    header = _lines(tmp_path)[1][0]
    (tmp_path / "bad.jsonl").write_text(header + "{\n")
    assert main([arg.format(d=tmp_path) for arg in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "q.jsonl").exists()


def test_cli_refuses_to_overwrite_the_data_file(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("precious\n")
    assert main(["trace", "gen", "--out", str(data), "--data", str(data)]) == 2
    assert data.read_text() == "precious\n"
    assert "would overwrite the input" in capsys.readouterr().err


def test_cli_trace_over_a_data_file_moves_with_it(tmp_path, capsys):
    generator = SyntheticCriteo(SyntheticConfig.criteo(max_rows=300, seed=1))
    (tmp_path / "data").mkdir()
    write_criteo_tsv(tmp_path / "data" / "d.tsv", [generator.generate(50)])
    out = tmp_path / "traces" / "q.jsonl"
    assert main(["trace", "gen", "--out", str(out), "--queries", "20", "--sizes", "fixed:8", "--data",
                 str(tmp_path / "data" / "d.tsv"), "--quiet"]) == 0
    header, records = read_trace(out)
    assert header.data == {"kind": "file", "path": "../data/d.tsv", "samples": 50}
    records = list(records)
    assert records[6].first == 48 and records[7].first == 6        # wrapped at the file's end
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (tmp_path / "traces").rename(moved / "traces")
    (tmp_path / "data").rename(moved / "data")
    header, records = read_trace(moved / "traces" / "q.jsonl")
    query = TraceData(header, base=moved / "traces").query(list(records)[6])
    assert np.array_equal(query.labels, generator.generate(50).labels[np.r_[48:50, 0:6]])
    capsys.readouterr()
    assert main(["trace", "info", str(moved / "traces" / "q.jsonl")]) == 0
    assert "data file ../data/d.tsv (50 samples)" in capsys.readouterr().out


def _header_edit(line, **changes):
    header = json.loads(line)
    for key, value in changes.items():
        target, name = (header["data"], key[5:]) if key.startswith("data_") else (header, key)
        if value is None:
            del target[name]
        else:
            target[name] = value
    return json.dumps(header) + "\n"


@pytest.mark.parametrize("changes, message", [
    ({"data_seed": None}, "1: data.seed: missing"), ({"data_ctr": 5}, "1: data.ctr: must be in (0, 1)"),
    ({"data_kind": "file"}, "1: data.path: missing"), ({"min_size": 9, "max_size": 3}, "1: min_size: 9 is above"),
    ({"max_size": None}, "1: max_size: missing"),
])
def test_every_header_field_is_checked(tmp_path, changes, message):
    path, lines = _lines(tmp_path)
    path.write_text(_header_edit(lines[0], **changes) + "".join(lines[1:]))
    with pytest.raises(DataError) as info:
        read_trace(path)
    assert f"{path}:{message}" in str(info.value)


def test_a_corrupted_gzip_trace_is_named(tmp_path):
    path = tmp_path / "t.jsonl.gz"
    write_trace(path, *generate_trace(2000, sizes="fixed:8", arrivals="poisson:100", data=SYNTHETIC))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF      # a flipped byte in the middle of the compressed stream
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"{path}:\\d+: "):
        list(read_trace(path)[1])


def test_generation_refuses_what_reading_would_refuse(tmp_path):
    with pytest.raises(ValueError, match="has sizes outside \\[1, 1024\\]"):
        SizeDist.parse("table:2000,3000")
    with pytest.raises(ValueError, match="a mean gap of more than a day"):
        ArrivalProcess.parse("poisson:1e-12")
    with pytest.raises(ValueError, match="Queries of up to 30 candidates cannot be taken from a data file of 20"):
        generate_trace(5, sizes="fixed:30", arrivals="poisson:1", data={"kind": "file", "path": "d", "samples": 20})
    with pytest.raises(ValueError, match="data: ctr: must be in"):
        generate_trace(5, sizes="fixed:3", arrivals="poisson:1", data={**SYNTHETIC, "ctr": 2})
    header, records = generate_trace(5, sizes="fixed:3", arrivals="poisson:1", data=SYNTHETIC)
    with pytest.raises(ValueError, match="announces 5 queries, 4 were given"):
        write_trace(tmp_path / "t.jsonl", header, list(records)[:4])
    assert list(tmp_path.iterdir()) == []         # nothing published
