"""cocotb bench for ``hw.array.SystolicArray``: drive packed beats, record the rows that come out.

Reads ``CASE``, an .npz with

- ``words``: (beats, R + C + 1) uint8, the little-endian ``i.payload`` of each beat
  (``a`` lanes, ``b`` lanes, then a byte holding ``last``);
- ``cols``: C, to split ``o.payload`` into lanes;
- ``segments``: (k, 4) float, ``(beats, rows_out, p_gap, p_stall)`` per segment: the beats
  are sent in order, each segment with its own probability of a valid gap on ``i`` and of
  a ready stall on ``o`` per cycle, and its ``rows_out`` rows drained before the next
  segment starts;
- ``seed``: for the gap and stall generators.

Writes ``OUT``, an .npz with ``rows`` ((rows, C) int64, in arrival order) and ``cycles``
(per segment, from its first cycle to its last row). Payload widths come from the DUT; the
comparison with the golden model is the caller's.
"""

import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly


class TB:
    """Owns clock, reset, the source on ``i`` and the sink on ``o`` of one SystolicArray."""

    def __init__(self, dut, cols, seed):
        self.dut = dut
        self.rng = np.random.default_rng(seed)
        self.cols = cols
        out_bits = len(dut.o__payload)
        assert out_bits % cols == 0, f"o.payload has {out_bits} bits, not {cols} lanes"
        self.acc_width = out_bits // cols
        self.in_bytes = (len(dut.i__payload) + 7) // 8
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    async def reset(self):
        dut = self.dut
        dut.i__valid.value = 0
        dut.o__ready.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0

    def lanes(self, word):
        mask, half = (1 << self.acc_width) - 1, 1 << (self.acc_width - 1)
        return [((word >> (self.acc_width * c) & mask) ^ half) - half for c in range(self.cols)]

    async def segment(self, words, rows_out, p_gap, p_stall, limit):
        """Send ``words`` (Python ints), take ``rows_out`` rows; return (rows, cycles).

        Inputs change on the falling edge; handshakes are read in the ReadOnly phase after
        that, which is exactly what the next rising edge samples.
        """
        dut, rng = self.dut, self.rng
        sent, presenting, rows = 0, False, []
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
                rows.append(self.lanes(dut.o__payload.value.to_unsigned()))
                if len(rows) == rows_out:
                    assert sent == len(words), "all rows came out before all beats went in"
                    return rows, cycle + 1
        raise AssertionError(f"only {len(rows)} of {rows_out} rows in {limit} cycles")

    async def expect_idle(self, cycles):
        """With ``o`` ready and nothing sent, nothing may come out (no duplicated row)."""
        dut = self.dut
        for _ in range(cycles):
            await FallingEdge(dut.clk)
            dut.i__valid.value = 0
            dut.o__ready.value = 1
            await ReadOnly()
            assert not dut.o__valid.value, "a row came out that no tile asked for"


@cocotb.test()
async def tiles(dut):
    case = np.load(os.environ["CASE"])
    tb = TB(dut, int(case["cols"]), int(case["seed"]))
    words = case["words"]
    assert words.shape[1] == tb.in_bytes, (
        f"case has {words.shape[1]}-byte beats, DUT payload needs {tb.in_bytes}")
    words = [int.from_bytes(row.tobytes(), "little") for row in words]
    await tb.reset()
    rows, cycles, start = [], [], 0
    for beats, rows_out, p_gap, p_stall in case["segments"].tolist():
        chunk = words[start:start + int(beats)]
        start += int(beats)
        limit = 50 * (len(chunk) + int(rows_out)) + 1000
        got, n = await tb.segment(chunk, int(rows_out), p_gap, p_stall, limit)
        rows += got
        cycles.append(n)
        await tb.expect_idle(100)
    np.savez(os.environ["OUT"], rows=np.array(rows, dtype=np.int64).reshape(-1, tb.cols),
             cycles=np.array(cycles))
