# amaranth: UnusedElaboratable=no
"""Host width adapters on the Amaranth simulator, with random bubbles and backpressure:
``rtl(beats) == reference(beats)`` per ``docs/isa.md`` "Words and beats"."""

import numpy as np
import pytest
from amaranth import ClockDomain, Module
from amaranth.sim import Simulator

from hw.host import HostToWords, WordsToHost
from tests.hw.streams import recv, send

WIDTHS = (8, 16, 32, 64, 128)


def words_to_beats(words, width):
    """Reference: a word stream as host beats (no padding)."""
    if width <= 32:
        mask = (1 << width) - 1
        return [(w >> (width * n)) & mask for w in words for n in range(32 // width)]
    per = width // 32
    assert len(words) % per == 0
    return [sum(w << (32 * n) for n, w in enumerate(words[b:b + per]))
            for b in range(0, len(words), per)]


def responses_to_beats(responses, width):
    """Reference: each response padded with zero words to whole beats when width > 32."""
    per = max(1, width // 32)
    beats = []
    for words in responses:
        beats += words_to_beats(list(words) + [0] * (-len(words) % per), width)
    return beats


def clocked(dut):
    """``dut`` in a design with a ``sync`` domain (the 32-bit adapters are wires only)."""
    m = Module()
    m.domains.sync = ClockDomain()
    m.submodules.dut = dut
    return m


def simulate(dut, source, inputs, sink, count, *, seed, p_idle=0.3, p_stall=0.3):
    rng = np.random.default_rng(seed)
    out = []

    async def producer(ctx):
        await send(ctx, source, inputs, rng=rng, p_idle=p_idle)

    async def consumer(ctx):
        out.extend(await recv(ctx, sink, count, rng=rng, p_stall=p_stall))

    async def settle(ctx):
        # After the expected output: nothing more may come out (no duplicated word).
        while len(out) < count:
            await ctx.tick()
        ctx.set(sink.ready, 1)
        for _ in range(8):
            _, _, valid = await ctx.tick().sample(sink.valid)
            assert not valid, "an extra beat came out"

    sim = Simulator(clocked(dut))
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_testbench(settle)
    sim.run()
    return [int(v) for v in out]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("seed", [0, 1])
def test_host_to_words(width, seed):
    rng = np.random.default_rng(100 + seed)
    words = [int(v) for v in rng.integers(0, 1 << 32, size=24, dtype=np.uint64)]
    words[:2] = [0xFFFFFFFF, 0x80000001]
    dut = HostToWords(width)
    got = simulate(dut, dut.i, words_to_beats(words, width), dut.o, len(words), seed=seed)
    assert got == words


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("seed", [0, 1])
def test_words_to_host(width, seed):
    rng = np.random.default_rng(200 + seed)
    sizes = [1, 10, 4, 3, 2, 5, 1, 7]
    responses = [[int(v) for v in rng.integers(1, 1 << 32, size=n, dtype=np.uint64)]
                 for n in sizes]
    stream = [{"data": w, "last": int(n == len(words) - 1)}
              for words in responses for n, w in enumerate(words)]
    expected = responses_to_beats(responses, width)
    dut = WordsToHost(width)
    assert simulate(dut, dut.i, stream, dut.o, len(expected), seed=seed) == expected


@pytest.mark.parametrize("width", WIDTHS)
def test_full_rate_without_backpressure(width):
    """One word per cycle (narrow: one beat per cycle) when neither side stalls."""
    words = list(range(1, 33))
    beats = words_to_beats(words, width)
    dut = HostToWords(width)
    log = []
    rng = np.random.default_rng(0)

    async def producer(ctx):
        await send(ctx, dut.i, beats)

    async def consumer(ctx):
        assert [int(v) for v in await recv(ctx, dut.o, len(words), rng=rng, log=log)] == words

    sim = Simulator(clocked(dut))
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    assert log[-1] - log[0] <= max(len(words), len(beats))


@pytest.mark.parametrize("width", [12, 256, "32"])
def test_bad_width(width):
    for cls in (HostToWords, WordsToHost):
        with pytest.raises(ValueError, match="Host width must be one of"):
            cls(width)
