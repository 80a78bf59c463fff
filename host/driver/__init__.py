"""The driver layer: command encoders and response decoders for each unit of the chip, over one codec.

It knows the gateware's payload layouts but never simulates: a device (RTL simulation, model or board) carries
the words it produces.

* :mod:`~rpaccel.host.driver.device`: the :class:`~rpaccel.host.driver.device.Device` interface, which runs a
  :class:`~rpaccel.host.driver.device.TimedTrace` on a design's stream ports (words with not-before cycles in,
  words with the cycle each left the design out); :mod:`rpaccel.sim.device` implements it on Verilator and on
  the Amaranth simulator.
* :mod:`~rpaccel.host.driver.codec`: packs and unpacks any ``amaranth.lib.data`` payload to and from numpy
  arrays (``(n, limbs)`` uint64 words), single values, Python ints and hex lines.
* :mod:`~rpaccel.host.driver.mlp`: the MLP engine's program compiler (weight images, chunked command streams,
  activation words, result decoding).
* :mod:`~rpaccel.host.driver.embedding`: the embedding system's command encoder and output decoders.
* :mod:`~rpaccel.host.driver.topk`: top-k query framing and packing, result decoding.
* :mod:`~rpaccel.host.driver.models`: a quantised model's MLPs as engine programs.
* :mod:`~rpaccel.host.driver.chip`: the chip's command encoder and response decoder, memory images, query
  compiler and static program checker.
"""
