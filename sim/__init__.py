"""Simulation for rpaccel (``rpaccel.sim``): Verilog generation and Verilator builds (cached), cocotb and
Amaranth-simulator stream drivers, golden models of the RTL blocks, and the cocotb benches that run them.
"""
