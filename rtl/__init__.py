"""Synthesisable Amaranth components of rpaccel (``rpaccel.rtl``).

Every block is an :class:`amaranth.lib.wiring.Component`; blocks that stream use :mod:`amaranth.lib.stream`
ports with :mod:`amaranth.lib.data` payloads. This package never imports :mod:`rpaccel.host` or
:mod:`rpaccel.sim`, and runs no tools (synthesis and timing are :mod:`rpaccel.flow`'s). Pieces shared by
the blocks (register slice, queue, delay line, credit counter, split selection) are in :mod:`rpaccel.rtl.lib`.
"""
