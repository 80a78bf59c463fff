"""``rpaccel synth``: synthesise, place and route a component and report Fmax and utilisation."""

from ..config import PRESETS, TARGETS
from .common import CLIError, CommandFailed, add_config_arguments, config_from_args, print_json


def register(subparsers):
    p = subparsers.add_parser(
        "synth", help="synthesise a component for an FPGA (Yosys + nextpnr) and report Fmax and area",
        description="Synthesise COMPONENT in a pin-limited harness with Yosys and nextpnr (YoWASP unless "
                    "YOSYS/NEXTPNR_* say otherwise) and report Fmax against the clock constraint, LUTs, FFs, "
                    "DSPs and block RAMs.")
    p.add_argument("component", nargs="?", help="component to build (see --list)")
    p.add_argument("--list", action="store_true", help="list the components and targets")
    p.add_argument("--target", help=f"{' or '.join(TARGETS)} (default: the preset's target)")
    add_config_arguments(p)
    p.add_argument("--clock", type=float, metavar="MHZ", help="clock constraint (default: the preset's clock)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    p.add_argument("--placer", help="nextpnr placer: heap (nextpnr's default), static or sa")
    p.add_argument("--router", help="nextpnr router: router1 (nextpnr's default) or router2")
    p.add_argument("--build-dir", help="build folder (default build/synth/COMPONENT-TARGET-PRESET)")
    p.add_argument("--placement", action="store_true",
                   help="also write the routed design with every cell's tile (placed.json) for rpaccel timing "
                        "--placement")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def list_catalog():
    from ..flow.catalog import CATALOG
    from ..flow.synth import TARGETS as BOARDS

    width = max(len(name) for name in [*CATALOG, *BOARDS])
    print("components:")
    for entry in CATALOG.values():
        print(f"  {entry.name:<{width}}  {entry.description}")
    print("targets:")
    for target in BOARDS.values():
        print(f"  {target.name:<{width}}  {target.board} ({target.family}), pins from constraints/"
              f"{target.constraints}")
    print("presets: " + ", ".join(f"{name} ({config.target})" for name, config in PRESETS.items()))


def synth_one(component, target, config, *, clock=None, seed=1, build_dir=None, timeout=None, placer=None,
              router=None, placement=False):
    """Run one synthesis, turning the flow's errors into CLI errors (``timeout``: see ``synthesize``)."""
    from ..flow.catalog import UnknownComponent
    from ..flow.synth import SynthError, UnknownTarget, synthesize

    try:
        return synthesize(component, target, config, clock_mhz=clock, build_dir=build_dir, seed=seed,
                          timeout=timeout, placer=placer, router=router, placement=placement)
    except (UnknownComponent, UnknownTarget, ValueError) as error:
        raise CLIError(str(error)) from None
    except SynthError as error:
        raise CommandFailed(str(error)) from None


def summary(r):
    c, u = r["cells"], r["utilization"]
    lines = [f"{r['component']} on {r['target']} ({r['board']}), preset {r['preset']}:"]
    verdict = "meets" if r["meets_timing"] else "FAILS"
    lines.append(f"  Fmax       {r['fmax_mhz']} MHz ({verdict} the {r['clock_constraint_mhz']:g} MHz constraint)")
    lines.append(f"  LUTs       {c['luts']}   FFs {c['ffs']}   DSPs {c['dsps']}   block RAMs {c['brams']}"
                 + (f"   SPRAMs {c['sprams']}" if r["target"] == "ice40-up5k" else ""))
    used = ", ".join(f"{k} {v['used']}/{v['available']}" for k, v in u.items())
    lines.append(f"  placed     {used}")
    lines.append(f"  harness    {r['harness']['ffs']} FFs of the totals are the pin harness")
    if r["critical_path"]:
        p = r["critical_path"]
        lines.append(f"  critical   {p['from']} -> {p['to']}: {p['delay_ns']} ns "
                     f"({p['clock_to_out_ns']} clock-to-output, {p['logic_ns']} logic, {p['routing_ns']} routing)")
    lines.append(f"  build      {r['build_dir']} ({r['seconds']} s)")
    if r.get("routed", True) and not r["meets_timing"]:
        lines.append(f"  paths      rpaccel timing {r['build_dir']} lists every failing endpoint")
    return "\n".join(lines)


def run(args):
    if args.list:
        list_catalog()
        return 0
    if not args.component:
        raise CLIError("give a COMPONENT (see rpaccel synth --list)")
    from ..flow.catalog import CATALOG

    if args.component not in CATALOG:
        raise CLIError(f"unknown component {args.component!r} (known: {', '.join(CATALOG)})")
    if args.target is not None and args.target not in TARGETS:
        raise CLIError(f"unknown target {args.target!r} (known: {', '.join(TARGETS)})")
    if args.clock is not None and not args.clock > 0:
        raise CLIError(f"--clock must be a positive frequency in MHz, not {args.clock}")
    config = config_from_args(args)
    target = args.target or config.target
    if target not in TARGETS:
        raise CLIError(f"the {config.name} preset has no synthesis target; give --target ({' or '.join(TARGETS)})")
    result = synth_one(args.component, target, config, clock=args.clock, seed=args.seed,
                       build_dir=args.build_dir, placer=args.placer, router=args.router, placement=args.placement)
    if args.json:
        print_json(result)
    else:
        print(summary(result))
    return 0
