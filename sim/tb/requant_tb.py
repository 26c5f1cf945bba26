"""cocotb bench for ``hw.requant.Requantizer``: drive packed beats, record what comes out.

Reads ``CASE``, an .npz with

- ``words``: (beats, bytes) uint8, the little-endian ``i.payload`` of each beat;
- ``segments``: (k, 3) float, ``(beats, p_gap, p_stall)`` per segment: the beats are sent
  in that order, each segment with its own probability of a valid gap on ``i`` and of a
  ready stall on ``o`` per cycle, and drained before the next starts;
- ``seed``: for the backpressure generators.

Writes ``OUT``, an .npz with ``outputs`` ((beats, lanes) int8, in arrival order) and
``cycles`` (per segment, from its first cycle to its last output). Lane count and payload
widths come from the DUT; the comparison with the golden model is the caller's.
"""

import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly


class TB:
    """Owns clock, reset, the source on ``i`` and the sink on ``o`` of one Requantizer."""

    def __init__(self, dut, seed):
        self.dut = dut
        self.rng = np.random.default_rng(seed)
        self.lanes = len(dut.o__payload) // 8
        self.in_bytes = (len(dut.i__payload) + 7) // 8
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    async def reset(self):
        dut = self.dut
        dut.i__valid.value = 0
        dut.o__ready.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0

    async def segment(self, words, p_gap, p_stall, limit):
        """Send ``words`` (Python ints) and return (outputs, cycles).

        Inputs change on the falling edge; handshakes are read in the ReadOnly phase after
        that, which is exactly what the next rising edge samples.
        """
        dut, rng = self.dut, self.rng
        sent, presenting, outputs = 0, False, []
        for cycle in range(limit):
            await FallingEdge(dut.clk)
            if not presenting and sent < len(words) and rng.random() >= p_gap:
                dut.i__payload.value = words[sent]
                presenting = True
            dut.i__valid.value = int(presenting)
            dut.o__ready.value = int(rng.random() >= p_stall)
            await ReadOnly()
            if presenting and dut.i__ready.value:
                sent += 1
                presenting = False
            if dut.o__valid.value and dut.o__ready.value:
                outputs.append(dut.o__payload.value.to_unsigned())
                if len(outputs) == len(words):
                    return outputs, cycle + 1
        raise AssertionError(f"only {len(outputs)} of {len(words)} beats in {limit} cycles")

    async def expect_idle(self, cycles):
        """With ``o`` ready and nothing sent, nothing may come out (no duplicated beat)."""
        dut = self.dut
        for _ in range(cycles):
            await FallingEdge(dut.clk)
            dut.i__valid.value = 0
            dut.o__ready.value = 1
            await ReadOnly()
            assert not dut.o__valid.value, "a beat came out that was never sent"


@cocotb.test()
async def requantize(dut):
    case = np.load(os.environ["CASE"])
    tb = TB(dut, int(case["seed"]))
    words = case["words"]
    assert words.shape[1] == tb.in_bytes, (
        f"case has {words.shape[1]}-byte beats, DUT payload needs {tb.in_bytes}")
    words = [int.from_bytes(row.tobytes(), "little") for row in words]
    await tb.reset()
    outputs, cycles, start = [], [], 0
    for beats, p_gap, p_stall in case["segments"].tolist():
        chunk = words[start:start + int(beats)]
        start += int(beats)
        limit = 50 * len(chunk) + 1000
        got, n = await tb.segment(chunk, p_gap, p_stall, limit)
        outputs += got
        cycles.append(n)
        await tb.expect_idle(16)
    raw = b"".join(w.to_bytes(tb.lanes, "little") for w in outputs)
    np.savez(os.environ["OUT"], outputs=np.frombuffer(raw, np.int8).reshape(-1, tb.lanes),
             cycles=np.array(cycles))
