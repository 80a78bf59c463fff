"""cocotb bench: the cocotb stream drivers through a FIFO, with random stalls on both sides."""

import cocotb
import numpy as np

from rpaccel.sim.bench import bench_args, cycle_count, start, write_report
from rpaccel.sim.cocotb_streams import StreamSink, StreamSource

from stream_fifo import Item, random_items


@cocotb.test()
async def passes_items_in_order(dut):
    args = bench_args()
    items = random_items(np.random.default_rng(args["seed"]), args["count"])
    await start(dut)
    source = StreamSource(dut, "i", Item, pause=args["pause"], seed=1)
    sink = StreamSink(dut, "o", Item, pause=args["pause"], seed=2)
    first = cycle_count(dut)
    sending = cocotb.start_soon(source.send(items))
    got = await cocotb.start_soon(sink.receive(len(items)))
    await sending
    write_report({"cycles": cycle_count(dut) - first, "received": len(got)})
    assert got == items, "items changed or reordered in the FIFO"
