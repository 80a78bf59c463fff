"""RecPipe's stage mapping (issue 21, scheduler (a)): the split, the lanes of each stage and the sub-batch size.

For a pipeline of stages over queries placed on a :class:`~rpaccel.host.driver.chip.ChipSetup`,
:func:`choose_mapping` enumerates :class:`~rpaccel.host.driver.chip.Schedule` s in RPAccel mode (:func:`candidates`):
each split of the configuration; on it the compiler's default map (stage ``s`` on lane ``s % split``) and the lane
maps that give stage ``s`` ``c_s`` lanes of its own (consecutive lanes, stage after stage; each ``c_s`` from 1 to the
queries in flight, as more lanes than queries leave lanes idle, with ``sum(c_s)`` at most the split); and a few
sub-batch sizes (the most the lanes hold, and fractions of it). The default map of each split and sub-batch size
is compiled (a :class:`~rpaccel.host.driver.chip.CompileError`, e.g. streamed weights without slots for every lane,
is counted and skipped), and every lane map is scored from that program by :func:`estimate_cycles`, a resource bound
computed in microseconds (the stages' work does not depend on the lanes, only where it runs), without compiling it;
maps that place the queries alike (the same lanes up to their names) are scored once. The best few by the
estimate are then compiled (a refused one counted and replaced by the next) and measured with the compiler's
default schedule (or the default map on the first split tried), by default on the chip's timed model
(:class:`rpaccel.sim.model.chip.ModelDevice`), and the best measured one is chosen: never worse than the default by
that measure. The objective ``"latency"`` runs one query alone (the first), ``"throughput"`` every query back to
back (cycles per query).

The chooser lives in the runtime, not in the driver: the driver compiles any schedule it is given, and choosing one
needs a timed chip (a device), which the runtime's backends own.
"""

import time
from dataclasses import dataclass, field
from itertools import product

from ..driver.chip import ChipSetup, CompileError, Schedule, Stage, compile_queries

__all__ = ["MappingChoice", "candidates", "choose_mapping", "choose_replay_mapping", "describe_lanes",
           "estimate_cycles", "interleaves", "lane_maps", "model_measure"]

OBJECTIVES = ("latency", "throughput")


def lane_maps(split, stages, most=None):
    """The lane maps of ``stages`` stages on ``split`` lanes that give each stage lanes of its own: stage ``s``
    ``c_s`` consecutive lanes after the earlier stages' (``1 <= c_s <= most``, ``sum(c_s) <= split``).

    Returns
    -------
    list of tuple of tuple of int
        In order of the counts (the one-lane-per-stage map first); empty if ``split < stages``.
    """
    most = split if most is None else max(1, min(most, split))
    maps = []
    for counts in product(range(1, most + 1), repeat=stages):
        if sum(counts) <= split:
            first = [sum(counts[:s]) for s in range(stages)]
            maps.append(tuple(tuple(range(first[s], first[s] + counts[s])) for s in range(stages)))
    return maps


def candidates(config, stages, queries, *, splits=None, sub_batches=(1, 2)):
    """The schedules :func:`choose_mapping` tries.

    Parameters
    ----------
    config : rpaccel.config.AccelConfig
    stages, queries : int
        The pipeline's stages, and the queries in flight (each stage gets at most that many lanes).
    splits : sequence of int, optional
        Default: every split of ``config``.
    sub_batches : sequence of int
        Divisors of the most a lane holds (1: the most; 2: half of it, ...).

    Returns
    -------
    list of (int, tuple or None, int)
        ``(split, lane map or None for the compiler's default, divisor)``: the default map first on each split,
        then the lane maps that give some stage more than one lane (on a split narrower than the pipeline, the
        default map alone).
    """
    out = []
    for split in (config.splits if splits is None else splits):
        maps = [None] + [lanes for lanes in lane_maps(split, stages, queries)
                         if any(len(served) > 1 for served in lanes)]
        out += [(split, lanes, divisor) for lanes in maps for divisor in sub_batches]
    return out


