"""The accelerator backend: a trace's queries on the chip, each sent at its arrival cycle.

:func:`replay_on_chip` places every query's candidates in the chip's memory, compiles the pipeline in RPAccel mode
with each query's commands kept together (:class:`~rpaccel.host.driver.chip.Schedule` ``interleave=False``), and
runs one timed trace on a :class:`~rpaccel.host.driver.device.Device` (the RTL on Verilator today; the fast model
and a board behind the same interface later): the memory image and the setup first, then each query's commands
as one burst held until its arrival cycle. The chip's command port takes a burst only as fast as the controller
dispatches, so a query that arrives while earlier ones are in flight queues inside the chip, as it would on a
board. A query finishes with its last response (the final RANK); its latency is that cycle minus its arrival.

Time zero of the trace is the cycle after the setup: a first run of the setup alone measures when it ends (the
run is deterministic, so the full run ends it on the same cycle, which is checked), and the queries' arrivals are
counted from the cycle after. The device remembers it for setups of the same shape (the memory image's length and
the other commands), whose data alone differ; a remembered end the full run does not meet is measured again.
Arrivals in nanoseconds become cycles at the configuration's clock (``clock_mhz``), rounded down.

A run holds as many queries as the chip's memory holds candidates (all of them are placed before time zero: a
MEM_WRITE is a barrier, so writing a query's candidates later would drain the chip). Response tags do not bound
it: query ``q`` is tagged ``q % 254``. A query's only responses are its final stage's RANK block (``last`` on its
final response), one top-k unit's, which serves one query at a time (``docs/chip.md``, Score sequencer). Where
every query's final stage runs on the same lane and unit (the compiler's default map), the blocks leave in query
order, each contiguous, and the host matches them to the queries in that order; with a lane map giving the final
stage several lanes (:func:`choose_replay_mapping`), they take queries in turn, so blocks of queries with
different tags may leave out of order and interleave, and the host matches each tag's blocks to its queries (``t``,
``t + 254``, ...) in order (the earlier of two queries with a tag, sent 254 queries before, is taken to finish
first). The host checks every block's tag, ``last`` and values against the golden model's, so a broken rule is
reported, never a ranking given to the wrong query.

:func:`replay_windows` replays a stream of queries longer than the chip's memory holds, in bounded memory: window
by window, each a replay of its own from reset, with ``overlap`` queries on either side replayed at their own
arrivals and left out: the previous window's last ones rebuild the queue the window's first queries would have found
and warm the dynamic cache; the next window's first ones compete with its last queries for the chip's shared units
(the fetcher, the embedding unit, memory), as they would. Where the chip's backlog at a window's edge is longer than
the overlap, or the cache's state matters beyond it, latencies near the edges differ from one replay's (measured by
``rpaccel bench replay --scale``).
"""

import collections
import concurrent.futures
import multiprocessing
import signal
import weakref
from dataclasses import dataclass

import numpy as np

from ...rtl.accel.controller import counter_ids
from ...rtl.accel.isa import ResponseKind
from ...threads import one_thread_children
from ..driver.chip import (
    ChipEncoder,
    ChipSetup,
    CompileError,
    Schedule,
    Stage,
    compile_queries,
    decode_responses,
    expected_responses,
)
from ..driver.device import Device, TimedTrace
from .pipeline import PipelineError, stage_items

__all__ = ["ChipReplay", "ReplayComparison", "ReplayWindow", "compare_replays", "replay_on_chip", "replay_windows"]

#: Per device, the cycle after each setup it ran, by the setup's shape (its memory image's length and its other
#: commands): a replay's windows differ only in their image's data, so each needs no run of its setup alone.
_SETUP_ENDS = weakref.WeakKeyDictionary()

#: Tags of the setup's and the end's SYNC and COUNTERS; query ``q`` takes tag ``q % QUERY_TAGS`` (0 to 253).
SETUP_TAG, END_TAG = 255, 254
QUERY_TAGS = END_TAG


