"""``rpaccel bench chip``: do the preset's large units fit one ECP5-85F together, and at what clock?

Synthesises :class:`rpaccel.rtl.chip.ChipParts` (the MLP engine, the embedding unit and the top-k units of the
preset, side by side in the pin harness) and places and routes it. The answer to "does the preset fit" is
nextpnr's: the design is packed and placed on the device or it is not.
"""

from ..results import format_table
from .bench import Bench, record
from .common import CLIError, CommandFailed


def _arguments(p):
    p.add_argument("--preset", default="small", help="configuration preset (default small)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    p.add_argument("--pnr-timeout", type=float, default=None, metavar="SECONDS",
                   help="stop the build after SECONDS (synthesis, placement and routing together); the report "
                        "then has the packed utilisation and nextpnr's estimate after placement (default: none)")
    p.add_argument("--build-dir", default="build/bench-chip", help="build folder (default build/bench-chip)")


def _run(args):
    from ..config import ConfigError, preset
    from ..rtl.synth import SynthError, synthesize

    if args.pnr_timeout is not None and not args.pnr_timeout > 0:
        raise CLIError(f"--pnr-timeout must be a positive number of seconds, not {args.pnr_timeout:g}")
    try:
        config = preset(args.preset)
    except ConfigError as error:
        raise CLIError(str(error)) from None
    print(f"synthesising the {config.name} preset's MLP engine, embedding unit and {config.topk_units} top-k "
          "units together on ecp5-85f ...", flush=True)
    try:
        return synthesize("parts", "ecp5-85f", config, seed=args.seed, build_dir=args.build_dir,
                          timeout=args.pnr_timeout)
    except SynthError as error:
        raise CommandFailed(str(error)) from None


def _summary(r, timeout):
    """The table and notes of one build of the parts."""
    used = r["utilization"] if r["routed"] else r.get("packed_utilization")
    placed = r["routed"] or r.get("placed_fmax_mhz") is not None
    cells = r["cells"]
    rows = []
    for key, label in (("luts", "LUTs (TRELLIS_COMB)"), ("ffs", "FFs"), ("dsps", "DSPs (MULT18X18D)"),
                       ("brams", "block RAMs (DP16KD)")):
        u = (used or {}).get(key)
        rows.append([label, cells[key], u["used"] if u else None, u["available"] if u else None,
                     f"{100 * u['used'] / u['available']:.0f}%" if u and u["available"] else ""])
    table = format_table(["resource", "Yosys", "nextpnr (packed)", "device", "share"], rows)
    if r["routed"]:
        speed = (f"placed and routed: Fmax {r['fmax_mhz']} MHz against {r['clock_constraint_mhz']:g} MHz"
                 + (f"; critical path `{r['critical_path']['from']}` -> `{r['critical_path']['to']}` "
                    f"({r['critical_path']['logic_ns']} ns logic, {r['critical_path']['routing_ns']} ns routing)"
                    if r["critical_path"] else ""))
    elif placed:
        speed = (f"placed; routing did not finish within --pnr-timeout {timeout:g} s (synthesis, placement and "
                 f"routing together, on the shared 2-core machine); nextpnr's estimate after placement is "
                 f"{r['placed_fmax_mhz']} MHz against {r['clock_constraint_mhz']:g} MHz (routed delays are usually "
                 "longer)")
    else:
        speed = (f"not placed within --pnr-timeout {timeout:g} s, so whether it fits is not known from this run"
                 if timeout else "not placed")
    fits = ("fits the ECP5-85F: nextpnr packed and placed every cell" if placed else
            "fit unknown")
    notes = (f"Preset `{r['preset']}`: the MLP engine, the embedding unit and the top-k units (each with its own "
             "ports, unconnected) in one design in the pin harness, as `rpaccel synth parts` builds it. "
             f"Result: {fits}; {speed}. Yosys counts a CCU2C carry cell as two LUTs; nextpnr's TRELLIS_COMB "
             "counts LUTs and carry halves as it packs them, and LUT RAM (TRELLIS_DPR16X4) in its own cells "
             "besides. The pin harness adds about one flip-flop per port bit "
             f"({r['harness']['ffs']:,} here). Tools: {', '.join(r['tools'].values())}.")
    return table, notes


def bench_chip(args):
    r = _run(args)
    table, notes = _summary(r, args.pnr_timeout)
    print(table)
    print(notes)
    if args.json:
        from .common import print_json
        print_json(r)
    record(args, "chip", f"Whole chip: the {r['preset']} preset's units together on the ECP5-85F",
           table + "\n\n" + notes)
    return 0


BENCH = Bench("chip", "the preset's MLP engine, embedding unit and top-k units together on the ECP5-85F: fit "
              "and clock", _arguments, bench_chip)
