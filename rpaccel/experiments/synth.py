"""Synthesis of the small blocks on every target at its preset (``rpaccel bench synth``), and the synthesis call
the other experiments share."""

from ..config import PRESETS, TARGETS
from ..results import format_table
from .report import ExperimentError, ExperimentFailed, Report, Section

__all__ = ["BLOCK_COMPONENTS", "device_label", "run_synth", "synthesize_config", "target_presets"]

# The small blocks; the large units (array, MLP engine, embedding unit, top-k) take minutes to an hour each to
# place and route, and their own benches synthesise them (``bench gemm|embedding|topk``).
BLOCK_COMPONENTS = ("pe", "pe-lut", "postproc")


def target_presets(targets=TARGETS):
    """The presets meant for ``targets`` (their ``target`` field), in :data:`rpaccel.config.PRESETS` order."""
    for target in targets:
        if target not in TARGETS:
            raise ExperimentError("targets", f"has an unknown target {target!r} (known: {', '.join(TARGETS)})")
    return [config for config in PRESETS.values() if config.target in targets]


def synthesize_config(component, config, *, target=None, **options):
    """:func:`rpaccel.flow.synth.synthesize` of ``component`` at ``config`` on its target (or ``target``).

    Raises
    ------
    ExperimentError
        If the component or the target is unknown, or the configuration has no target.
    ExperimentFailed
        If a tool fails.
    """
    from ..flow.catalog import UnknownComponent
    from ..flow.synth import SynthError, UnknownTarget, synthesize

    target = target or config.target
    if target not in TARGETS:
        raise ExperimentError("preset", f"{config.name} has no synthesis target (its target is {target!r}, not one "
                              f"of {', '.join(TARGETS)})")
    try:
        return synthesize(component, target, config, **options)
    except (UnknownComponent, UnknownTarget) as error:
        raise ExperimentError(None, str(error)) from None
    except SynthError as error:
        raise ExperimentFailed(str(error)) from None


def run_synth(*, components=BLOCK_COMPONENTS, configs=None, seed=1, progress=None):
    """Synthesise ``components`` at each configuration on its target.

    Parameters
    ----------
    components : sequence of str
        Components of :data:`rpaccel.flow.catalog.CATALOG`.
    configs : sequence of AccelConfig, optional
        Configurations, each built on its ``target`` (default: every preset meant for an FPGA).
    seed : int
        nextpnr's placement seed.
    progress : callable, optional
        Called with a line after each build.

    Returns
    -------
    Report
        One row per build (the flow's summary), the ``synth-blocks`` section.
    """
    from ..flow.catalog import CATALOG

    for name in components:
        if name not in CATALOG:
            raise ExperimentError("components", f"has an unknown component {name!r} (known: {', '.join(CATALOG)})")
    configs = target_presets() if configs is None else configs
    results = []
    for config in configs:
        for name in components:
            r = synthesize_config(name, config, seed=seed)
            results.append(r)
            if progress:
                progress(f"  {name} on {r['target']}: {r['fmax_mhz']} MHz, {r['cells']['luts']} LUTs")
    rows = [[r["component"], r["target"], r["preset"], r["clock_constraint_mhz"], r["fmax_mhz"],
             "yes" if r["meets_timing"] else "no", r["cells"]["luts"], r["cells"]["ffs"], r["harness"]["ffs"],
             r["cells"]["dsps"], r["cells"]["brams"],
             f"`{r['critical_path']['from']}` -> `{r['critical_path']['to']}`" if r["critical_path"] else ""]
            for r in results]
    table = format_table(["component", "target", "preset", "constraint MHz", "Fmax MHz", "meets", "LUTs", "FFs",
                          "of which harness FFs", "DSPs", "BRAMs", "critical path"], rows)
    tools = results[0]["tools"] if results else {}
    notes = ("LUTs and FFs are Yosys's post-synthesis cell counts (on ECP5 a CCU2C carry cell counts as two "
             "LUTs) and include the pin harness (one FF per input bit and one FF plus about one LUT per output "
             "bit). Fmax is nextpnr's estimate for the harness clock, constrained at the preset's clock, seed "
             f"{seed}. Tools: " + ", ".join(tools.values()) + ".")
    return Report(rows=results, text=table, data={"runs": results},
                  sections=(Section("synth-blocks", "Synthesis of the blocks", table + "\n\n" + notes),))


def device_label(target):
    """The device of ``target`` as the results name it (``"ECP5-85F"``; the name itself for no known target)."""
    from ..flow.synth import TARGETS as BOARDS

    return BOARDS[target].device if target in BOARDS else target
