"""Verilog generation for Amaranth components, cached on disk by a hash of the configuration."""

import inspect
from dataclasses import dataclass
from pathlib import Path

import amaranth
from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import wiring

from .cache import cache_entry, digest, mark_complete, source_digest

__all__ = ["VerilogArtifact", "generate_verilog", "port_list"]

def _rtl_sources():
    # The RTL, and the shared configuration and numeric rules it is parameterised by.
    import rpaccel
    import rpaccel.rtl

    return Path(rpaccel.rtl.__file__).parent, Path(rpaccel.__file__).parent


@dataclass(frozen=True)
class VerilogArtifact:
    """A generated Verilog file and what it was made from.

    Attributes
    ----------
    path : pathlib.Path
        The Verilog file.
    top : str
        Name of the top module.
    key : str
        Cache key (hash of factory, arguments, RTL sources and Amaranth version).
    ports : tuple of (str, str, int)
        ``(name, direction, width)`` of every top-level port except the clock and reset.
    """

    path: Path
    top: str
    key: str
    ports: tuple


def port_list(component):
    """``(name, direction, width)`` of each port of ``component`` as named in generated Verilog.

    Directions are ``"i"`` (driven into the component) and ``"o"``. Nested members are joined with ``__``, as
    Amaranth's Verilog back end names them.
    """
    return tuple(
        ("__".join(str(part) for part in path), "i" if member.flow == wiring.In else "o",
         Shape.cast(member.shape).width)
        for path, member, _value in component.signature.flatten(component))


def generate_verilog(factory, *args, top="top", **kwargs):
    """Elaborate ``factory(*args, **kwargs)`` and write it as Verilog, or reuse a cached copy.

    The cache key covers the factory's qualified name and source file, the arguments' ``repr`` (so configuration
    objects must have a faithful ``repr``, as frozen dataclasses do), the RTL sources and the Amaranth version:
    changing any of them regenerates the file.

    Parameters
    ----------
    factory : callable
        Returns an :class:`amaranth.lib.wiring.Component`, e.g. the component class. If the component has an
        ``extra_verilog`` attribute (Verilog text of modules it instantiates), it is appended to the file.
    *args, **kwargs
        Arguments for ``factory``.
    top : str
        Name of the top-level Verilog module.

    Returns
    -------
    VerilogArtifact
    """
    factory_file = inspect.getsourcefile(factory)
    key = digest(
        f"{factory.__module__}.{factory.__qualname__}", repr(args), repr(sorted(kwargs.items())), top,
        source_digest(*_rtl_sources(), factory_file), amaranth.__version__)
    with cache_entry("verilog", key) as (folder, complete):
        path = folder / f"{top}.v"
        ports_file = folder / "ports.txt"
        if not complete:
            component = factory(*args, **kwargs)
            ports = port_list(component)
            text = verilog.convert(component, name=top, emit_src=False)
            # A component may need Verilog modules of its own (e.g. a simulation memory behind an Instance).
            extra = getattr(component, "extra_verilog", "")
            path.write_text(text + ("\n" + extra if extra else ""))
            ports_file.write_text("".join(f"{n} {d} {w}\n" for n, d, w in ports))
            mark_complete(folder)
        ports = tuple((n, d, int(w)) for n, d, w in (line.split() for line in ports_file.read_text().splitlines()))
    return VerilogArtifact(path=path, top=top, key=key, ports=ports)
