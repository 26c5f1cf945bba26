"""BankedBuffer against a Python model: random writes (with lane enables) and reads with
random read enables, for read latency 1 and 2, lane groups and the output register; the
read data is checked after every edge (it holds while the read enable is low)."""

import numpy as np
import pytest
from amaranth import signed
from amaranth.lib import data
from amaranth.sim import Simulator

from hw.buffers import BankedBuffer


@pytest.mark.parametrize("latency,group,granularity,depth,outreg", [
    (1, 1, 1, 8, False), (2, 1, 1, 8, False), (2, 3, 1, 6, False), (2, 2, None, 5, False),
    (2, 5, None, 4, False), (1, 1, 1, 8, True), (1, 1, None, 3, True), (2, 2, 1, 6, True),
])
def test_random_traffic_matches_a_model(latency, group, granularity, depth, outreg):
    lanes = 5
    shape = data.ArrayLayout(signed(8), lanes)
    dut = BankedBuffer(shape, depth, granularity=granularity, latency=latency, group=group,
                       output_register=outreg)
    assert dut.latency == latency + outreg
    rng = np.random.default_rng([latency, group, depth, outreg])
    cycles = 400
    mem = {}                                     # (bank, addr) -> list of lane values
    landing = []                                 # writes land `latency - 1` edges late
    mismatches = []
    checked = [0]

    async def bench(ctx):
        held = None                              # latency 2: the address read at the next
        sampled = None                           # enabled edge; output register: the word
        visible = None                           # read at the last one
        for _ in range(cycles):
            w_en = [int(v) for v in rng.integers(0, 2, lanes)] if granularity else \
                [int(rng.integers(0, 2))] * lanes
            w = (int(rng.integers(0, 2)), int(rng.integers(0, depth)),
                 [int(v) for v in rng.integers(-128, 128, lanes)], w_en)
            r_en = int(rng.random() < 0.7)
            r = (int(rng.integers(0, 2)), int(rng.integers(0, depth)))
            ctx.set(dut.w_bank, w[0])
            ctx.set(dut.w.addr, w[1])
            ctx.set(dut.w.data, w[2])
            ctx.set(dut.w.en, (sum(b << j for j, b in enumerate(w_en)) if granularity
                               else w_en[0]))
            ctx.set(dut.r_bank, r[0])
            ctx.set(dut.r.addr, r[1])
            ctx.set(dut.r.en, r_en)
            await ctx.tick()
            # At this edge an enabled read samples the memory before the edge's write.
            if r_en:
                address = r if latency == 1 else held
                word = None if address is None else list(mem.get(address, [None] * lanes))
                if outreg:
                    visible, sampled = sampled, word
                else:
                    visible = word
                held = r
            expected = visible
            landing.append(w)
            if len(landing) > latency - 1:
                bank, addr, values, en = landing.pop(0)
                word = mem.setdefault((bank, addr), [None] * lanes)
                for j in range(lanes):
                    if en[j]:
                        word[j] = values[j]
            if expected is not None:
                got = [int(x) for x in ctx.get(dut.r.data)]
                checked[0] += sum(e is not None for e in expected)
                if any(e is not None and e != g for e, g in zip(expected, got, strict=True)):
                    mismatches.append((expected, got))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert checked[0] > 2 * cycles and not mismatches, mismatches[:3]
