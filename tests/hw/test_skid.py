"""The stream register slice: order, no loss, full rate, and registered outputs."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.skid import Relay, SkidBuffer
from tests.hw.streams import recv, send


def run(payloads, *, p_idle, p_stall, seed, dut=None, sent_log=None, taken_log=None):
    """Stream ``payloads`` through ``dut`` (default: a 16-bit SkidBuffer) with random
    bubbles and backpressure; returns what came out and the DUT."""
    dut = SkidBuffer(16) if dut is None else dut
    rng = np.random.default_rng(seed)
    got = []

    async def source(ctx):
        await send(ctx, dut.i, payloads, rng=rng, p_idle=p_idle, log=sent_log)

    async def sink(ctx):
        got.extend(await recv(ctx, dut.o, len(payloads), rng=rng, p_stall=p_stall,
                              log=taken_log))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    return got, dut


@pytest.mark.parametrize("p_idle, p_stall", [(0, 0), (0.3, 0), (0, 0.5), (0.4, 0.4)])
def test_random_backpressure_keeps_every_beat_in_order(p_idle, p_stall):
    payloads = np.random.default_rng(1).integers(0, 1 << 16, 300).tolist()
    got, _ = run(payloads, p_idle=p_idle, p_stall=p_stall, seed=2)
    assert [int(v) for v in got] == payloads


def test_full_rate_with_one_cycle_latency():
    sent, taken = [], []
    payloads = list(range(50))
    got, dut = run(payloads, p_idle=0, p_stall=0, seed=0, sent_log=sent, taken_log=taken)
    assert [int(v) for v in got] == payloads
    assert sent == list(range(50))
    assert taken == [t + dut.latency for t in sent]


def accepted_while_stalled(dut, beats):
    """Offer ``beats`` beats to ``dut`` with its sink stalled; returns ``i.ready`` of
    each cycle, and checks that ``o`` holds the first beat."""
    accepted = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.valid, 1)
        for n in range(beats):
            ctx.set(dut.i.payload, n)
            _, _, ready = await ctx.tick().sample(dut.i.ready)
            accepted.append(ready)
        assert ctx.get(dut.o.valid) and ctx.get(dut.o.payload) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return accepted


def test_ready_does_not_depend_on_downstream_ready():
    """``i.ready`` is low only while the spare entry holds a beat: a stalled sink costs
    the source one accepted beat more, then it waits."""
    assert accepted_while_stalled(SkidBuffer(8), 5) == [1, 1, 0, 0, 0]


@pytest.mark.parametrize("stages, depth", [(1, None), (3, None), (4, None), (2, 1), (3, 4)])
@pytest.mark.parametrize("p_idle, p_stall", [(0, 0), (0.3, 0), (0, 0.5), (0.4, 0.4),
                                             (0, 0.9)])
def test_relay_keeps_every_beat_in_order(stages, depth, p_idle, p_stall):
    payloads = np.random.default_rng(stages).integers(0, 1 << 16, 300).tolist()
    got, _ = run(payloads, dut=Relay(16, stages, depth=depth), p_idle=p_idle,
                 p_stall=p_stall, seed=5 + stages)
    assert [int(v) for v in got] == payloads


@pytest.mark.parametrize("stages", [1, 2, 4, 6])
def test_relay_full_rate_at_its_latency(stages):
    sent, taken = [], []
    payloads = list(range(100))
    got, dut = run(payloads, dut=Relay(16, stages), p_idle=0, p_stall=0, seed=0,
                   sent_log=sent, taken_log=taken)
    assert [int(v) for v in got] == payloads
    assert sent == list(range(100))                 # one beat a cycle, never refused
    assert taken == [t + dut.latency for t in sent]
    assert dut.latency == stages + 2


def test_relay_one_credit_short_loses_rate_not_beats():
    """A FIFO one entry short of the round trip refuses beats now and then."""
    sent = []
    payloads = list(range(100))
    stages = 3
    got, _ = run(payloads, dut=Relay(16, stages, depth=Relay.full_rate_depth(stages) - 1),
                 p_idle=0, p_stall=0, seed=0, sent_log=sent)
    assert [int(v) for v in got] == payloads
    assert sent[-1] > 99


def test_relay_ready_is_its_credits():
    """With the sink stalled, the source gets exactly ``depth`` beats in, then waits."""
    dut = Relay(8, 3)
    assert accepted_while_stalled(dut, dut.depth + 4) == [1] * dut.depth + [0] * 4


@pytest.mark.parametrize("kwargs", [{"stages": 0}, {"stages": 2, "depth": 0},
                                    {"stages": 1.5}])
def test_relay_refuses_bad_parameters(kwargs):
    with pytest.raises(ValueError, match="must be a positive integer"):
        Relay(8, **kwargs)