def estimate_cycles(program, lanes=None, *, interleave=True):
    """A cheap estimate of ``program``'s cycles (a lower bound of a kind): the busiest of the units every lane
    shares (the fetcher's lookups at one row a cycle, the interaction unit's words) and each lane's array (a layer
    of ``items`` on a ``rows x cols`` sub-array: ``ktiles x ntiles x (items + rows + cols)`` cycles), or one
    query's stages one after another if longer; where the compiler does not interleave the stages (a lane or a
    top-k or filter unit serving two, weights streamed, or ``interleave`` false: :func:`interleaves`), every
    stage of every query one after another.

    ``lanes``, a lane map of the program's split (default: the program's own), estimates the program as that map
    would compile it: the sub-batches and the work of each stage do not depend on the lanes, only where the
    arrays' work goes. ``interleave`` is the schedule's :attr:`~rpaccel.host.driver.chip.Schedule.interleave`."""
    lanes = program.lanes if lanes is None else lanes
    return _estimate(_estimate_parts(program), lanes,
                     interleave and program.mode == "rpaccel" and interleaves(program.setup, lanes))


def interleaves(setup, lanes):
    """Whether the compiler lets the stages of a lane map interleave on ``setup`` (RPAccel mode, the schedule's
    ``interleave`` set): its models' weights resident, no lane serving two stages and no top-k or filter unit two
    lanes (the final stage's lanes take top-k units in turn, the other stages' lanes filter units in turn)."""
    g = setup.geometry
    served = [lane for stage in lanes for lane in stage]
    return (setup.resident and len(served) == len(set(served)) and len(lanes[-1]) <= g.units
            and sum(map(len, lanes[:-1])) <= g.filters)


