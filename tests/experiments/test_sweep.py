"""Design-space sweeps (:mod:`rpaccel.experiments.sweep`): the specification's checks, the results file, the Pareto
front, and a small sweep on a local Dask cluster of two worker processes, interrupted and resumed."""

import csv

import pytest
from dask.distributed import LocalCluster

from rpaccel.experiments.sweep import (
    COLUMNS,
    SpecError,
    SweepFileError,
    area_figures,
    evaluate_point,
    pareto_front,
    parse_spec,
    prepare_context,
    read_results,
    run_sweep,
)

#: A sweep small enough for CI: RM-small on 32 candidates, two queries.
SMALL = {"preset": "small", "candidates": 32, "queries": 2, "train_samples": 400, "max_rows": 300}
PIPELINES = ["rm-small:32:8,rm-small:8:4", "rm-small:32:4"]


def spec_of(grid, **settings):
    return parse_spec({**SMALL, **settings, "grid": grid})


def test_a_grid_is_the_product_of_its_axes_and_grids_are_united():
    spec = spec_of([{"dyn_cache_ways": [0, 4], "mode": ["rpaccel", "baseline"], "pipeline": PIPELINES},
                    {"dyn_cache_ways": 4, "mode": "rpaccel", "pipeline": PIPELINES[0]}])
    # The second grid's point is one of the first's: the union holds it once.
    assert len(spec.points) == 8
    assert spec.models == ("rm-small",) and spec.ndcg_k == 4
    point = spec.points[0]
    assert point.label() == f"dyn_cache_ways=0 mode=rpaccel pipeline={PIPELINES[0]}"
    assert point.name == "small+dyn_cache_ways=0" and point.config().dyn_cache_ways == 0


def test_keys_name_the_parameters_not_the_specification():
    a = spec_of({"dyn_cache_ways": [4], "pipeline": PIPELINES[1]})
    b = spec_of({"pipeline": [PIPELINES[1]]})            # small's own dyn_cache_ways is 4
    c = spec_of({"pipeline": [PIPELINES[1]]}, seed=2)
    assert a.points[0].key == b.points[0].key != c.points[0].key
    assert len({p.key for p in spec_of({"split": ["auto", 1, 2], "pipeline": PIPELINES}).points}) == 6


@pytest.mark.parametrize("data, message", [
    ({"grid": {"array_rowz": [8], "pipeline": PIPELINES}}, "grid.array_rowz: unknown axis; did you mean array_rows"),
    ({"grid": {"array_rows": ["8"], "pipeline": PIPELINES}}, "grid.array_rows: '8' is not an integer"),
    ({"grid": {"array_rows": [8, 6], "pipeline": PIPELINES}},
     "grid.array_rows: 6 is refused by every configuration of the grid: array_rows must be a multiple of block"),
    ({"grid": {"split": [4], "pipeline": PIPELINES}},
     "grid.split: 4 is refused by every configuration of the grid: split 4 is not one of the configuration's"),
    ({"grid": {"mode": ["fast"], "pipeline": PIPELINES}}, "grid.mode: 'fast' is not a mode (rpaccel, baseline"),
    ({"grid": {"sub_batch": [0], "pipeline": PIPELINES}},
     "grid.sub_batch: 0 is neither a positive integer nor \"auto\""),
    ({"grid": {"dyn_cache_ways": [0, 0], "pipeline": PIPELINES}}, "grid.dyn_cache_ways: 0 is given twice"),
    ({"grid": {"pipeline": ["rm-tiny:32:4"]}}, "grid.pipeline: unknown model 'rm-tiny'"),
    ({"grid": {"pipeline": ["rmc1:32:4"]}}, "rmc1 does not take the RM models' Criteo inputs"),
    ({"grid": {"pipeline": ["rm-small:64:4"]}}, "stage 0 scores 64 items; the sweep's queries have candidates = 32"),
    ({"ndcg_k": 8, "grid": {"pipeline": PIPELINES}}, "the final stage keeps 4 items, fewer than ndcg_k = 8"),
    ({"grid": [{"pipeline": PIPELINES}, {"mode": ["baseline"]}]}, "grid[1]: no pipeline axis"),
    ({"candidate": 32, "grid": {"pipeline": PIPELINES}}, "unknown key 'candidate'; did you mean candidates"),
    ({"queries": 0, "grid": {"pipeline": PIPELINES}}, "queries: 0 is not a positive integer"),
    ({"preset": "huge", "grid": {"pipeline": PIPELINES}}, "preset: Unknown preset 'huge'"),
    ({"set": ["array_rows=6"], "grid": {"pipeline": PIPELINES}}, "set: small with array_rows=6: array_rows must"),
    ({}, "no grid"),
])
def test_a_bad_specification_is_refused_naming_the_axis_and_value(data, message):
    with pytest.raises(SpecError) as error:
        parse_spec({**SMALL, **data})
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_value_valid_in_some_combination_is_a_refused_row_not_an_error():
    spec = spec_of({"array_rows": [8, 12], "block": [4, 8], "pipeline": PIPELINES[1]}, set=["splits=1"])
    assert len(spec.points) == 4 and spec.refused == 1      # 12 rows of blocks of 8


