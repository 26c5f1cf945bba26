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

from sim.tb.stream_tb import StreamTB


class TB(StreamTB):
    """A StreamTB whose outputs are rows of C signed accumulators."""

    def __init__(self, dut, cols, seed):
        super().__init__(dut, seed)
        self.cols = cols
        out_bits = len(dut.o__payload)
        assert out_bits % cols == 0, f"o.payload has {out_bits} bits, not {cols} lanes"
        self.acc_width = out_bits // cols

    def lanes(self, word):
        mask, half = (1 << self.acc_width) - 1, 1 << (self.acc_width - 1)
        return [((word >> (self.acc_width * c) & mask) ^ half) - half for c in range(self.cols)]


@cocotb.test()
async def tiles(dut):
    case = np.load(os.environ["CASE"])
    tb = TB(dut, int(case["cols"]), int(case["seed"]))
    words = tb.beats(case["words"])
    await tb.reset()
    rows, cycles, start = [], [], 0
    for beats, rows_out, p_gap, p_stall in case["segments"].tolist():
        chunk = words[start:start + int(beats)]
        start += int(beats)
        limit = 50 * (len(chunk) + int(rows_out)) + 1000
        got, n = await tb.segment(chunk, int(rows_out), p_gap, p_stall, limit)
        rows += [tb.lanes(w) for w in got]
        cycles.append(n)
        await tb.expect_idle(100)
    np.savez(os.environ["OUT"], rows=np.array(rows, dtype=np.int64).reshape(-1, tb.cols),
             cycles=np.array(cycles))
