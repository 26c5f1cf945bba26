"""A cocotb bench for one-in, one-out stream components (``i`` -> ``o``, Amaranth naming).

Owns the clock and reset, a source on ``i`` with random valid gaps and a sink on ``o`` with
random ready stalls. Inputs change on the falling edge; handshakes are read in the ReadOnly
phase after it, which is exactly what the next rising edge samples.
"""

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly


class StreamTB:
    def __init__(self, dut, seed):
        self.dut = dut
        self.rng = np.random.default_rng(seed)
        self.in_bytes = (len(dut.i__payload) + 7) // 8
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    async def reset(self):
        dut = self.dut
        dut.i__valid.value = 0
        dut.o__ready.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0

    def beats(self, case_words):
        """(beats, bytes) uint8 little-endian payloads -> Python ints, width-checked."""
        assert case_words.shape[1] == self.in_bytes, (
            f"case has {case_words.shape[1]}-byte beats, DUT payload needs {self.in_bytes}")
        return [int.from_bytes(row.tobytes(), "little") for row in case_words]

    async def segment(self, words, n_out, p_gap, p_stall, limit):
        """Send ``words`` (ints), take ``n_out`` outputs; return (unsigned ints, cycles)."""
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
                if len(outputs) == n_out:
                    assert sent == len(words), "all outputs came out before all beats went in"
                    return outputs, cycle + 1
        raise AssertionError(f"only {len(outputs)} of {n_out} outputs in {limit} cycles")

    async def expect_idle(self, cycles):
        """With ``o`` ready and nothing sent, nothing may come out (no duplicated beat)."""
        dut = self.dut
        for _ in range(cycles):
            await FallingEdge(dut.clk)
            dut.i__valid.value = 0
            dut.o__ready.value = 1
            await ReadOnly()
            assert not dut.o__valid.value, "an output came out that no input asked for"
