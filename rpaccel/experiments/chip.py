"""Do a configuration's large units fit its device together? (``rpaccel bench chip``)

Packs the configuration's MLP engine, embedding unit and top-k units (``rpaccel synth mlp|embedding|topk-units``)
with Yosys and nextpnr and adds up the cells each needs on the device. Each unit is measured in its own pin
harness, so the sum counts three harnesses where a chip has none: it is an upper bound. With ``whole`` all of them
are built in one design instead (:class:`rpaccel.rtl.chip.ChipParts`, ``rpaccel synth parts``), which nextpnr then
packs as one.
"""

from ..results import format_table
from .report import ExperimentError, ExperimentFailed, Report, Section
from .synth import device_label, synthesize_config

__all__ = ["PARTS", "RESOURCES", "run_chip", "run_chip_routed"]

#: The units packed one by one.
PARTS = ("mlp", "embedding", "topk-units")
#: The resources added up: nextpnr's utilisation key and its label (ECP5 cells).
RESOURCES = (("luts", "LUTs (TRELLIS_COMB)"), ("ffs", "FFs"), ("dsps", "DSPs (MULT18X18D)"),
             ("brams", "block RAMs (DP16KD)"))


def _pack(component, config, build_dir, say):
    say(f"  packing {component} ({config.name}) on {config.target} ...")
    r = synthesize_config(component, config, build_dir=f"{build_dir}/{component}", pack_only=True)
    say("    " + ", ".join(f"{key} {r['packed_utilization'][key]['used']:,}" for key, _ in RESOURCES))
    return r


def run_chip(config, *, whole=False, build_dir="build/bench-chip", progress=None):
    """Pack ``config``'s MLP engine, embedding unit and top-k units on its target and add up their cells.

    Parameters
    ----------
    config : AccelConfig
        The configuration; its target must be an ECP5 (the resources counted are the ECP5's).
    whole : bool
        Pack the units as one design (``rpaccel synth parts``) instead of adding up their packings.
    build_dir : path-like
        Build folder (one subfolder per unit).
    progress : callable, optional
        Called with a line before and after each packing.

    Returns
    -------
    Report
        One row per unit, the ``chip`` section (``chip-whole`` with ``whole``); ``data["fits"]`` says whether
        every resource is within the device.
    """
    if config.target != "ecp5-85f":
        raise ExperimentError("preset", f"{config.name} targets {config.target!r}; the chip budget counts the "
                              "ECP5-85F's cells (target ecp5-85f)")
    say = progress or (lambda line: None)
    runs = [_pack("parts", config, build_dir, say)] if whole else [
        _pack(part, config, build_dir, say) for part in PARTS]
    device = runs[0]["packed_utilization"]
    total = {key: sum(r["packed_utilization"][key]["used"] for r in runs) for key, _ in RESOURCES}
    rows = [[r["component"], *(r["packed_utilization"][key]["used"] for key, _ in RESOURCES)] for r in runs]
    if not whole:
        rows.append(["sum", *(total[key] for key, _ in RESOURCES)])
    label = device_label(config.target)
    rows.append([label, *(device[key]["available"] for key, _ in RESOURCES)])
    rows.append(["share", *(f"{100 * total[key] / device[key]['available']:.1f}%" for key, _ in RESOURCES)])
    table = format_table(["unit", *(label for _, label in RESOURCES)], rows)
    over = [label for key, label in RESOURCES if total[key] > device[key]["available"]]
    verdict = (f"they do NOT fit: {', '.join(over)} exceed the device" if over else
               "they fit: every resource is within the device")
    how = ("packed as one design (`rpaccel synth parts`)" if whole else
           f"each packed on its own in the pin harness and added up (an upper bound: {len(runs)} harnesses are "
           "counted, about one LUT and one flip-flop per port bit each)")
    notes = (f"Preset `{config.name}`: the MLP engine ({config.array_rows}x{config.array_cols} array), the embedding "
             f"unit and {config.topk_units} top-k unit(s) of K_MAX = {config.k_max}, {how}; nextpnr's cell counts "
             f"after packing (`--pack-only`). Result: {verdict}. TRELLIS_COMB is nextpnr's logic cell (a LUT4, "
             f"a carry half or half of a LUT-RAM cell), of which the device has {device['luts']['available']:,}. "
             "Placement and routing of the "
             "units together is not measured here (see each unit's own bench for its Fmax). "
             f"Tools: {', '.join(runs[0]['tools'].values())}.")
    section = (Section("chip-whole", f"Whole chip as one design: the {config.name} preset's units on the {label}",
                       table + "\n\n" + notes) if whole else
               Section("chip", f"Whole chip: the {config.name} preset's units on the {label}", table + "\n\n" + notes))
    return Report(rows=runs, text=table + "\n" + notes, sections=(section,),
                  data={"runs": runs, "total": total, "fits": not over})


#: Most of the ECP5-85F's logic cells the whole chip may use (issue 19: room left for routing and for change).
LUT_BUDGET = 0.80


