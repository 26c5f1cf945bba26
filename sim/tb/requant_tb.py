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

from sim.tb.stream_tb import StreamTB


@cocotb.test()
async def requantize(dut):
    case = np.load(os.environ["CASE"])
    tb = StreamTB(dut, int(case["seed"]))
    lanes = len(dut.o__payload) // 8
    words = tb.beats(case["words"])
    await tb.reset()
    outputs, cycles, start = [], [], 0
    for beats, p_gap, p_stall in case["segments"].tolist():
        chunk = words[start:start + int(beats)]
        start += int(beats)
        limit = 50 * len(chunk) + 1000
        got, n = await tb.segment(chunk, len(chunk), p_gap, p_stall, limit)
        outputs += got
        cycles.append(n)
        await tb.expect_idle(16)
    raw = b"".join(w.to_bytes(lanes, "little") for w in outputs)
    np.savez(os.environ["OUT"], outputs=np.frombuffer(raw, np.int8).reshape(-1, lanes),
             cycles=np.array(cycles))
