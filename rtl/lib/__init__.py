"""Gateware pieces shared by the blocks, each written once.

* :mod:`.slice`: :class:`~.slice.RegisterSlice`, the two-entry stream register slice (also the skid buffer of a
  producer that registers its decision to send).
* :mod:`.queue`: :class:`~.queue.Queue`, a synchronous FIFO in LUT RAM with one register stage, in front of the
  storage (optionally cut into slices) or behind it.
* :mod:`.delay`: :class:`~.delay.DelayLine`, a wide delay line in LUT RAM, and :func:`~.delay.shift_register`, a
  chain of registers whose every stage can be read.
* :mod:`.credit`: :class:`~.credit.CreditCounter`, places taken and given back, and whether there is room (a
  register, or a compare of the count).
* :mod:`.route`: :class:`~.route.RouteDemux` and :class:`~.route.RouteMux`, a stream demultiplexer and
  multiplexer steered by a stream of ``{port, count}`` route entries (order-directed streams).
* :mod:`.select`: the multiplexers and register replicas of the blocks whose wiring follows the run-time split.
"""
