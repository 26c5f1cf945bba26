# amaranth: UnusedElaboratable=no
"""UART receiver and transmitter on the Amaranth simulator: bit-level line model
(``line_bits``) against the gateware, with baud-rate error, idle gaps and backpressure."""

import numpy as np
import pytest
from amaranth import Module
from amaranth.sim import Simulator

from boards.uart import BAUD_TOLERANCE, MIN_DIVISOR, UartRx, UartTx, divisor
from tests.hw.streams import recv, send


def line_bits(byte, stop=1):
    """Reference 8N1 frame of ``byte``: start bit, 8 data bits LSB first, stop bit."""
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


def drive_line(payloads, div, rng, *, rate=1.0, stops=None):
    """Line level per clock cycle for ``payloads`` sent at ``rate`` x the nominal baud
    rate, with random idle time between bytes; ``stops``: stop bit of each byte."""
    levels = [1] * 5
    bit = div / rate
    t = 0.0
    for n, byte in enumerate(payloads):
        t += float(rng.integers(0, 3 * div))
        levels += [1] * (round(t) - len(levels) + 5)
        for b in line_bits(byte, 1 if stops is None else stops[n]):
            t += bit
            levels += [b] * (round(t) - len(levels) + 5)
    return levels + [1] * (3 * div)


def simulate_rx(div, levels):
    dut = UartRx(div)
    got, errors = [], []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for level in levels:
            ctx.set(dut.rx, level)
            _, _, valid, payload, error = await ctx.tick().sample(dut.o.valid, dut.o.payload,
                                                                  dut.error)
            if valid:
                got.append(payload)
            if error:
                errors.append(len(got))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got, errors


@pytest.mark.parametrize("div,rate", [(4, 1.0), (5, 1.0), (16, 1.0), (7, 1 + BAUD_TOLERANCE),
                                      (16, 1 - BAUD_TOLERANCE), (13, 1.015)])
def test_rx_receives_what_the_line_carries(div, rate):
    rng = np.random.default_rng(div)
    payloads = [0x00, 0xFF, 0x55, 0xAA, *rng.integers(0, 256, 60).tolist()]
    got, errors = simulate_rx(div, drive_line(payloads, div, rng, rate=rate))
    assert got == payloads
    assert errors == []


def test_rx_flags_a_zero_stop_bit_and_drops_that_byte():
    rng = np.random.default_rng(1)
    payloads = [0x12, 0x34, 0x56, 0x78]
    levels = drive_line(payloads, 6, rng, stops=[1, 0, 1, 1])
    got, errors = simulate_rx(6, levels)
    assert got == [0x12, 0x56, 0x78]
    assert errors == [1]


def test_rx_flags_an_overrun():
    dut = UartRx(4)
    levels = drive_line([1, 2, 3], 4, np.random.default_rng(0))
    seen = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)          # nobody takes the first byte
        for level in levels:
            ctx.set(dut.rx, level)
            _, _, error = await ctx.tick().sample(dut.error)
            seen.append(error)
        assert ctx.get(dut.o.valid) and ctx.get(dut.o.payload) == 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert sum(seen) == 2


@pytest.mark.parametrize("div", [4, 9])
def test_tx_line_is_8n1_back_to_back(div):
    """The transmitted line, sampled every cycle, is the reference frames back to back:
    ``div`` cycles a bit, no idle time while bytes keep coming."""
    dut = UartTx(div)
    payloads = [0xA5, 0x00, 0xFF, 0x3C]
    line = []

    async def source(ctx):
        await send(ctx, dut.i, payloads)

    async def monitor(ctx):
        for _ in range((len(payloads) * 10 + 4) * div):
            _, _, tx = await ctx.tick().sample(dut.tx)
            line.append(tx)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_testbench(monitor)
    sim.run()
    start = line.index(0)
    want = [b for p in payloads for b in line_bits(p) for _ in range(div)]
    assert line[start:start + len(want)] == want
    assert all(line[start + len(want):])


def test_tx_to_rx_with_bubbles():
    div = 5
    rng = np.random.default_rng(3)
    payloads = rng.integers(0, 256, 80).tolist()
    m = Module()
    m.submodules.tx = tx = UartTx(div)
    m.submodules.rx = rx = UartRx(div)
    m.d.comb += rx.rx.eq(tx.tx)
    got = []

    async def source(ctx):
        await send(ctx, tx.i, payloads, rng=rng, p_idle=0.3)

    async def sink(ctx):
        got.extend(await recv(ctx, rx.o, len(payloads)))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    assert got == payloads


def test_divisor():
    assert divisor(12e6, 3e6) == 4
    assert divisor(48e6, 3e6) == 16
    assert divisor(50e6, 115200) == 434
    with pytest.raises(ValueError, match="at least 12 MHz"):
        divisor(10e6, 3e6)
    with pytest.raises(ValueError, match="misses"):
        divisor(25e6, 3e6)      # 25 / 8 = 3.125 Mbaud, 4.2 % off
    with pytest.raises(ValueError, match="divisor must be"):
        UartRx(MIN_DIVISOR - 1)