def test_area_comes_only_from_a_synthesis_of_the_same_configuration():
    spec = spec_of({"dyn_cache_ways": [0, 2], "pipeline": PIPELINES})
    synth = [{"component": "accel", "preset": "small+dyn_cache_ways=2", "target": "ecp5-85f", "cells": {"luts": 123}},
             {"component": "mlp", "preset": "small+dyn_cache_ways=0", "cells": {"luts": 5}},      # a part only
             {"component": "accel", "preset": "small+dyn_cache_ways=0+array_rows=16", "cells": {"luts": 7}}]
    area = area_figures(spec, synth)
    assert area == {p.key: (123, "synth accel on ecp5-85f") for p in spec.points if p.label().startswith(
        "dyn_cache_ways=2")} and len(area) == 2


def test_pareto_front():
    latency = [5.0, 1.0, 3.0, 2.0, 3.0]
    quality = [0.9, 0.2, 0.6, 0.7, 0.5]
    assert pareto_front(latency, quality, minimise_x=True) == [1, 3, 0]
    assert pareto_front(latency, quality, minimise_x=False) == [0]
    assert pareto_front([1.0, 1.0], [0.5, 0.5], minimise_x=True) == [0]


def _write(path, lines):
    path.write_bytes("".join(lines).encode())


def test_results_file_drops_a_half_written_line_and_refuses_what_is_not_a_sweep(tmp_path):
    header = ",".join(COLUMNS) + "\n"
    row = ",".join(["0123456789abcdef", "refused", "why"] + [""] * (len(COLUMNS) - 3)) + "\n"
    path = tmp_path / "r.csv"
    _write(path, [header, row, row[:30]])
    rows, partial = read_results(path)
    assert [r["key"] for r in rows] == ["0123456789abcdef"] and partial == 30
    _write(path, [header[:40]])              # killed while writing the header
    assert read_results(path) == ([], 40)
    for lines, message in (([header, row, row[:30] + "\n"], "line 3 is not a sweep row"),
                           ([header, row.replace("refused", "maybe")], "line 2 is not a sweep row"),
                           (["a,b\n", row], "is not a sweep's results file of this version"),
                           (["a,b"], "is not a sweep's results file")):
        _write(path, lines)
        with pytest.raises(SweepFileError, match=message):
            read_results(path)


def test_a_point_the_compiler_refuses_is_a_row_with_the_reason():
    spec = spec_of({"sub_batch": [4096], "pipeline": PIPELINES[1]})
    context = prepare_context(spec)
    row = evaluate_point(spec.points[0], context)
    assert row["status"] == "refused" and "Sub-batch size 4096 is outside" in row["error"]
    assert row["cycles_per_query"] == "" and row["sub_batch"] == 4096


class _Interrupt(Exception):
    pass


def test_a_sweep_on_a_local_cluster_resumes_after_an_interruption(tmp_path):
    """Interrupted after two points on a local cluster of two processes, killed while writing the third; resumed on
    another cluster, only the two missing points run."""
    spec = spec_of({"dyn_cache_ways": [0, 4], "mode": ["rpaccel", "baseline"], "pipeline": PIPELINES[0]})
    out = tmp_path / "sweep.csv"
    seen = []

    def interrupt(line):
        seen.append(line)
        if sum(line.startswith("[") for line in seen) == 2:
            raise _Interrupt                    # as Ctrl-C would, after two points were written

    with pytest.raises(_Interrupt):
        run_sweep(spec, out=out, workers=2, progress=interrupt)
    rows, partial = read_results(out)
    assert len(rows) == 2 and partial == 0
    with open(out, "ab") as handle:             # and a kill while the third point's line was half written
        handle.write(out.read_bytes().splitlines(keepends=True)[1][:50])
    lines = []
    # Resumed on a cluster of its own (--scheduler ADDRESS).
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        report = run_sweep(spec, out=out, scheduler=cluster.scheduler_address, plot=tmp_path / "pareto.png",
                           progress=lines.append)
    assert report.passed, report.failures
    assert report.data["evaluated"] == 2 and report.data["done_before"] == 2 and report.data["dropped_bytes"] == 50
    assert any("dropped a half-written last line (50 bytes)" in line for line in lines)
    rows, partial = read_results(out)
    assert sorted(r["key"] for r in rows) == sorted(p.key for p in spec.points) and partial == 0
    for row in rows:
        assert row["status"] == "ok" and row["checked"] is True
        assert 0 <= row["ndcg"] <= 1 and row["p50_latency_us"] <= row["p95_latency_us"]
        assert row["qps"] == pytest.approx(row["clock_mhz"] * 1e6 / row["throughput_cycles_per_query"])
        assert row["recpipe_cycles"] > 0 and 0 < row["util_lane_max"] <= 1
    by_cache = {(r["mode"], r["dyn_cache_ways"]): r for r in rows}
    assert by_cache["rpaccel", 0]["line_hit_rate"] == 0 < by_cache["rpaccel", 4]["line_hit_rate"]
    # The same queries and models rank alike in both modes.
    assert by_cache["rpaccel", 4]["ndcg"] == by_cache["baseline", 4]["ndcg"]
    assert (tmp_path / "pareto.png").stat().st_size > 10_000
    # Everything is done: a third run evaluates nothing (and starts no cluster).
    again = run_sweep(spec, out=out)
    assert again.data["evaluated"] == 0 and len(again.rows) == 4
    with open(out) as handle:
        assert len(list(csv.DictReader(handle))) == 4