def run_chip_routed(config, *, seed=1, router=None, placer=None, density=None, clock_mhz=None, timeout=None,
                    build_dir="build/bench-chip/accel", from_build=None, progress=None):
    """Place and route the whole chip (``rpaccel synth accel``: RPAccel with its memory port on pins) on its ECP5.

    Parameters
    ----------
    config : AccelConfig
        The configuration; its target must be the ECP5-85F.
    seed : int
        nextpnr placement seed.
    router, placer : str, optional
        nextpnr's router and placer (:data:`rpaccel.flow.synth.ROUTERS`, :data:`rpaccel.flow.synth.PLACERS`).
    density : float, optional
        The heap placer's largest placement density (:func:`rpaccel.flow.synth.synthesize`).
    clock_mhz : float, optional
        Clock constraint (default: the preset's ``clock_mhz``). nextpnr's placer and router weigh each connection
        by its slack against it: a constraint far above what the logic depth allows makes most of the failing
        paths' connections critical, and the router then keeps them on their shortest wires where it should
        detour them around congestion.
    timeout : float, optional
        Seconds for synthesis and place-and-route; past them the result has no Fmax.
    build_dir : path-like
    from_build : path-like, optional
        Run nothing: summarise the place-and-route that finished in this folder
        (:func:`rpaccel.flow.synth.summarize_build`; ``router``, ``placer``, ``density``, ``seed`` and
        ``clock_mhz`` say how it was run).
    progress : callable, optional

    Returns
    -------
    Report
        The ``chip-accel`` section: Fmax against the constraint, LUTs (against the 80% budget), FFs, DSPs and
        block RAMs as nextpnr placed them, and the critical path; ``data["run"]`` the flow's summary,
        ``data["fits"]`` whether it routed within every budget.
    """
    if config.target != "ecp5-85f":
        raise ExperimentError("preset", f"{config.name} targets {config.target!r}; the chip is routed on the "
                              "ECP5-85F (target ecp5-85f)")
    say = progress or (lambda line: None)
    if from_build is None:
        say(f"  placing and routing accel ({config.name}) on {config.target} ...")
        r = synthesize_config("accel", config, seed=seed, router=router, placer=placer, density=density,
                              clock_mhz=clock_mhz, timeout=timeout, build_dir=build_dir)
    else:
        from ..flow.synth import SynthError, summarize_build

        say(f"  summarising the place-and-route of accel ({config.name}) in {from_build} ...")
        try:
            r = summarize_build("accel", config.target, config, from_build, clock_mhz=clock_mhz, router=router,
                                placer=placer, density=density)
        except SynthError as error:
            raise ExperimentFailed(str(error)) from None
    used = r["utilization"] or r["packed_utilization"]
    label = device_label(config.target)
    rows = [[key_label, f"{used[key]['used']:,}", f"{used[key]['available']:,}",
             f"{100 * used[key]['used'] / used[key]['available']:.1f}%"] for key, key_label in RESOURCES]
    table = format_table(["resource", "used", label, "share"], rows)
    luts = used["luts"]["used"] / used["luts"]["available"]
    over = [key_label for key, key_label in RESOURCES if used[key]["used"] > used[key]["available"]]
    path = r["critical_path"]
    fmax = r["fmax_mhz"]
    lines = [f"Preset `{config.name}` ({config.array_rows}x{config.array_cols} array, splits "
             f"{','.join(map(str, config.splits))}, {config.topk_units} top-k unit(s) of K_MAX {config.k_max}, "
             f"{config.filter_units} filter unit(s) of {config.filter_capacity}), the whole chip "
             "(`rpaccel synth accel`: controller, memory arbiter, fetcher, embedding unit and caches, MLP engine, "
             "lane front ends, joiner and interaction unit, score unit with top-k and filter units, weight loader; "
             "the memory port on pins) placed and routed by nextpnr, seed "
             f"{seed}" + (f", router {router}" if router else "") + (f", placer {placer}" if placer else "")
             + (f", placement density {density:g}" if density is not None else "") + ".",
             (f"Fmax {fmax:.1f} MHz against a {r['clock_constraint_mhz']:g} MHz constraint "
              f"({'met' if r['meets_timing'] else 'not met'}; the preset's clock is {config.clock_mhz:g} MHz)."
              if fmax else
              "The run did not route within the time given: no Fmax."),
             f"Logic cells: {100 * luts:.1f}% of the device (budget {100 * LUT_BUDGET:.0f}%: "
             f"{'within' if luts <= LUT_BUDGET else 'OVER'})" + (f"; over the device: {', '.join(over)}" if over
                                                                   else "; every resource within the device") + "."]
    if path:
        lines.append(f"Critical path {path['delay_ns']} ns ({path['clock_to_out_ns']} clock-to-output, "
                     f"{path['logic_ns']} logic in {path['logic_levels']} levels, {path['routing_ns']} routing): "
                     f"`{path['from']}` -> `{path['to']}`.")
    lines.append(f"Tools: {', '.join(r['tools'].values())}.")
    notes = " ".join(lines)
    section = Section("chip-accel", f"The chip placed and routed: {config.name} on the {label}",
                      table + "\n\n" + notes)
    return Report(rows=[r], text=table + "\n" + notes, sections=(section,),
                  data={"run": r, "fits": bool(fmax) and luts <= LUT_BUDGET and not over})
