"""``rpaccel bench chip``: do the preset's large units fit one ECP5-85F together?

Packs the preset's MLP engine, embedding unit and top-k units (``rpaccel synth mlp|embedding|topk-units``) with
Yosys and nextpnr and adds up the cells each needs on the device. Each unit is measured in its own pin harness,
so the sum counts three harnesses where a chip has none: it is an upper bound. ``--whole`` instead builds all
of them in one design (:class:`rpaccel.rtl.chip.ChipParts`, ``rpaccel synth parts``), which nextpnr then packs
as one.
"""

from ..results import format_table
from .bench import Bench, record
from .common import CLIError, CommandFailed, print_json

PARTS = ("mlp", "embedding", "topk-units")
RESOURCES = (("luts", "LUTs (TRELLIS_COMB)"), ("ffs", "FFs"), ("dsps", "DSPs (MULT18X18D)"),
             ("brams", "block RAMs (DP16KD)"))


def _arguments(p):
    p.add_argument("--preset", default="small", help="configuration preset (default small)")
    p.add_argument("--whole", action="store_true",
                   help="pack the units as one design (rpaccel synth parts) instead of adding up their packings")
    p.add_argument("--build-dir", default="build/bench-chip", help="build folder (default build/bench-chip)")


def _pack(component, config, build_dir):
    from ..flow.synth import SynthError, synthesize

    print(f"  packing {component} ({config.name}) on ecp5-85f ...", flush=True)
    try:
        r = synthesize(component, "ecp5-85f", config, build_dir=f"{build_dir}/{component}", pack_only=True)
    except SynthError as error:
        raise CommandFailed(str(error)) from None
    print("    " + ", ".join(f"{key} {r['packed_utilization'][key]['used']:,}" for key, _ in RESOURCES), flush=True)
    return r


def bench_chip(args):
    from ..config import ConfigError, preset

    try:
        config = preset(args.preset)
    except ConfigError as error:
        raise CLIError(str(error)) from None
    runs = [_pack("parts", config, args.build_dir)] if args.whole else [
        _pack(part, config, args.build_dir) for part in PARTS]
    device = runs[0]["packed_utilization"]
    total = {key: sum(r["packed_utilization"][key]["used"] for r in runs) for key, _ in RESOURCES}
    rows = [[r["component"], *(r["packed_utilization"][key]["used"] for key, _ in RESOURCES)] for r in runs]
    if not args.whole:
        rows.append(["sum", *(total[key] for key, _ in RESOURCES)])
    rows.append(["ECP5-85F", *(device[key]["available"] for key, _ in RESOURCES)])
    rows.append(["share", *(f"{100 * total[key] / device[key]['available']:.1f}%" for key, _ in RESOURCES)])
    table = format_table(["unit", *(label for _, label in RESOURCES)], rows)
    over = [label for key, label in RESOURCES if total[key] > device[key]["available"]]
    verdict = (f"they do NOT fit: {', '.join(over)} exceed the device" if over else
               "they fit: every resource is within the device")
    how = ("packed as one design (`rpaccel synth parts`)" if args.whole else
           f"each packed on its own in the pin harness and added up (an upper bound: {len(runs)} harnesses are "
           "counted, about one LUT and one flip-flop per port bit each)")
    notes = (f"Preset `{config.name}`: the MLP engine ({config.array_rows}x{config.array_cols} array), the embedding "
             f"unit and {config.topk_units} top-k unit(s) of K_MAX = {config.k_max}, {how}; nextpnr's cell counts "
             f"after packing (`--pack-only`). Result: {verdict}. TRELLIS_COMB is nextpnr's logic cell (a LUT4, "
             f"a carry half or half of a LUT-RAM cell), of which the device has {device['luts']['available']:,}. "
             "Placement and routing of the "
             "units together is not measured here (see each unit's own bench for its Fmax). "
             f"Tools: {', '.join(runs[0]['tools'].values())}.")
    print(table)
    print(notes)
    if args.json:
        print_json({"runs": runs, "total": total, "fits": not over})
    if args.whole:
        record(args, "chip-whole", f"Whole chip as one design: the {config.name} preset's units on the ECP5-85F",
               table + "\n\n" + notes)
    else:
        record(args, "chip", f"Whole chip: the {config.name} preset's units on the ECP5-85F", table + "\n\n" + notes)
    return 0


BENCH = Bench("chip", "the preset's MLP engine, embedding unit and top-k units on the ECP5-85F: do they fit "
              "together", _arguments, bench_chip)
