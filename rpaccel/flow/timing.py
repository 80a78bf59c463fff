"""Static timing analysis of a routed design from nextpnr's SDF: every failing endpoint, not only the worst one.

nextpnr reports one critical path per clock and a slack histogram. Closing timing on a large design needs the
whole list: which registers miss the period, grouped by what they are, and the worst path of each group. nextpnr
writes the routed design's delays as SDF (``--sdf``; :func:`rpaccel.flow.synth.synthesize` always asks for it):
every cell's arcs (``IOPATH``), every routed connection (``INTERCONNECT``) and every register's setup time
(``SETUPHOLD``). This module reads that file and propagates arrival times from every launching register (a
flip-flop's, DSP's or block RAM's clock-to-output) through the combinational arcs to every checked input, using
the slow corner (the third value of each triple, as nextpnr does).

One clock domain is assumed (the designs built here have one): each arc out of a clock pin starts a path, each
setup check ends one. Paths from input pads (no launching register) are not timed, as in nextpnr's clock report.

Before place and route, :func:`estimate_netlist` builds the same graph from the synthesised ECP5 netlist (the
``top.json`` Yosys writes; :func:`rpaccel.flow.synth.synthesize` keeps it) with each cell's delay estimated and one
fixed delay per connection: a design's logic depth, path by path, in the minutes synthesis takes rather than the
hour a large design takes to place and route. Its figures rank paths; only the routed SDF gives Fmax.

Where a path's routing comes from is a question of placement: :func:`read_placement` summarises where each block
of a placed design lies (its cells' tiles, from the JSON nextpnr writes with ``--write``; ``rpaccel synth
--placement`` asks for it).
"""

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CLOCK_PINS", "ECP5_ESTIMATES", "BlockPlacement", "NetlistError", "PathGroup", "PlacementError", "SdfError",
           "TimingGraph", "TimingPath", "TimingReport", "analyse", "estimate_netlist", "name_pattern",
           "read_placement", "read_sdf"]

#: Cell pins whose arcs launch a path (clock-to-output), by the names nextpnr's ECP5 and iCE40 cells use.
CLOCK_PINS = frozenset({"CLK", "CLK0", "CLK1", "CLK2", "CLK3", "CLKA", "CLKB", "WCK", "CLKI", "RCLK", "WCLK"})

_NAME = r"((?:\\.|[^\s()\\])+)"
_TRIPLE = r"\((-?\d+(?:\.\d+)?):(-?\d+(?:\.\d+)?):(-?\d+(?:\.\d+)?)\)"
_INTERCONNECT = re.compile(rf"\(INTERCONNECT {_NAME} {_NAME} {_TRIPLE}")
_IOPATH = re.compile(rf"\(IOPATH (?:\((?:posedge|negedge) )?{_NAME}\)? {_NAME} {_TRIPLE}")
_SETUP = re.compile(rf"\(SETUP(?:HOLD)? \((?:posedge|negedge) {_NAME}\) \((?:posedge|negedge) {_NAME}\) "
                    rf"{_TRIPLE}")
_TIMESCALE = re.compile(r"\(TIMESCALE\s+(\d+)\s*(ps|ns)\s*\)")
_INSTANCE = re.compile(rf"\(INSTANCE\s*{_NAME}?\s*\)")
_KEYWORD = re.compile(r"\((INSTANCE|TIMESCALE|INTERCONNECT|IOPATH|SETUPHOLD|SETUP)\b")


class SdfError(ValueError):
    """An SDF file this module cannot read; the message names the file and line."""


class PlacementError(ValueError):
    """A placed-design JSON file this module cannot read; the message names the file."""


class NetlistError(ValueError):
    """A synthesised netlist this module cannot read; the message names the file and what is wrong."""


def _unescape(name):
    return re.sub(r"\\(.)", r"\1", name)


