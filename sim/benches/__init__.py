"""cocotb benches: test modules run inside the simulator by :func:`rpaccel.sim.verilator.run_cocotb`.

Each bench reads its arguments with :func:`rpaccel.sim.bench.bench_args`, checks every output against a golden
model, and reports its figures with :func:`rpaccel.sim.bench.write_report`. Tests and the CLI run the same
benches.
"""