@dataclass
class ChipReplay:
    """What a replay on the chip measured.

    Attributes
    ----------
    arrivals, finishes : numpy.ndarray
        Per query, its arrival and the cycle its last response left the chip, counted from time zero (the cycle
        after the setup).
    latencies_ns : numpy.ndarray
        ``(finishes - arrivals)`` in nanoseconds at the clock.
    rankings : list
        Per query, the chip's ranking ``[(score, index), ...]`` best first (indices into the query's candidates).
    mismatches : dict
        ``{query: message}`` of queries whose responses differ from the golden model's (empty when all agree).
    counters : dict
        The chip's counters (by name) from time zero to the end of the last query (cleared after the setup; read
        by a SYNC and COUNTERS sent after the last query).
    end_cycle : int
        The cycle the chip was idle again after the last query (the end SYNC's DONE), from time zero.
    split : int
        The array's split the program ran on.
    lanes : tuple of tuple of int
        The program's lane map (per stage its lanes).
    geometry : rpaccel.rtl.accel.isa.ChipGeometry
    setup_cycles, total_cycles : int
        Cycles of the setup and of the whole run.
    wall_seconds : float
    clock_mhz : float
    """

    arrivals: np.ndarray
    finishes: np.ndarray
    latencies_ns: np.ndarray
    rankings: list
    mismatches: dict
    counters: dict
    end_cycle: int
    split: int
    lanes: tuple
    geometry: object
    setup_cycles: int
    total_cycles: int
    wall_seconds: float
    clock_mhz: float


def _query_records(program, setup_count):
    """The program's command records per query (in order, each query's together) after the setup's, each query's
    tagged ``q % QUERY_TAGS``."""
    records = program.steps[0].records[setup_count:]
    out = [[] for _ in program.queries]
    query = -1
    for record in records:
        if query < 0 or record["tag"] != program.tags[query]:
            query += 1
            if program.tags[query] != record["tag"]:
                raise AssertionError("the compiler interleaved queries")
        out[query].append({**record, "tag": query % QUERY_TAGS})
    return out


def _shape(arg):
    """The nested field names of a command's argument: commands of one opcode and shape pack as one batch."""
    return tuple((name, _shape(value)) for name, value in arg.items()) if isinstance(arg, dict) else None


def _encode(encoder, records):
    """Words of command ``records`` in order, packed one batch per opcode and shape: the encoder packs runs of
    one kind, and a query's commands alternate kinds (thousands of runs of one or two commands)."""
    rows = {}
    for row, record in enumerate(records):
        rows.setdefault((record["op"], _shape(record["arg"])), []).append(row)
    words = np.zeros((len(records), encoder.encode(records[:1]).shape[1]), dtype=np.uint64)
    for group in rows.values():
        words[group] = encoder.encode([records[row] for row in group])
    return words


def _match(responses, rows, cycles, rankings, by_tag=False):
    """Each query's responses: ``rows`` of ``responses`` (the queries' own, in the order they left), the queries'
    blocks in order, each up to its ``last`` response (``by_tag``: per tag, its queries' blocks in order). Returns
    ``(finishes, got, mismatches)``: the cycle of each block's last response (the run's last for a query without
    one), each block's ranking and ``{query: message}`` for blocks that are not the golden model's RANK block of the
    query (``rankings``: the expected ``[(score, index), ...]``; key ``len(rankings)`` for responses beyond the
    last query's)."""
    tag, kind, code, last, score, index = (getattr(responses, name)[rows] for name in ("tag", "kind", "code", "last",
                                                                                        "score", "index"))
    cycles = cycles[rows]
    finishes, got, mismatches = [], [], {}
    groups = ({value: np.flatnonzero(tag == value) for value in range(QUERY_TAGS)} if by_tag else
              {0: np.arange(len(rows))})
    starts = dict.fromkeys(groups, 0)     # per group, its rows not yet matched from this position
    closings = {group: np.flatnonzero(last[mine]) for group, mine in groups.items()}   # per group, its blocks' ends
    blocks = dict.fromkeys(groups, 0)     # per group, its blocks matched so far
    for number, want in enumerate(rankings):
        group = number % QUERY_TAGS if by_tag else 0
        mine, start, closing = groups[group], starts[group], closings[group]
        if blocks[group] < len(closing):
            stop = int(closing[blocks[group]]) + 1
            blocks[group] += 1
        else:
            stop = start
        block = mine[start:stop]
        starts[group] = stop
        finishes.append(int(cycles[block][-1]) if len(block) else int(cycles[-1]) if len(cycles) else 0)
        ranking = list(zip(score[block].tolist(), index[block].tolist()))
        got.append(ranking)
        tags, kinds = set(tag[block].tolist()), set(kind[block].tolist())
        if not ranking:
            mismatches[number] = f"query {number}: no responses, {len(want)} expected"
        elif (tags != {number % QUERY_TAGS} or kinds != {ResponseKind.RANK.value} or code[block].any()
              or ranking != want):
            first = next((i for i, (a, b) in enumerate(zip(ranking, want)) if a != b), min(len(ranking), len(want)))
            mismatches[number] = (f"query {number}: {len(ranking)} responses (tags {sorted(tags)}, kinds "
                                  f"{sorted(ResponseKind(value).name for value in kinds)}), {len(want)} RANK of tag "
                                  f"{number % QUERY_TAGS} expected; " + (f"first difference at {first}"
                                                                         if ranking != want else "the same ranking"))
    left = sum(len(mine) - starts[group] for group, mine in groups.items())
    if left:
        mismatches[len(rankings)] = f"{left} responses after the last query's"
    return np.asarray(finishes, dtype=np.int64), got, mismatches


