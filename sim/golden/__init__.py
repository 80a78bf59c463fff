"""Golden models of the RTL blocks: plain numpy/Python, obviously correct, one module per block.

The arithmetic itself is :mod:`rpaccel.numeric`; these modules add what a block does around it (registers,
ordering) and random-stimulus generators the tests, benches and demo share.
"""
