"""cocotb bench for the harness self-test: a stream-less accumulator design.

Reads ``CASE`` (an .npz with ``a`` and ``cycles``), runs, writes ``OUT`` with ``total``;
``peek`` also reads the internal ``steps`` counter, which only a build that makes it public
lets a testbench reach.
"""

import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge


async def _accumulate(dut):
    case = np.load(os.environ["CASE"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    dut.a.value = int(case["a"])
    dut.en.value = 1
    await ClockCycles(dut.clk, int(case["cycles"]))
    dut.en.value = 0
    await RisingEdge(dut.clk)
    return {"total": int(dut.total.value)}


@cocotb.test()
async def accumulate(dut):
    np.savez(os.environ["OUT"], **await _accumulate(dut))


@cocotb.test()
async def peek(dut):
    out = await _accumulate(dut)
    np.savez(os.environ["OUT"], steps=int(dut.steps.value), **out)


@cocotb.test()
async def always_fails(dut):
    assert os.environ.get("EXPECT_FAIL") != "1", "failing on purpose"