def replay_on_chip(device, config, models, stages, queries, arrivals_ns, *, sub_batch=None, split=None, lanes=None,
                   max_cycles=None):
    """Run ``queries`` through ``stages`` on the chip ``device``, each at its arrival.

    Parameters
    ----------
    device : rpaccel.host.driver.device.Device
        The chip of ``config`` (e.g. :func:`rpaccel.sim.chip.chip_device`, the RTL, or the timed model
        :class:`rpaccel.sim.model.chip.ModelDevice`).
    config : rpaccel.config.AccelConfig
    models : dict
        Model name -> :class:`~rpaccel.host.quant.QuantModel` for every stage's model.
    stages : tuple of StageSpec
    queries : list of rpaccel.host.data.Records
        Each query's candidates.
    arrivals_ns : sequence of int
        Each query's arrival (non-decreasing) in nanoseconds from time zero.
    sub_batch : int, optional
        The compiler's sub-batch size (default the most the lanes hold).
    split, lanes : optional
        The compiler's split and lane map (:class:`~rpaccel.host.driver.chip.Schedule`; default the largest split
        with a lane per stage, stage ``s`` on lane ``s`` alone; :func:`choose_replay_mapping` chooses them).
    max_cycles : int, optional
        Simulation budget (default: 20 million cycles a query and stage beyond the last arrival).

    Returns
    -------
    ChipReplay

    Raises
    ------
    rpaccel.host.runtime.pipeline.PipelineError
        Before anything runs, if a query does not fit the pipeline or the chip cannot run the pipeline (the
        compiler's reason: k above K_MAX, a model that does not fit, memory too small for the queries'
        candidates).
    """
    if not queries:
        raise PipelineError("No queries to replay")
    arrivals_ns = np.asarray(arrivals_ns, dtype=np.int64)
    if arrivals_ns.shape != (len(queries),) or (np.diff(arrivals_ns) < 0).any() or (arrivals_ns < 0).any():
        raise PipelineError("Arrivals must be one non-negative, non-decreasing time per query")
    for number, records in enumerate(queries):
        try:
            stage_items(stages, len(records))
        except PipelineError as error:
            raise PipelineError(f"Query {number}: {error}") from None
    order = list(dict.fromkeys(stage.model for stage in stages))
    try:
        setup = ChipSetup(config, [models[name] for name in order])
        placed = [setup.add_query({models[name]: models[name].inputs(records) for name in order})
                  for records in queries]
        program = compile_queries(setup, [Stage(models[stage.model], k=stage.k) for stage in stages], placed,
                                  Schedule("rpaccel", split=split, sub_batch=sub_batch, interleave=False,
                                           lanes=lanes))
    except (CompileError, ValueError) as error:
        raise PipelineError(f"The chip ({config.name}) cannot run the pipeline: {error}") from None
    geometry = setup.geometry
    encoder = ChipEncoder(geometry)
    expected = expected_responses(program)
    setup_count = len(setup.setup_records(program.split))
    image = setup.load_words(encoder)
    commands = np.concatenate([encoder.encode(program.steps[0].records[:setup_count]),
                               encoder.sync(tag=SETUP_TAG), encoder.counters(clear=True, tag=SETUP_TAG)])
    setup_words = np.concatenate([image, commands])
    per_query = _query_records(program, setup_count)
    encoded = _encode(encoder, [record for records in per_query for record in records])
    query_words = np.split(encoded, np.cumsum([len(r) for r in per_query])[:-1])
    end_words = np.concatenate([encoder.sync(tag=END_TAG), encoder.counters(tag=END_TAG)])
    bracket = 1 + len(counter_ids(geometry))        # a SYNC's DONE and the COUNTER responses

    arrivals = (arrivals_ns * config.clock_mhz // 1000).astype(np.int64)
    # Time zero: the cycle after the setup, from a run of the setup alone, or remembered from an earlier run of a
    # setup of the same shape on this device (a replay's windows differ only in their memory image's data); the
    # full run is checked to end its setup there, and a remembered zero that it does not is measured again.
    ends = _SETUP_ENDS.setdefault(device, {})
    shape = (len(image), commands.tobytes())
    remembered = shape in ends
    for _ in range(2):
        if shape not in ends:
            first = device.run(TimedTrace().send("cmd", setup_words).expect("rsp", bracket),
                               max_cycles=max(1_000_000, 64 * len(setup_words)))
            ends[shape] = int(first.outputs["rsp"].cycles[-1]) + 1
        zero = ends[shape]
        trace = TimedTrace().send("cmd", setup_words)
        for words, arrival in zip(query_words, arrivals):
            trace.send("cmd", words, at=zero + int(arrival))
        trace.send("cmd", end_words)
        trace.expect("rsp", 2 * bracket + len(expected.responses))
        budget = max_cycles or zero + int(arrivals[-1]) + 20_000_000 * len(queries) * len(stages)
        result = device.run(trace, max_cycles=budget)
        out = result.outputs["rsp"]
        responses, cycles = decode_responses(geometry, out.words), np.asarray(out.cycles) - zero
        if responses.tag[bracket - 1] == SETUP_TAG and int(cycles[bracket - 1]) == -1:
            break
        if not remembered:
            raise RuntimeError(f"The setup ended at cycle {int(cycles[bracket - 1]) + zero}, not {zero - 1} as when "
                               "run alone")
        del ends[shape]
        remembered = False
    done = np.flatnonzero((responses.tag == END_TAG) & (responses.kind == ResponseKind.DONE.value))
    ours = np.flatnonzero((responses.tag != SETUP_TAG) & (responses.tag != END_TAG))
    # One lane and unit for the final stage: the blocks leave in query order (any other order is reported).
    finishes, rankings, mismatches = _match(responses, ours, cycles, expected.rankings,
                                            by_tag=len(program.lanes[-1]) > 1)
    latencies = (finishes - arrivals) * 1000 / config.clock_mhz
    return ChipReplay(arrivals=arrivals, finishes=finishes, latencies_ns=latencies, rankings=rankings,
                      mismatches=mismatches, counters=responses.counters(END_TAG), end_cycle=int(cycles[done[0]]),
                      split=program.split, lanes=program.lanes, geometry=geometry,
                      setup_cycles=zero, total_cycles=result.cycles,
                      wall_seconds=result.wall_seconds, clock_mhz=config.clock_mhz)


@dataclass
class ReplayComparison:
    """Two replays of the same queries at the same arrivals (e.g. the RTL's and the timed model's), query by query.

    Attributes
    ----------
    names : tuple of str
        The two replays' names (``reference``, ``other``).
    arrivals : numpy.ndarray
        Each query's arrival cycle (the same in both).
    reference, other : numpy.ndarray
        Each query's latency in cycles (finish minus arrival) in each replay.
    same_ranking : numpy.ndarray
        Per query, whether the two rankings are equal (scores and indices, in order).
    """

    names: tuple
    arrivals: np.ndarray
    reference: np.ndarray
    other: np.ndarray
    same_ranking: np.ndarray

    @property
    def difference(self):
        """Per query, ``other / reference - 1`` of the latency in cycles."""
        return self.other / np.maximum(self.reference, 1) - 1

    def table(self):
        """The comparison as Markdown: a row per query, then the mean and the largest absolute difference."""
        first, second = self.names
        lines = [f"| query | arrival cycle | {first} cycles | {second} cycles | difference | same ranking |",
                 "| ---: | ---: | ---: | ---: | ---: | --- |"]
        for number, (arrival, a, b, d, same) in enumerate(zip(self.arrivals.tolist(), self.reference.tolist(),
                                                              self.other.tolist(), self.difference.tolist(),
                                                              self.same_ranking.tolist())):
            lines.append(f"| {number} | {arrival:,} | {a:,} | {b:,} | {d:+.1%} | {'yes' if same else 'NO'} |")
        size = np.abs(self.difference)
        lines += ["", f"{second} against {first}: latency in cycles {np.mean(self.difference):+.1%} on average "
                  f"(mean absolute {np.mean(size):.1%}, largest {np.max(size):.1%} at query "
                  f"{int(np.argmax(size))}); rankings equal in {int(self.same_ranking.sum())} of "
                  f"{len(self.same_ranking)} queries."]
        return "\n".join(lines) + "\n"


def compare_replays(reference, other, names=("rtl", "model")):
    """Query by query, the latencies in cycles and the rankings of two :class:`ChipReplay` s of the same queries at
    the same arrivals.

    Returns
    -------
    ReplayComparison

    Raises
    ------
    ValueError
        If the replays do not have the same queries' arrivals.
    """
    if not np.array_equal(reference.arrivals, other.arrivals):
        raise ValueError(f"The replays differ in their arrivals ({len(reference.arrivals)} and "
                         f"{len(other.arrivals)} queries): not the same trace")
    return ReplayComparison(names=tuple(names), arrivals=reference.arrivals,
                            reference=reference.finishes - reference.arrivals, other=other.finishes - other.arrivals,
                            same_ranking=np.array([a == b for a, b in zip(reference.rankings, other.rankings)]))


@dataclass
class ReplayWindow:
    """One window of :func:`replay_windows`: its own queries (the overlap's left out).

    Attributes
    ----------
    first : int
        The number of the window's first query in the stream.
    arrivals_ns, finishes_ns : numpy.ndarray
        Per query, its arrival (as given) and its finish: the arrival plus the latency the window's replay measured.
    rankings : list
        Per query, the chip's ranking ``[(score, index), ...]``.
    mismatches : dict
        ``{query number in the stream: message}`` of the window's run, the overlap's queries included.
    replay : ChipReplay
        The window's replay, with the overlaps on either side.
    overlap : int
        Queries of the previous window replayed first.
    """

    first: int
    arrivals_ns: np.ndarray
    finishes_ns: np.ndarray
    rankings: list
    mismatches: dict
    replay: ChipReplay
    overlap: int


def replay_windows(device, config, models, stages, queries, *, window, overlap=0, workers=1, **schedule):
    """Replay a stream of queries window by window, in bounded memory (module documentation).

    Parameters
    ----------
    device : rpaccel.host.driver.device.Device or callable
        The chip, or a function of no argument that makes one; with ``workers`` above 1, such a function (it must
        pickle: a module-level function or a ``functools.partial`` of one), called once in each worker process.
    config, models, stages
        As :func:`replay_on_chip`'s.
    queries : iterable of (rpaccel.host.data.Records, int)
        Each query's candidates and its arrival in nanoseconds (non-decreasing), read as the windows need them.
    window : int
        Queries per window.
    overlap : int
        Queries replayed with each window on either side and left out (``0 <= overlap``): the previous window's
        last ones before it (the queue and the cache it finds) and the next window's first ones after it (the
        commands competing with its last queries for the chip's shared units).
    workers : int
        Processes replaying windows at once (spawned, one BLAS thread each; the windows are independent, each a
        run from reset). At most ``2 * workers`` windows are read ahead.
    **schedule
        :func:`replay_on_chip`'s ``sub_batch``, ``split``, ``lanes``, ``max_cycles``.

    Yields
    ------
    ReplayWindow
        In the stream's order.

    Raises
    ------
    ValueError
        On a window or ``workers`` below 1, a negative overlap, several workers without a device function, or
        arrivals that go back in time.
    rpaccel.host.runtime.pipeline.PipelineError
        As :func:`replay_on_chip` (a query the pipeline cannot take, a pipeline the chip cannot run).
    """
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"The window must be a positive number of queries, not {window!r}")
    if not isinstance(overlap, int) or isinstance(overlap, bool) or overlap < 0:
        raise ValueError(f"The overlap must be a non-negative number of queries, not {overlap!r}")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"The workers must be a positive number of processes, not {workers!r}")
    if workers > 1 and isinstance(device, Device):
        raise ValueError("Several workers need a function that makes a device in each, not a device")
    tasks = _windows(queries, window, overlap)
    if workers == 1:
        for items, first, skip, own in tasks:
            device = device if isinstance(device, Device) else device()
            yield _run_window(device, config, models, stages, items, first, skip, own, schedule)
        return
    context = multiprocessing.get_context("spawn")
    with one_thread_children(), concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_window_worker_init,
            initargs=(device, config, models, stages, schedule)) as pool:
        ahead = collections.deque()
        for task in tasks:
            ahead.append(pool.submit(_window_worker, *task))
            if len(ahead) >= 2 * workers:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def _windows(queries, window, overlap):
    """``(items, first, skip, own)`` per window of the stream: the queries it replays (``skip`` of the previous
    window's first, ``overlap`` of the next one's last), its first query's number and its own queries' count."""
    stream = iter(queries)
    held, base, first = [], 0, 0      # the queries read and still needed; the stream number of held[0]; the window's

    def read(count):
        while len(held) < count:
            item = next(stream, None)
            if item is None:
                return
            candidates, arrival = item[0], int(item[1])
            if held and arrival < held[-1][1]:
                raise ValueError(f"Query {base + len(held)} arrives at {arrival} ns, before the query ahead of it "
                                 f"({held[-1][1]} ns)")
            held.append((candidates, arrival))

    while True:
        read(first + window + overlap - base)
        own = min(window, base + len(held) - first)
        if own <= 0:
            return
        skip = first - base
        yield held[:skip + own + overlap], first, skip, own
        first += own
        drop = max(first - overlap - base, 0)
        del held[:drop]
        base += drop