@dataclass
class TimingGraph:
    """The timing arcs of a routed design.

    Attributes
    ----------
    arcs : dict
        ``{sink: [(source, delay_ns, kind), ...]}`` with nodes named ``"cell/pin"`` and ``kind`` ``"cell"`` (an
        arc through a cell) or ``"net"`` (a routed connection).
    launch : dict
        ``{output: clock_to_out_ns}`` for the outputs of clocked cells.
    setup : dict
        ``{input: setup_ns}`` for the inputs a setup time is checked on.
    source : str
        Where the graph was read from.
    """

    arcs: dict
    launch: dict
    setup: dict
    source: str = "<sdf>"


def read_sdf(path):
    """Read nextpnr's SDF (``--sdf``) into a :class:`TimingGraph`.

    Raises
    ------
    SdfError
        If the file is missing, holds no cells, or has a delay or check this reader cannot parse (the message
        names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise SdfError(f"{path}: no such SDF file (nextpnr writes one with --sdf)")
    text = path.read_text(encoding="utf-8", errors="replace")
    arcs, launch, setup = defaultdict(list), {}, {}
    scale = 1e-3  # ps -> ns, nextpnr's TIMESCALE
    instance, cells = None, 0

    def fail(position, what):
        number = text.count("\n", 0, position) + 1
        line = text[text.rfind("\n", 0, position) + 1:].split("\n", 1)[0].strip()
        raise SdfError(f"{path}, line {number}: cannot read {what} {line!r}")

    for keyword in _KEYWORD.finditer(text):
        word, position = keyword.group(1), keyword.start()
        if word == "INSTANCE":
            found = _INSTANCE.match(text, position)
            if not found:
                fail(position, "the instance")
            instance = _unescape(found.group(1) or "")
            cells += 1
            continue
        if word == "TIMESCALE":
            found = _TIMESCALE.match(text, position)
            if not found:
                fail(position, "the timescale")
            scale = int(found.group(1)) * (1e-3 if found.group(2) == "ps" else 1.0)
            continue
        found = {"INTERCONNECT": _INTERCONNECT, "IOPATH": _IOPATH}.get(word, _SETUP).match(text, position)
        if not found:
            fail(position, "the delay" if word != "SETUPHOLD" and word != "SETUP" else "the check")
        a, b, worst = found.group(1), found.group(2), float(found.group(5)) * scale
        if word == "INTERCONNECT":
            arcs[_unescape(b)].append((_unescape(a), worst, "net"))
        elif instance is None:
            fail(position, "a cell delay outside any CELL's INSTANCE:")
        elif word in ("SETUP", "SETUPHOLD"):
            node = f"{instance}/{a}"
            setup[node] = max(setup.get(node, 0.0), worst)
        elif a in CLOCK_PINS:
            node = f"{instance}/{b}"
            launch[node] = max(launch.get(node, 0.0), worst)
        else:
            arcs[f"{instance}/{b}"].append((f"{instance}/{a}", worst, "cell"))
    if not cells:
        raise SdfError(f"{path}: no CELL entries (not an SDF file written by nextpnr?)")
    return TimingGraph(arcs=dict(arcs), launch=launch, setup=setup, source=str(path))


@dataclass(frozen=True)
class TimingPath:
    """The worst path into one endpoint.

    Attributes
    ----------
    steps : tuple
        ``(node, arrival_ns, kind)`` from the launching output to the endpoint; ``kind`` is ``"launch"``,
        ``"cell"`` or ``"net"``.
    setup_ns, slack_ns : float
    """

    steps: tuple
    setup_ns: float
    slack_ns: float

    @property
    def start(self):
        return self.steps[0][0]

    @property
    def end(self):
        return self.steps[-1][0]

    @property
    def delay_ns(self):
        """Arrival at the endpoint plus its setup time: the shortest clock period this path allows."""
        return self.steps[-1][1] + self.setup_ns

    def _sum(self, kind):
        return sum(b[1] - a[1] for a, b in zip(self.steps, self.steps[1:]) if b[2] == kind)

    @property
    def launch_ns(self):
        return self.steps[0][1]

    @property
    def logic_ns(self):
        return self._sum("cell")

    @property
    def routing_ns(self):
        return self._sum("net")

    @property
    def logic_levels(self):
        """Cells the path passes through (each carry-chain cell counts)."""
        return sum(1 for step in self.steps if step[2] == "cell")


@dataclass(frozen=True)
class PathGroup:
    """Failing endpoints whose worst paths start and end at registers of the same name pattern."""

    start: str
    end: str
    endpoints: int
    worst: TimingPath


@dataclass(frozen=True)
class TimingReport:
    """Setup slack of every endpoint of a design against a clock period.

    Attributes
    ----------
    period_ns : float
    endpoints : int
        Timed endpoints (inputs with a setup check reached from a launching register).
    failing : int
        Endpoints with negative slack.
    worst : TimingPath or None
    groups : tuple of PathGroup
        Failing endpoints grouped by :func:`name_pattern` of their worst path's start and end, worst first.
    slacks : tuple of float
        Every endpoint's slack, ascending.
    """

    period_ns: float
    endpoints: int
    failing: int
    worst: object
    groups: tuple
    slacks: tuple

    @property
    def fmax_mhz(self):
        return None if self.worst is None else 1000.0 / self.worst.delay_ns

    def histogram(self, width_ns=1.0):
        """``[(lower_ns, count)]`` of the failing endpoints' slacks in bins of ``width_ns``."""
        bins = defaultdict(int)
        for slack in self.slacks:
            if slack < 0:
                bins[int(slack // width_ns) * width_ns] += 1
        return sorted(bins.items())


def name_pattern(node):
    """What a register is, without its bit, index or packing suffixes: ``dut.lane1.total3[7]_TRELLIS_FF_Q/DI``
    -> ``dut.lane#.total#[]``."""
    cell = node.rsplit("/", 1)[0]
    cell = re.sub(r"(_TRELLIS_FF_Q|_TRELLIS_COMB|_CCU2C|\$CCU2_COMB|_DFF|_SB_).*", "", cell)
    cell = re.sub(r"\[\d+\]", "[]", cell)
    return re.sub(r"\d+", "#", cell)


def _arrivals(graph):
    """Latest arrival at every node reached from a launching output, and the predecessor on that path."""
    arrival, previous = {}, {}
    for node, delay in graph.launch.items():
        arrival[node], previous[node] = delay, None
    arcs = graph.arcs
    state = {}  # 1: on the stack, 2: done

    def visit(root):
        stack = [root]
        while stack:
            node = stack[-1]
            if state.get(node) == 2 or node in graph.launch:
                state[node] = 2
                stack.pop()
                continue
            if state.get(node) != 1:
                state[node] = 1
                pending = [src for src, _, _ in arcs.get(node, ()) if state.get(src) is None
                           and src not in graph.launch]
                if pending:
                    stack.extend(pending)
                    continue
            best, via = None, None
            for src, delay, kind in arcs.get(node, ()):
                if src in arrival and (best is None or arrival[src] + delay > best):
                    best, via = arrival[src] + delay, (src, kind)
            if best is not None:
                arrival[node], previous[node] = best, via
            state[node] = 2
            stack.pop()

    for node in graph.setup:
        visit(node)
    return arrival, previous


def analyse(graph, period_ns):
    """The setup slack of every endpoint of ``graph`` against ``period_ns`` (a :class:`TimingReport`).

    A combinational loop is cut where the search first meets it (nextpnr's ``--ignore-loops`` does the same).
    """
    if not period_ns > 0:
        raise ValueError(f"Clock period must be a positive number of ns, not {period_ns!r}")
    arrival, previous = _arrivals(graph)

    def path(end):
        steps, node = [], end
        while previous[node] is not None:
            source, kind = previous[node]
            steps.append((node, arrival[node], kind))  # the kind of the arc into the node
            node = source
        steps.append((node, arrival[node], "launch"))
        return tuple(reversed(steps))

    timed = sorted((period_ns - setup - arrival[node], node) for node, setup in graph.setup.items()
                   if node in arrival)
    groups = {}
    for slack, node in timed:
        if slack >= 0:
            break
        steps = path(node)
        key = (name_pattern(steps[0][0]), name_pattern(node))
        if key in groups:
            groups[key][0] += 1
        else:
            groups[key] = [1, TimingPath(steps=steps, setup_ns=graph.setup[node], slack_ns=slack)]
    ordered = tuple(PathGroup(start=s, end=e, endpoints=n, worst=p)
                    for (s, e), (n, p) in sorted(groups.items(), key=lambda kv: kv[1][1].slack_ns))
    worst = None
    if timed:
        node = timed[0][1]
        worst = TimingPath(steps=path(node), setup_ns=graph.setup[node], slack_ns=timed[0][0])
    return TimingReport(period_ns=float(period_ns), endpoints=len(timed),
                        failing=sum(1 for slack, _ in timed if slack < 0), worst=worst, groups=ordered,
                        slacks=tuple(slack for slack, _ in timed))


@dataclass(frozen=True)
class BlockPlacement:
    """Where the cells of one block of a placed design lie, in device tiles (nextpnr's X and Y).

    Attributes
    ----------
    block : str
        The block: the first ``depth`` parts of its cells' hierarchical names (``dut.lane0``).
    cells : int
        Placed cells (LUT, flip-flop, carry, LUT RAM, DSP and block RAM cells each count).
    centre : tuple of float
        Mean X and Y.
    x_span, y_span : tuple of int
        10th and 90th percentiles of X and of Y: how far the block is spread, ignoring a few outliers.
    """

    block: str
    cells: int
    centre: tuple
    x_span: tuple
    y_span: tuple


_BEL = re.compile(r"X(\d+)/Y(\d+)/")
# Packing adds the mapped cell's kind to a name (`..._TRELLIS_FF_Q`, `..._LUT4_Z`); a name part ends before it.
_PACKED = re.compile(r"_(?:LUT4|TRELLIS|CCU2C|DP16KD|MULT18X18D|ALU54B|PFUMX|L6MUX21|DPRAM).*")


def _block_of(name, depth):
    parts = _PACKED.sub("", name).split(".")
    return ".".join(parts[:depth] if len(parts) > depth else parts[:-1] or parts)


def _percentile(values, fraction):
    ordered = sorted(values)
    return ordered[int(fraction * (len(ordered) - 1))]


def read_placement(path, depth=2):
    """Where each block of a placed design lies, largest block first.

    Parameters
    ----------
    path : str or Path
        A design JSON written by nextpnr (``--write``) after placement: each cell's ``NEXTPNR_BEL`` attribute
        names its tile.
    depth : int
        How many parts of the hierarchical cell names make a block (2: ``dut.lane0``; 3: ``dut.lane0.acc_fifo``).

    Returns
    -------
    list of BlockPlacement

    Raises
    ------
    PlacementError
        The file is missing, not JSON, or has no placed cells.
    """
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"Placement depth must be a positive integer, not {depth!r}")
    path = Path(path)
    if not path.is_file():
        raise PlacementError(f"{path}: no placed design (nextpnr writes one with --write; rpaccel synth "
                             f"--placement asks for it)")
    try:
        design = json.loads(path.read_text())
        modules = design["modules"]
    except (ValueError, KeyError, TypeError) as error:
        raise PlacementError(f"{path}: not a design JSON written by nextpnr ({error})") from None
    tiles = defaultdict(list)
    for module in modules.values():
        for name, cell in module.get("cells", {}).items():
            bel = _BEL.match(cell.get("attributes", {}).get("NEXTPNR_BEL", ""))
            if bel:
                tiles[_block_of(name, depth)].append((int(bel[1]), int(bel[2])))
    if not tiles:
        raise PlacementError(f"{path}: no placed cells (no NEXTPNR_BEL attributes: written before placement?)")
    blocks = []
    for block, cells in tiles.items():
        xs, ys = [x for x, _ in cells], [y for _, y in cells]
        blocks.append(BlockPlacement(block=block, cells=len(cells), centre=(sum(xs) / len(xs), sum(ys) / len(ys)),
                                     x_span=(_percentile(xs, 0.1), _percentile(xs, 0.9)),
                                     y_span=(_percentile(ys, 0.1), _percentile(ys, 0.9))))
    return sorted(blocks, key=lambda b: (-b.cells, b.block))


# Estimates from the synthesised netlist ---------------------------------------------------------------------------

#: Estimated delays (ns) of the ECP5 cells synth_ecp5 maps to, near the slow corner of nextpnr's database for the
#: -6/-8 grades: per cell type ``{"arcs": {(input, output): ns}, "launch": {output: ns}, "setup": {input: ns}}``,
#: pins named without their bit (each bit of a bus pin is a node of its own, ``A3``). The multiplier's (``None``)
#: depend on which of its registers its parameters enable (:func:`_multiplier`).
ECP5_ESTIMATES = {
    "LUT4": {"arcs": {(pin, "Z"): 0.45 for pin in "ABCD"}},
    "PFUMX": {"arcs": {("ALUT", "Z"): 0.25, ("BLUT", "Z"): 0.25, ("C0", "Z"): 0.35}},
    "L6MUX21": {"arcs": {("D0", "Z"): 0.25, ("D1", "Z"): 0.25, ("SD", "Z"): 0.35}},
    "CCU2C": {"arcs": {**{(f"{p}0", "S0"): 0.45 for p in "ABCD"}, **{(f"{p}1", "S1"): 0.45 for p in "ABCD"},
                       **{(f"{p}0", "S1"): 0.5 for p in "ABCD"},
                       **{(f"{p}{i}", "COUT"): 0.3 for p in "ABCD" for i in "01"},
                       ("CIN", "S0"): 0.25, ("CIN", "S1"): 0.3, ("CIN", "COUT"): 0.06}},
    "TRELLIS_FF": {"launch": {"Q": 0.4}, "setup": {"DI": 0.1, "M": 0.1, "CE": 0.2, "LSR": 0.2}},
    "TRELLIS_DPR16X4": {"arcs": {("RAD", "DO"): 0.6}, "launch": {"DO": 0.6},
                        "setup": {"DI": 0.1, "WAD": 0.1, "WRE": 0.2}},
    "DP16KD": {"launch": {"DOA": 2.5, "DOB": 2.5},
               "setup": dict.fromkeys(("ADA", "ADB", "DIA", "DIB", "CEA", "CEB", "OCEA", "OCEB", "WEA", "WEB", "CSA",
                                       "CSB", "RSTA", "RSTB"), 0.2)},
    "MULT18X18D": None,
    "TRELLIS_IO": {},
}


def _pins(table):
    """The pin names a table of :data:`ECP5_ESTIMATES` knows."""
    return ({pin for arc in table.get("arcs", {}) for pin in arc} | set(table.get("launch", {}))
            | set(table.get("setup", {})))


def _pin(port, known):
    """The pin of ``port`` in a table knowing ``known`` pins: the port itself (``A0`` of a carry cell), or the bus
    its bit belongs to (``DOA3`` of a block RAM -> ``DOA``)."""
    return port if port in known else port.rstrip("0123456789") or port


def _multiplier(parameters):
    """The estimates of a MULT18X18D: its inputs and output registered or not, as its parameters say."""
    registered_in = parameters.get("REG_INPUTA_CLK", "NONE") != "NONE"
    registered_out = parameters.get("REG_OUTPUT_CLK", "NONE") != "NONE"
    table = {"arcs": {}, "launch": {}, "setup": {}}
    if registered_in:
        table["setup"].update(A=0.2, B=0.2)
    if registered_out:
        table["launch"]["P"] = 0.6
        table["setup"].update({} if registered_in else {"A": 4.0, "B": 4.0})
    elif registered_in:
        table["launch"]["P"] = 4.0
    else:
        table["arcs"].update({("A", "P"): 4.0, ("B", "P"): 4.0})
    return table


#: Connections that stay inside a slice or a carry chain: ``(cell type, input pin): ns``.
_LOCAL_WIRES = {("CCU2C", "CIN"): 0.0, ("PFUMX", "ALUT"): 0.1, ("PFUMX", "BLUT"): 0.1, ("L6MUX21", "D0"): 0.1,
                ("L6MUX21", "D1"): 0.1}


def estimate_netlist(path, *, wire_ns=0.7):
    """A :class:`TimingGraph` of the synthesised ECP5 netlist ``path`` (Yosys JSON of ``synth_ecp5``, flattened)
    with :data:`ECP5_ESTIMATES` for the cells and ``wire_ns`` for every connection.

    Raises
    ------
    NetlistError
        If the file is missing or not a flattened Yosys netlist, or holds a cell type without estimates.
    """
    path = Path(path)
    if not path.is_file():
        raise NetlistError(f"{path}: no such netlist (rpaccel synth writes top.json in its build folder)")
    try:
        modules = json.loads(path.read_text())["modules"]
    except (ValueError, KeyError, TypeError):
        raise NetlistError(f"{path}: not a Yosys JSON netlist (no 'modules')") from None
    tops = [m for m in modules.values() if m.get("attributes", {}).get("top")] or list(modules.values())
    if len(tops) != 1:
        raise NetlistError(f"{path}: {len(tops)} top modules; a flattened netlist has one")
    cells = tops[0].get("cells", {})
    drivers, sinks = {}, defaultdict(list)     # bit -> output node; bit -> [(input node, its wire delay)]
    arcs, launch, setup = defaultdict(list), {}, {}
    for name, cell in cells.items():
        kind = cell.get("type", "")
        if kind.startswith("$scopeinfo"):
            continue
        if kind not in ECP5_ESTIMATES:
            raise NetlistError(f"{path}: cell {name} is a {kind!r}, which has no delay estimates "
                               "(an ECP5 netlist of synth_ecp5 is expected)")
        table = ECP5_ESTIMATES[kind] or _multiplier(cell.get("parameters", {}))
        known = _pins(table)
        directions = cell.get("port_directions", {})
        nodes = defaultdict(list)   # pin -> the nodes of its bits (over every port of a bus)
        for port, bits in cell.get("connections", {}).items():
            for index, bit in enumerate(bits):
                node = f"{name}/{port}{index if len(bits) > 1 else ''}"
                nodes[_pin(port, known)].append(node)
                if not isinstance(bit, int):
                    continue    # a constant
                if directions.get(port) == "output":
                    drivers[bit] = node
                else:
                    sinks[bit].append((node, _LOCAL_WIRES.get((kind, _pin(port, known)), wire_ns)))
        for pin, pin_nodes in nodes.items():
            for node in pin_nodes:
                if pin in table.get("launch", {}):
                    launch[node] = table["launch"][pin]
                if pin in table.get("setup", {}):
                    setup[node] = table["setup"][pin]
        for (into, out), delay in table.get("arcs", {}).items():
            for target in nodes.get(out, ()):
                arcs[target].extend((source, delay, "cell") for source in nodes.get(into, ()))
    for bit, targets in sinks.items():
        if bit in drivers:
            for target, delay in targets:
                arcs[target].append((drivers[bit], delay, "net"))
    if not launch:
        raise NetlistError(f"{path}: no registers (not a synthesised design?)")
    return TimingGraph(arcs=dict(arcs), launch=launch, setup=setup, source=str(path))
