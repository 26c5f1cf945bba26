"""cocotb bench that only clocks the design: the simulation speed with no testbench activity.

Reads ``CYCLES``; resets the design, holds every input stream idle (``*valid`` low,
``*ready`` high) and awaits ``CYCLES`` clock cycles in one trigger. Writes ``OUT``, an .npz
with ``cycles`` and ``wall`` (seconds for those cycles, reset excluded).
"""

import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles


@cocotb.test()
async def idle(dut):
    cycles = int(os.environ["CYCLES"])
    for name in ("i__valid", "o__ready"):
        if hasattr(dut, name):
            getattr(dut, name).value = int(name.endswith("ready"))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    started = time.perf_counter()
    await ClockCycles(dut.clk, cycles)
    np.savez(os.environ["OUT"], cycles=cycles, wall=time.perf_counter() - started)