#: A window worker's chip and what every window replays through it (:func:`_window_worker_init`).
_worker = {}


def _window_worker_init(make_device, config, models, stages, schedule):
    # Ctrl-C is the parent's to handle: a worker interrupted in multiprocessing's loop would print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from ...threads import limit_blas_threads

    limit_blas_threads()
    _worker.update(device=make_device(), config=config, models=models, stages=stages, schedule=schedule)


def _window_worker(items, first, skip, own):
    w = _worker
    return _run_window(w["device"], w["config"], w["models"], w["stages"], items, first, skip, own, w["schedule"])


def _run_window(device, config, models, stages, items, first, skip, own, schedule):
    start = items[0][1]
    arrivals = np.array([arrival for _, arrival in items], dtype=np.int64)
    try:
        run = replay_on_chip(device, config, models, stages, [candidates for candidates, _ in items],
                             arrivals - start, **schedule)
    except PipelineError as error:
        raise PipelineError(f"Window of queries {first} to {first + own - 1}: {error}") from None
    mine = slice(skip, skip + own)
    mismatches = {first - skip + number: message for number, message in run.mismatches.items()}
    return ReplayWindow(first=first, arrivals_ns=arrivals[mine],
                        finishes_ns=arrivals[mine] + np.rint(run.latencies_ns[mine]).astype(np.int64),
                        rankings=run.rankings[mine], mismatches=mismatches, replay=run, overlap=skip)
