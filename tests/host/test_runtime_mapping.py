"""RecPipe's stage mapping (rpaccel.host.runtime.mapping): the lane maps it enumerates, and the choice among them
measured on the chip's timed model (every measured program's responses checked against the golden model)."""

import pytest

from rpaccel.config import preset
from rpaccel.host.driver.chip import ChipSetup, CompileError, Stage, compile_queries
from rpaccel.host.runtime.mapping import candidates, choose_mapping, describe_lanes, estimate_cycles, lane_maps

from host_fixtures import quantised, tiny_data, tiny_dot, trained_dot_pair

#: Tiny with a top-k and a filter unit for each of two lanes of a stage.
TINY2 = preset("tiny").with_settings(["topk_units=2", "filter_units=2"])


@pytest.fixture(scope="module")
def models():
    return trained_dot_pair()


def _placed(config, models, sizes=(40, 23, 31, 29)):
    setup = ChipSetup(config, models)
    queries = [setup.add_query({m: m.inputs(tiny_data(m.spec, n, start=5000 + n)) for m in models}) for n in sizes]
    return setup, queries


def test_lane_maps_partition_the_split_over_the_stages():
    assert lane_maps(4, 2, 2) == [((0,), (1,)), ((0,), (1, 2)), ((0, 1), (2,)), ((0, 1), (2, 3))]
    assert len(lane_maps(64, 3, 4)) == 4 ** 3 and lane_maps(2, 3) == []
    assert all(sum(map(len, lanes)) <= 16 for lanes in lane_maps(16, 2))
    # The default map on every split first, then the maps giving some stage two lanes or more.
    assert candidates(TINY2, 2, 2, sub_batches=(1,)) == [
        (1, None, 1), (2, None, 1), (4, None, 1), (4, ((0,), (1, 2)), 1), (4, ((0, 1), (2,)), 1),
        (4, ((0, 1), (2, 3)), 1)]
    assert describe_lanes(((0, 1), (2,))) == "0-1 / 2" and describe_lanes(None) == "default"


def test_the_estimate_counts_the_lanes_in_parallel(models):
    a, b = models
    setup, queries = _placed(TINY2, [a, b])
    one, two = (compile_queries(setup, [Stage(a, k=16), Stage(b, k=9)], queries,
                                _schedule(split=4, sub_batch=5, lanes=lanes))
                for lanes in (((0,), (1,)), ((0, 1), (2, 3))))
    assert estimate_cycles(two) < estimate_cycles(one)


def _schedule(**fields):
    from rpaccel.host.driver.chip import Schedule

    return Schedule("rpaccel", **fields)


def test_the_choice_for_throughput_is_never_worse_than_the_default(models):
    """Every candidate compiled (or counted refused), the best estimated and the default measured on the timed
    model (each run's responses checked bit for bit), the best measured chosen: on split 4 (the reference: the
    default map there, as the default split 2 is not tried), queries spread over lanes beat the default map on four
    queries back to back."""
    a, b = models
    setup, queries = _placed(TINY2, [a, b])
    stages = [Stage(a, k=16), Stage(b, k=9)]
    measured = []
    choice = choose_mapping(setup, stages, queries, splits=(4,), sub_batches=(1,), keep=2, progress=measured.append)
    assert choice.objective == "throughput" and choice.queries == 4
    assert choice.default["split"] == 4 and choice.default["lanes"] is None and choice.default["cycles"]
    assert len(measured) == sum(row["cycles"] is not None for row in choice.rows) == 3
    assert choice.best["cycles"] < choice.default["cycles"]
    assert choice.best["lanes"] is not None and max(map(len, choice.schedule.lanes)) > 1
    program = compile_queries(setup, stages, queries, choice.schedule)
    assert program.words().tobytes() == choice.program.words().tobytes()
    assert choice.refused == 0 and "| 4 | 0-1 / 2-3 |" in choice.table()


def test_refused_candidates_are_counted_and_skipped(models):
    """A streamed model on two lanes or more does not fit 64 weight words (two slots of a layer's n-tile for each
    lane): those lane maps are refused and counted, the one-lane maps measured."""
    big = trained_big()
    setup, queries = _placed(preset("tiny").with_settings(["weight_buffer_words=64", "topk_units=2"]), [big],
                             sizes=(17, 19))
    choice = choose_mapping(setup, [Stage(big, k=8)], queries, splits=(4,), sub_batches=(1,))
    refused = [row for row in choice.rows if row["status"].startswith("refused")]
    assert choice.refused == len(refused) == 1 and refused[0]["lanes"] == ((0, 1),)
    assert "cannot stream" in refused[0]["status"]
    assert choice.best is choice.default and choice.schedule.lanes == ((0,),)


def trained_big():
    return quantised(tiny_dot(name="tiny-big", bottom=(16, 16, 4), top=(16, 16, 1)))


