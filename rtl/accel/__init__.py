"""RPAccel's top level (``rpaccel.rtl.accel``): the command set, the controller and the units that join the blocks.

:mod:`.isa` defines the command and response layouts (the chip's instruction set, encoded and decoded on the host
only by :mod:`rpaccel.host.driver.chip`); the other modules are the units between the blocks (memory arbiter,
candidate fetcher, joiner, lane front ends, score sequencers, weight loader) and the controller. See docs/chip.md.
"""