def _estimate_parts(program):
    """What :func:`estimate_cycles` needs of ``program`` whatever its lane map: ``(array, bound, serial)``,
    ``array[q, s]`` the array cycles of stage ``s`` of query ``q``, ``bound`` the largest of the shared units' and
    one query's stages one after another, ``serial`` every stage of every query one after another."""
    setup, g = program.setup, program.setup.geometry
    shape = g.engine.splits[program.split]
    array, fetcher, interaction, path, serial = {}, 0, 0, 0, 0
    for q in range(len(program.queries)):
        chain = 0
        for s, stage in enumerate(program.stages):
            number = setup.number(stage.model)
            spec = stage.model.spec
            bottom, top = setup.mlps(number)
            cycles = 0
            for items in program.sub_batches(q, s):
                for layer in (*bottom, *top):
                    k, n = layer.shape
                    cycles += -(-k // shape.rows) * -(-n // shape.cols) * (items + shape.rows + shape.cols)
            items = program.items[q][s]
            lookups = items * spec.num_tables * spec.pooling
            words = items * (spec.num_tables + 1) * -(-spec.emb_dim // g.rows)
            array[q, s] = cycles
            fetcher += lookups
            interaction += words
            chain += max(cycles, lookups, words)
        path = max(path, chain)
        serial += chain
    return array, max(path, fetcher, interaction), serial


def _estimate(parts, lanes, interleaved):
    """:func:`estimate_cycles` from :func:`_estimate_parts`, a lane map and whether its stages interleave."""
    array, bound, serial = parts
    if not interleaved:
        return max(bound, serial)
    busy = {}
    for (q, s), cycles in array.items():
        lane = lanes[s][q % len(lanes[s])]
        busy[lane] = busy.get(lane, 0) + cycles
    return max(bound, *busy.values())


def model_measure(config):
    """A measure for :func:`choose_mapping`: a program's cycles on the chip's timed model (from its first command
    to its last response; :func:`rpaccel.experiments.accel.measure_program`), every response checked against the
    golden model (a mismatch raises ``RuntimeError``)."""
    from ...experiments.accel import measure_program
    from ...sim.model.chip import ModelDevice

    def measure(program):
        run, figures = measure_program(program, ModelDevice(config))
        if run.mismatches():
            raise RuntimeError(f"The timed model's responses differ from the golden model's on split "
                               f"{program.split}, lanes {program.lanes}, sub-batch {program.sub_batch}")
        return figures["cycles"]
    return measure


@dataclass
class MappingChoice:
    """What :func:`choose_mapping` chose and what it tried.

    Attributes
    ----------
    schedule : rpaccel.host.driver.chip.Schedule
        The best measured schedule (its split, lane map and sub-batch size explicit).
    program : rpaccel.host.driver.chip.Program
        The chosen schedule compiled over the objective's queries.
    objective : str
    queries : int
        The queries the objective runs (1 for latency).
    rows : list of dict
        One per candidate: ``split``, ``lanes`` (``None``: the default map), ``divisor``, ``sub_batch``, ``estimate``
        (cycles), ``cycles`` (measured, or ``None``), ``status`` (``"measured"``, ``"estimated"`` (compiled or
        not), ``"same as"`` another candidate, whose index is then ``same_as``, or ``"refused: ..."``) and
        ``reference`` (whether it is :attr:`default`; it wins ties).
    refused : int
        Candidates the compiler refused, of those compiled (the default maps and the best estimated).
    default : dict
        The row of the reference, measured: the compiler's default schedule (``Schedule("rpaccel")``), or where its
        split is not tried, the default map and sub-batch size on the first split tried; where the compiler
        refuses that, the candidate of the best estimate.
    seconds : dict
        Host seconds spent compiling and estimating, and measuring.
    """

    schedule: Schedule
    program: object
    objective: str
    queries: int
    rows: list
    refused: int
    default: dict
    seconds: dict = field(default_factory=dict)

    @property
    def best(self):
        """The chosen candidate's row."""
        return min((row for row in self.rows if row["cycles"] is not None), key=_measured_key)

    def table(self, clock_mhz=None):
        """The candidates measured and the best few estimated, as Markdown (per query: cycles, or microseconds at
        ``clock_mhz``)."""
        unit = "us" if clock_mhz else "cycles"
        scale = 1 / clock_mhz if clock_mhz else 1
        shown = sorted((row for row in self.rows if row["estimate"] is not None),
                       key=lambda row: (row["cycles"] is None, _measured_key(row) if row["cycles"] is not None
                                        else row["estimate"]))
        lines = [f"| split | lanes per stage | sub-batch | estimate per query ({unit}) | measured per query ({unit}) |",
                 "| ---: | --- | ---: | ---: | ---: |"]
        per = self.queries
        for row in shown[:12]:
            measured = "-" if row["cycles"] is None else f"{row['cycles'] * scale / per:,.1f}"
            lines.append(f"| {row['split']} | {describe_lanes(row['lanes'])} | {row['sub_batch']} | "
                         f"{row['estimate'] * scale / per:,.1f} | {measured} |")
        return "\n".join(lines) + "\n"


def describe_lanes(lanes):
    """A lane map in words: ``default`` or the lanes of each stage (``0-3 / 4-7``)."""
    if lanes is None:
        return "default"
    return " / ".join(f"{served[0]}-{served[-1]}" if len(served) > 1 and served == tuple(
        range(served[0], served[-1] + 1)) else ",".join(map(str, served)) for served in lanes)


def _measured_key(row):
    # Ties: the reference, then the default map, then fewer lanes, then the larger sub-batch.
    return (row["cycles"], not row["reference"], row["lanes"] is not None, sum(map(len, row["lanes"] or ())),
            -row["sub_batch"])


def _placement(split, sub_batch, lanes, queries):
    """How a schedule places ``queries`` queries: per stage each query's lane, lanes renamed in order of first use,
    with its split and sub-batch size (two candidates with the same placement compile to the same program up to
    lane names)."""
    names = {}
    placed = tuple(tuple(names.setdefault(served[q % len(served)], len(names)) for q in range(queries))
                   for served in lanes)
    return split, sub_batch, placed


def choose_mapping(setup, stages, queries, *, objective="throughput", measure=None, splits=None,
                   sub_batches=(1, 2), keep=3, interleave=True, progress=None):
    """Choose the split, lane map and sub-batch size of ``stages`` over ``queries`` on ``setup`` (RPAccel mode).

    Parameters
    ----------
    setup : rpaccel.host.driver.chip.ChipSetup
    stages : sequence of rpaccel.host.driver.chip.Stage
    queries : sequence of rpaccel.host.driver.chip.Query
        Placed on ``setup``; ``"latency"`` runs the first alone, ``"throughput"`` all back to back.
    objective : str
        ``"latency"`` or ``"throughput"``.
    measure : callable, optional
        ``measure(program) -> cycles`` (default :func:`model_measure` of the setup's configuration).
    splits : sequence of int, optional
        The splits tried (default: the configuration's).
    sub_batches : sequence of int
        Divisors of the most a lane holds tried as sub-batch sizes (1: the most, 2: half of it, ...).
    keep : int
        How many of the best estimated candidates are measured (beside the default schedule).
    interleave : bool
        :attr:`~rpaccel.host.driver.chip.Schedule.interleave` of every candidate (``False`` for a replay, which
        keeps each query's commands together), so the candidates are measured as they will run.
    progress : callable, optional
        Called with a line of text per measured candidate.

    Returns
    -------
    MappingChoice

    Raises
    ------
    ValueError
        On an unknown objective, no queries, or ``keep`` below 1.
    CompileError
        If the compiler refuses every candidate (the default schedule's reason).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"The objective must be one of {OBJECTIVES}, not {objective!r}")
    queries, stages = list(queries), list(stages)
    if not queries:
        raise ValueError("Choosing a mapping needs at least one query")
    if not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be a positive int, not {keep!r}")
    if objective == "latency":
        queries = queries[:1]
    config = setup.geometry.config
    measure = measure or model_measure(config)
    say = progress or (lambda line: None)
    started = time.perf_counter()
    rows, programs, seen, refused = [], {}, {}, 0
    references = {}     # per (split, sub-batch asked): the default map's program and its estimate's parts, or None

    def schedule(split, lanes, sub_batch):
        return Schedule("rpaccel", split=split, sub_batch=sub_batch, lanes=lanes, interleave=interleave)

    def compile_index(index):
        """Compile row ``index``'s candidate; False (the row marked refused) if the compiler refuses it."""
        nonlocal refused
        row = rows[index]
        try:
            program = compile_queries(setup, stages, queries, schedule(row["split"], row["lanes"], row["asked"]))
        except CompileError as error:
            refused += 1
            row.update(status=f"refused: {error}", estimate=None)
            return False
        programs[index] = program
        return True

    def add_row(split, lanes, divisor, sub_batch):
        """Add a candidate's row: estimated (compiled if it is a default map, or if its split's default map is
        refused), or the row of the candidate it places the queries as (``same_as``), or None if refused."""
        row = {"split": split, "lanes": lanes, "divisor": divisor, "sub_batch": sub_batch, "asked": sub_batch,
               "estimate": None, "cycles": None, "reference": False}
        index = len(rows)
        rows.append(row)
        group = (split, sub_batch)
        if lanes is not None and references.get(group) is not None:
            # Estimated from the default map's program; compiled only if it is among the best estimated.
            program, parts = references[group]
            row["sub_batch"] = program.sub_batch
            placed = lanes
        else:
            if not compile_index(index):
                if lanes is None:
                    references[group] = None
                return None
            program = programs[index]
            row["sub_batch"], placed, parts = program.sub_batch, program.lanes, _estimate_parts(program)
            if lanes is None:
                references[group] = (program, parts)
        key = _placement(split, row["sub_batch"], placed, len(queries))
        if key in seen:
            programs.pop(index, None)
            row.update(status=f"same as candidate {seen[key]}", same_as=seen[key])
            return rows[seen[key]]
        seen[key] = index
        row.update(status="estimated", estimate=_estimate(parts, placed, interleave and interleaves(setup, placed)))
        return row

    most = {}       # per split, the most a lane holds (the default sub-batch size)
    for split, lanes, divisor in candidates(config, len(stages), len(queries), splits=splits,
                                            sub_batches=sub_batches):
        if split not in most:
            try:
                most[split] = compile_queries(setup, stages, queries[:1], Schedule("rpaccel", split=split)).sub_batch
            except CompileError:
                most[split] = None
        size = None if most[split] is None else max(1, most[split] // divisor)
        add_row(split, lanes, divisor, size)
    # The reference is always measured, so the choice is never worse by the measure: the compiler's default
    # schedule, or the default map and sub-batch size on the first split tried if the default split is not; if the
    # compiler refuses it, the candidate of the best estimate.
    tried = list(config.splits if splits is None else splits)
    split = Schedule.default_split(config, len(stages))
    split = split if split in tried else tried[0]
    default = next((row for row in rows if row["lanes"] is None and row["divisor"] == 1 and row["split"] == split),
                   None)
    if default is None:
        default = add_row(split, None, 1, None)
    elif "same_as" in default:
        default = rows[default["same_as"]]
    elif default["status"].startswith("refused"):
        default = None
    # The best few by the estimate, compiled now (a refused one makes way for the next); where the compiler refuses
    # the default, the first of them is the reference.
    ranked = sorted((index for index, row in enumerate(rows) if row["status"] == "estimated"),
                    key=lambda index: rows[index]["estimate"])
    best = []
    for index in ranked:
        if len(best) >= keep and default is not None:
            break
        if index in programs or compile_index(index):
            best.append(index)
            if default is None:
                default = rows[index]
    if default is None:
        reason = next(row["status"] for row in reversed(rows) if row["lanes"] is None and row["split"] == split)
        raise CompileError(f"The compiler refuses every mapping of the pipeline; the default schedule: "
                           f"{reason.removeprefix('refused: ')}")
    default["reference"] = True
    compiled = time.perf_counter()
    chosen = list(dict.fromkeys([rows.index(default), *best[:keep]]))
    for index in chosen:
        row = rows[index]
        row["cycles"] = measure(programs[index])
        row["status"] = "measured"
        say(f"split {row['split']}, lanes {describe_lanes(row['lanes'])}, sub-batch {row['sub_batch']}: "
            f"{row['cycles']:,} cycles ({row['cycles'] / len(queries):,.0f} per query; estimate "
            f"{row['estimate'] / len(queries):,.0f})")
    for row in rows:
        del row["asked"]
    best = min((rows[index] for index in chosen), key=_measured_key)
    program = programs[rows.index(best)]
    return MappingChoice(schedule=schedule(program.split, program.lanes, program.sub_batch), program=program,
                         objective=objective, queries=len(queries), rows=rows, refused=refused, default=default,
                         seconds={"compile": compiled - started, "measure": time.perf_counter() - compiled})


def choose_replay_mapping(config, models, stages, queries, *, objective="throughput", sample=4, measure=None,
                          progress=None):
    """:func:`choose_mapping` for a replay on the chip (:func:`~rpaccel.host.runtime.chip.replay_on_chip`): on a
    chip setup of its own (the replay's memory image is left as it is), over the first ``sample`` queries.

    Parameters
    ----------
    config : rpaccel.config.AccelConfig
    models : dict
        Model name -> :class:`~rpaccel.host.quant.QuantModel` for every stage's model.
    stages : tuple of rpaccel.host.runtime.pipeline.StageSpec
    queries : list of rpaccel.host.data.Records
        Each query's candidates (the first ``sample`` are used).
    objective, measure, progress
        As :func:`choose_mapping`'s.

    Returns
    -------
    MappingChoice
    """
    if not isinstance(sample, int) or sample < 1:
        raise ValueError(f"sample must be a positive int, not {sample!r}")
    order = list(dict.fromkeys(stage.model for stage in stages))
    setup = ChipSetup(config, [models[name] for name in order])
    placed = [setup.add_query({models[name]: models[name].inputs(records) for name in order})
              for records in queries[:sample]]
    # A replay sends each query's commands together (interleave=False): the candidates are measured so.
    return choose_mapping(setup, [Stage(models[stage.model], k=stage.k) for stage in stages], placed,
                          objective=objective, measure=measure, interleave=False, progress=progress)