def test_latency_runs_one_query_and_bad_arguments_are_refused(models):
    a, b = models
    setup, queries = _placed(TINY2, [a, b])
    stages = [Stage(a, k=16), Stage(b, k=9)]
    calls = []

    def measure(program):
        calls.append(len(program.queries))
        return 1000 + program.sub_batch
    choice = choose_mapping(setup, stages, queries, objective="latency", measure=measure, keep=1)
    assert choice.queries == 1 and set(calls) == {1}
    assert choice.best["cycles"] == min(row["cycles"] for row in choice.rows if row["cycles"] is not None)
    with pytest.raises(ValueError, match="^The objective must be one of"):
        choose_mapping(setup, stages, queries, objective="p95")
    with pytest.raises(ValueError, match="^keep must be a positive int, not 0$"):
        choose_mapping(setup, stages, queries, keep=0)
    with pytest.raises(CompileError):
        choose_mapping(setup, [Stage(a, k=999)], queries, splits=(1,))


def test_lane_maps_are_estimated_without_compiling_each(models, monkeypatch):
    """The estimate of a lane map from the default map's program is the estimate of the map compiled; the chooser
    compiles the default maps and the best estimated only (a split of 4 and four queries: five lane maps, one
    kept), and chooses as if it had compiled them all."""
    from rpaccel.host.runtime import mapping

    a, b = models
    setup, queries = _placed(TINY2, [a, b])
    stages = [Stage(a, k=16), Stage(b, k=9)]
    reference = compile_queries(setup, stages, queries, _schedule(split=4, sub_batch=5))
    for lanes in lane_maps(4, 2, 4):
        program = compile_queries(setup, stages, queries, _schedule(split=4, sub_batch=5, lanes=lanes))
        assert estimate_cycles(reference, lanes) == estimate_cycles(program), lanes
    compiled = []

    def counting(setup, stages, queries, schedule):
        compiled.append((len(queries), schedule.lanes))
        return compile_queries(setup, stages, queries, schedule)
    monkeypatch.setattr(mapping, "compile_queries", counting)
    choice = choose_mapping(setup, stages, queries, splits=(4,), sub_batches=(1,), keep=1,
                            measure=lambda program: mapping.estimate_cycles(program))
    estimated = [row for row in choice.rows if row["estimate"] is not None]
    assert len(choice.rows) == len(estimated) == 6
    # The most a lane holds (one query), the default map, the best estimated lane map: nothing else compiled.
    best = min(estimated, key=lambda row: (row["estimate"], row["lanes"] is not None))
    assert compiled == [(1, None), (4, None), (4, best["lanes"])] and best["lanes"] is not None
    assert choice.best is best and choice.schedule.lanes == best["lanes"]


def test_maps_the_compiler_does_not_interleave_are_estimated_serial(models):
    """:func:`interleaves` is the compiler's rule (no lane for two stages, no unit for two lanes, weights resident),
    and a map it does not interleave (three lanes of the final stage on two top-k units) is estimated as every stage
    of every query one after another: above the map that spreads the same queries over lanes with units of their
    own."""
    from rpaccel.host.driver.chip.program import _LaneMap
    from rpaccel.host.runtime.mapping import interleaves

    a, b = models
    setup, queries = _placed(TINY2, [a, b])
    g = setup.geometry
    maps = lane_maps(4, 2, 4)
    assert any(not interleaves(setup, lanes) for lanes in maps)
    for lanes in maps:
        assert interleaves(setup, lanes) == (setup.resident and _LaneMap(g, 4, 2, lanes, False).disjoint), lanes
    stages = [Stage(a, k=16), Stage(b, k=9)]
    program = compile_queries(setup, stages, queries, _schedule(split=4, sub_batch=5))
    spread, crowded = ((0, 1), (2, 3)), ((0,), (1, 2, 3))
    assert interleaves(setup, spread) and not interleaves(setup, crowded)
    assert estimate_cycles(program, crowded) > estimate_cycles(program, spread)
    assert estimate_cycles(program, crowded) == estimate_cycles(program, spread, interleave=False)


def test_a_refused_default_leaves_the_best_estimate_as_reference(models, monkeypatch):
    """Where the compiler refuses the default map (here every map without lanes, by a wrapped compiler), the
    candidate of the best estimate is the reference, measured; where it refuses every candidate, the error says
    so with the default's reason."""
    import rpaccel.host.runtime.mapping as mapping

    def refuse_default(setup, stages, queries, schedule):
        if schedule.lanes is None:
            raise CompileError("planted refusal of the default map")
        return compile_queries(setup, stages, queries, schedule)

    monkeypatch.setattr(mapping, "compile_queries", refuse_default)
    a, b = models
    setup, queries = _placed(TINY2, [a, b])
    stages = [Stage(a, k=16), Stage(b, k=9)]
    choice = choose_mapping(setup, stages, queries, splits=(4,), sub_batches=(1,), keep=1,
                            measure=lambda program: 1000)
    estimated = [row for row in choice.rows if row["estimate"] is not None]
    assert choice.default is min(estimated, key=lambda row: row["estimate"]) and choice.default["reference"]
    assert choice.default["lanes"] is not None and choice.default["cycles"] == 1000
    assert choice.refused == 1
    with pytest.raises(CompileError, match="^The compiler refuses every mapping of the pipeline; the default "
                                           "schedule: planted refusal of the default map$"):
        choose_mapping(setup, stages, queries, splits=(2,), sub_batches=(1,))
