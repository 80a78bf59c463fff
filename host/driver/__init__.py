"""The driver layer: command encoders and response decoders for each unit of the chip, over one codec.

It knows the gateware's payload layouts but never simulates: a device (RTL simulation, model or board) carries
the words it produces.
"""
