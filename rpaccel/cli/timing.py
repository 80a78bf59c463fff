"""``rpaccel timing``: every failing endpoint of a routed build (or, ``--netlist``, estimated from a synthesised one),
grouped, with the worst path of each group."""

from pathlib import Path

from .common import CLIError, CommandFailed, print_json


def register(subparsers):
    p = subparsers.add_parser(
        "timing", help="static timing of a routed build: every failing endpoint, grouped by register name",
        description="Read the SDF that nextpnr wrote for a build of `rpaccel synth` (or any nextpnr run with "
                    "--sdf), propagate arrival times from every register to every setup check, and list the "
                    "endpoints that miss the clock period, grouped by the name patterns of their worst path's "
                    "start and end (bits and indices removed), worst group first. nextpnr itself reports one path.")
    p.add_argument("build", help="build folder (holding top.sdf, or top.json with --netlist) or the file itself")
    p.add_argument("--period", type=float, metavar="NS",
                   help="clock period in ns (default: the build's constraint, from its report, else 8 ns)")
    p.add_argument("--groups", type=int, default=20, metavar="N", help="groups to list (default 20)")
    p.add_argument("--show", type=int, default=1, metavar="K",
                   help="print the worst path of the first K groups step by step (default 1)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--netlist", action="store_true",
                   help="before place and route: estimate from the synthesised netlist (top.json) with each "
                        "cell's estimated delay and --wire ns per connection; ranks paths by logic depth (only "
                        "the routed SDF gives Fmax)")
    p.add_argument("--wire", type=float, default=0.7, metavar="NS",
                   help="with --netlist: estimated delay of a connection between slices (default 0.7 ns)")
    p.add_argument("--placement", action="store_true",
                   help="instead, where each block lies on the device (from placed.json, which rpaccel synth "
                        "--placement writes): cells, centre, and the 10th-90th percentile span of X and Y")
    p.add_argument("--depth", type=int, default=2, metavar="D",
                   help="with --placement: name parts that make a block (2: dut.lane0, 3: dut.lane0.acc_fifo)")
    p.set_defaults(func=run)


def _source_and_period(build, period, netlist=False):
    import json

    path = Path(build)
    sdf = path / ("top.json" if netlist else "top.sdf") if path.is_dir() else path
    if not sdf.is_file():
        raise CLIError(f"{sdf}: no synthesised netlist (rpaccel synth writes top.json in its build folder)"
                       if netlist else f"{sdf}: no SDF file (rpaccel synth writes top.sdf in its build folder; "
                       "nextpnr writes one with --sdf)")
    if period is None:
        report = sdf.with_name("top.report.json")
        period = 8.0
        if report.is_file():
            constraints = [v.get("constraint") for v in json.loads(report.read_text()).get("fmax", {}).values()]
            constraints = [c for c in constraints if c]
            if constraints:
                period = 1000.0 / min(constraints)
    if not period > 0:
        raise CLIError(f"--period must be a positive number of ns, not {period}")
    return sdf, period


def path_lines(path, indent="    "):
    """A path step by step: arrival, increment, kind, node."""
    lines, last = [], 0.0
    for node, arrival, kind in path.steps:
        lines.append(f"{indent}{arrival:7.3f}  +{arrival - last:6.3f}  {kind:<6}  {node}")
        last = arrival
    lines.append(f"{indent}{path.delay_ns:7.3f}  +{path.setup_ns:6.3f}  setup")
    return lines


def summary(report, groups=20, show=1):
    lines = [f"period {report.period_ns:g} ns: {report.failing} of {report.endpoints} endpoints fail"
             + ("" if report.worst is None else
                f"; worst slack {report.worst.slack_ns:.3f} ns (Fmax {report.fmax_mhz:.2f} MHz)")]
    if report.failing:
        lines.append("failing endpoints by slack: " + ", ".join(
            f"[{lower:g}, {lower + 1:g}) ns: {count}" for lower, count in report.histogram()))
        lines.append(f"{'worst':>8}  {'count':>6}  {'levels':>6}  {'routing':>7}  start -> end")
        for group in report.groups[:groups]:
            p = group.worst
            lines.append(f"{p.slack_ns:8.3f}  {group.endpoints:6d}  {p.logic_levels:6d}  {p.routing_ns:7.3f}  "
                         f"{group.start} -> {group.end}")
        if len(report.groups) > groups:
            lines.append(f"... {len(report.groups) - groups} more groups")
        for k, group in enumerate(report.groups[:show]):
            lines.append(f"group {k + 1}: {group.start} -> {group.end}")
            lines.extend(path_lines(group.worst))
    return "\n".join(lines)


def as_json(report, groups=20):
    def path_json(p):
        return {"slack_ns": round(p.slack_ns, 3), "delay_ns": round(p.delay_ns, 3),
                "clock_to_out_ns": round(p.launch_ns, 3), "logic_ns": round(p.logic_ns, 3),
                "routing_ns": round(p.routing_ns, 3), "logic_levels": p.logic_levels,
                "steps": [{"node": n, "arrival_ns": round(a, 3), "kind": k} for n, a, k in p.steps]}

    return {"period_ns": report.period_ns, "endpoints": report.endpoints, "failing": report.failing,
            "fmax_mhz": None if report.fmax_mhz is None else round(report.fmax_mhz, 2),
            "histogram": [{"slack_from_ns": lower, "endpoints": count} for lower, count in report.histogram()],
            "groups": [{"start": g.start, "end": g.end, "endpoints": g.endpoints, "worst": path_json(g.worst)}
                       for g in report.groups[:groups]]}


def placement(build, depth, limit, json_out):
    from ..flow.timing import PlacementError, read_placement

    if depth < 1:
        raise CLIError(f"--depth must be a positive integer, not {depth}")
    path = Path(build)
    path = path / "placed.json" if path.is_dir() else path
    try:
        blocks = read_placement(path, depth)
    except PlacementError as error:
        raise CommandFailed(str(error)) from None
    if json_out:
        print_json([{"block": b.block, "cells": b.cells, "centre": list(b.centre), "x_span": list(b.x_span),
                     "y_span": list(b.y_span)} for b in blocks[:limit]])
        return 0
    width = max(len(b.block) for b in blocks[:limit])
    print(f"{'block':<{width}}  {'cells':>6}  {'centre X, Y':>12}  {'X (10-90%)':>10}  {'Y (10-90%)':>10}")
    for b in blocks[:limit]:
        print(f"{b.block:<{width}}  {b.cells:6d}  {b.centre[0]:5.1f}, {b.centre[1]:5.1f}  "
              f"{b.x_span[0]:4d}-{b.x_span[1]:<5d}  {b.y_span[0]:4d}-{b.y_span[1]:<5d}")
    if len(blocks) > limit:
        print(f"... {len(blocks) - limit} more blocks")
    return 0


def run(args):
    from ..flow.timing import NetlistError, SdfError, analyse, estimate_netlist, read_sdf

    if args.groups < 0 or args.show < 0:
        raise CLIError("--groups and --show must not be negative")
    if not args.wire >= 0:
        raise CLIError(f"--wire must be a non-negative number of ns, not {args.wire}")
    if args.placement:
        return placement(args.build, args.depth, args.groups, args.json)
    source, period = _source_and_period(args.build, args.period, args.netlist)
    try:
        graph = estimate_netlist(source, wire_ns=args.wire) if args.netlist else read_sdf(source)
        report = analyse(graph, period)
    except (SdfError, NetlistError) as error:
        raise CommandFailed(str(error)) from None
    if args.json:
        print_json(as_json(report, args.groups))
    else:
        print(summary(report, args.groups, args.show))
    return 0
