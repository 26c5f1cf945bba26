# amaranth: UnusedElaboratable=no
"""SystolicArray on the Amaranth simulator: rtl(tiles) == golden.ops.gemm per tile."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.ops import gemm
from hw.array import DRAINS, SystolicArray

from .streams import recv, send

SHAPES = [(1, 1), (1, 4), (4, 1), (2, 3), (3, 5), (5, 3), (4, 4), (8, 8)]


def tile_lengths(rows, cols):
    """K = 1, 2, R-1, R, 3R+1 and max(R, C): short tiles, tiles at the spacing limit."""
    ks = [1, 2, rows - 1, rows, 3 * rows + 1, max(rows, cols)]
    return [k for k in ks if k >= 1]


def random_tile(rng, rows, cols, k):
    x = rng.integers(-128, 128, (rows, k)).astype(np.int8)
    w = rng.integers(-127, 128, (k, cols)).astype(np.int8)
    return x, w


def beats_of(tiles):
    for x, w in tiles:
        k = x.shape[1]
        for step in range(k):
            yield {"a": x[:, step].tolist(), "b": w[step].tolist(), "last": int(step == k - 1)}


def reference(x, w):
    expected = gemm(x, w.T)
    np.testing.assert_array_equal(expected, np.asarray(x, np.int64) @ w)
    return expected


def run(dut, tiles, *, seed=0, p_idle=0.0, p_stall=0.0, ready_after=0):
    """Stream ``tiles`` through ``dut``; return (rows, input log, output log).

    ``ready_after`` holds ``o.ready`` low for that many cycles first, to fill the FIFO.
    """
    rng = np.random.default_rng(seed)
    beats = list(beats_of(tiles))
    count = dut.rows * len(tiles)
    sent, taken, rows = [], [], []

    async def producer(ctx):
        await send(ctx, dut.i, beats, rng=rng, p_idle=p_idle, log=sent)

    async def consumer(ctx):
        if ready_after:
            await ctx.tick().repeat(ready_after)
        got = await recv(ctx, dut.o, count, rng=rng, p_stall=p_stall, log=taken)
        rows.extend([int(v) for v in row] for row in got)
        # Nothing more may come out.
        ctx.set(dut.o.ready, 1)
        for _ in range(dut.latency + dut.rows + 2):
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            assert not valid, "the array produced more rows than tiles asked for"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    taken = [t + ready_after for t in taken]
    return np.array(rows, dtype=np.int64), sent, taken


def check(dut, tiles, **kwargs):
    rows, sent, taken = run(dut, tiles, **kwargs)
    expected = np.concatenate([reference(x, w) for x, w in tiles])
    np.testing.assert_array_equal(rows, expected)
    return sent, taken


@pytest.mark.parametrize("drain", DRAINS)
@pytest.mark.parametrize("rows,cols", SHAPES, ids=[f"{r}x{c}" for r, c in SHAPES])
def test_random_tiles_with_bubbles_and_backpressure(rows, cols, drain):
    rng = np.random.default_rng(rows * 100 + cols)
    ks = tile_lengths(rows, cols)
    tiles = [random_tile(rng, rows, cols, k) for k in ks + ks[::-1] + list(rng.permutation(ks))]
    check(SystolicArray(rows, cols, drain=drain), tiles, seed=1, p_idle=0.3, p_stall=0.4)


@pytest.mark.parametrize("drain", DRAINS)
@pytest.mark.parametrize("product_register", [False, True])
@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 3), (4, 4), (3, 5)])
def test_random_tiles_full_rate(rows, cols, product_register, drain):
    rng = np.random.default_rng(7 + rows * cols)
    ks = tile_lengths(rows, cols)
    tiles = [random_tile(rng, rows, cols, k) for k in ks + list(rng.permutation(ks))]
    check(SystolicArray(rows, cols, product_register=product_register, drain=drain), tiles)


@pytest.mark.parametrize("drain", DRAINS)
@pytest.mark.parametrize("a,b", [(-128, -127), (127, 127), (-128, 127), (127, -127)])
def test_corners(a, b, drain):
    rows, cols, k = 4, 3, 200
    x = np.full((rows, k), a, np.int8)
    w = np.full((k, cols), b, np.int8)
    check(SystolicArray(rows, cols, drain=drain), [(x, w), (x[:, :5], w[:5]), (x, w)],
          p_stall=0.3)


def test_near_accumulator_limit():
    # acc_width 24 wraps at +-2**23: K = 516 full-scale products land within 1% of it.
    rows, cols, k = 2, 2, 2**23 // (128 * 127)
    x = np.full((rows, k), -128, np.int8)
    x[1] = 127
    w = np.full((k, cols), -127, np.int8)
    w[:, 1] = 127
    rows_out, _, _ = run(SystolicArray(rows, cols, acc_width=24), [(x, w)])
    expected = np.asarray(x, np.int64) @ w
    assert np.abs(expected).max() > 0.99 * 2**23
    np.testing.assert_array_equal(rows_out, expected)


@pytest.mark.parametrize("drain", DRAINS)
def test_no_loss_when_output_blocked(drain):
    # The reader sleeps while many short tiles arrive: the FIFO fills, i.ready must drop.
    rows, cols = 3, 4
    rng = np.random.default_rng(3)
    tiles = [random_tile(rng, rows, cols, int(k)) for k in rng.integers(1, 6, 40)]
    dut = SystolicArray(rows, cols, drain=drain)
    sent, _ = check(dut, tiles, ready_after=300, p_stall=0.5)
    assert sent[-1] >= 300, "input kept flowing although the output was blocked"


@pytest.mark.parametrize("drain", DRAINS)
@pytest.mark.parametrize("product_register", [False, True])
@pytest.mark.parametrize("rows,cols", [(1, 1), (4, 4), (3, 5), (5, 3), (8, 8)])
def test_one_beat_per_cycle(rows, cols, product_register, drain):
    # With K >= max(R, C) and no bubbles or backpressure nothing ever stalls: T tiles of K
    # beats take T * K cycles to enter and the last row leaves latency + R - 1 cycles later.
    dut = SystolicArray(rows, cols, product_register=product_register, drain=drain)
    rng = np.random.default_rng(rows + 10 * cols)
    for k in (max(rows, cols), max(rows, cols) + 3):
        n_tiles = 6
        tiles = [random_tile(rng, rows, cols, k) for _ in range(n_tiles)]
        sent, taken = check(dut, tiles)
        assert sent == list(range(n_tiles * k))
        assert taken[0] - sent[k - 1] == dut.latency
        assert taken[-1] == n_tiles * k - 1 + dut.latency + rows - 1
        assert taken == [sent[(t + 1) * k - 1] + dut.latency + r
                         for t in range(n_tiles) for r in range(rows)]


@pytest.mark.parametrize("drain", DRAINS)
@pytest.mark.parametrize("rows,cols", [(4, 4), (2, 5), (5, 2)])
def test_short_tiles_spaced(rows, cols, drain):
    # Tiles shorter than max(R, C) are spaced to one tile per max(R, C) cycles (the second
    # beat is taken at once into the input stage).
    dut = SystolicArray(rows, cols, drain=drain)
    rng = np.random.default_rng(5)
    tiles = [random_tile(rng, rows, cols, 1) for _ in range(8)]
    sent, _ = check(dut, tiles)
    assert np.diff(sent).tolist()[1:] == [dut.min_tile_spacing] * (len(tiles) - 2)


@pytest.mark.parametrize("kwargs,match", [
    ({"rows": 0, "cols": 4}, r"^rows must be an integer in 1\.\.64, not 0$"),
    ({"rows": 4, "cols": 65}, r"^cols must be an integer in 1\.\.64, not 65$"),
    ({"rows": 4, "cols": "4"}, r"^cols must be an integer in 1\.\.64, not '4'$"),
    ({"rows": 4, "cols": 4, "acc_width": 15}, r"^acc_width must be an integer of at least 16"),
    ({"rows": 4, "cols": 4, "lead": -1}, r"^lead must be None or a non-negative integer"),
    ({"rows": 4, "cols": 4, "drain": "tree"}, r"^drain must be 'select' or 'chain', not 'tree'$"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SystolicArray(**kwargs)


def test_interface():
    dut = SystolicArray(3, 5, acc_width=20)
    assert (dut.rows, dut.cols, dut.acc_width) == (3, 5, 20)
    assert len(dut.i.payload.a) == 3 and len(dut.i.payload.b) == 5
    assert len(dut.o.payload) == 5 and len(dut.o.payload[0]) == 20
    assert dut.latency == 5 + dut.pe_latency + 3
    # The chain shows row 0 once the bottom row's PE in the last column is done.
    assert SystolicArray(3, 5, drain="chain").latency == dut.latency + 3 - 1
    assert SystolicArray(3, 5, product_register=True).pe_latency == dut.pe_latency + 1


def test_mixed_multipliers_same_results():
    # A device with fewer DSP blocks than PEs builds the rest of the products in logic.
    rows, cols = 3, 4
    rng = np.random.default_rng(11)
    tiles = [random_tile(rng, rows, cols, k) for k in (1, 4, 9, 4, 2, 17)]
    multipliers = ["dsp", "logic", "carry"] * (rows * cols // 3)
    dut = SystolicArray(rows, cols, multipliers=multipliers)
    assert dut.multipliers == tuple(multipliers)
    check(dut, tiles, seed=2, p_idle=0.2, p_stall=0.2)


def test_bad_multipliers():
    with pytest.raises(ValueError, match=r"^multipliers must have 4 entries, not 3$"):
        SystolicArray(2, 2, multipliers=["dsp"] * 3)
    with pytest.raises(ValueError, match=r"^Multiplier must be one of"):
        SystolicArray(1, 1, multipliers=["fast"])


def run_producer(dut, tiles, *, seed=0, p_idle=0.0, p_stall=0.0, ready_after=0):
    """Stream ``tiles`` into an array built with ``lead``, keeping its rules as a producer
    does (:class:`hw.compute.ComputeEngine`): a ``last`` beat is issued only with R credits
    and ``max(R, C)`` cycles after the previous one, and is on ``i`` ``lead`` cycles after
    its issue. Returns (rows, cycles in which beats were issued, cycles of the rows)."""
    rng = np.random.default_rng(seed)
    beats = list(beats_of(tiles))
    rows, lead = dut.rows, dut.lead
    count = rows * len(tiles)
    issued, taken, got = [], [], []

    async def bench(ctx):
        credits, since_last = dut.fifo_depth, dut.min_tile_spacing
        line = []
        cycle = 0
        while len(got) < count:
            assert cycle < 50 * len(beats) + 1000, "the array stopped answering"
            beat = None
            if len(issued) < len(beats) and not rng.random() < p_idle:
                nxt = beats[len(issued)]
                if not nxt["last"] or (since_last >= dut.min_tile_spacing and credits >= rows):
                    beat = nxt
                    issued.append(cycle)
                    if nxt["last"]:
                        credits -= rows
                        since_last = 0
            line.append(beat)
            beat = line.pop(0) if len(line) > lead else None
            ctx.set(dut.i.valid, beat is not None)
            if beat is not None:
                ctx.set(dut.i.payload, beat)
            ready = cycle >= ready_after and not rng.random() < p_stall
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and ready:
                got.append([int(v) for v in payload])
                taken.append(cycle)
                credits += 1
            since_last += 1
            cycle += 1
        ctx.set(dut.i.valid, 0)
        for _ in range(dut.latency + rows + 2):
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            assert not valid, "the array produced more rows than tiles asked for"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    expected = np.concatenate([reference(x, w) for x, w in tiles])
    np.testing.assert_array_equal(np.array(got, dtype=np.int64), expected)
    return issued, taken


@pytest.mark.parametrize("drain", DRAINS)
@pytest.mark.parametrize("lead", [0, 3])
@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 3), (3, 5), (4, 4), (5, 2)])
def test_producer_keeps_the_rules(rows, cols, lead, drain):
    # Random bubbles and backpressure, tiles shorter and longer than max(R, C).
    rng = np.random.default_rng(rows * 10 + cols + lead)
    ks = tile_lengths(rows, cols)
    tiles = [random_tile(rng, rows, cols, k) for k in ks + ks[::-1] + list(rng.permutation(ks))]
    dut = SystolicArray(rows, cols, lead=lead, product_register=True, drain=drain)
    run_producer(dut, tiles, seed=2, p_idle=0.3, p_stall=0.4)


@pytest.mark.parametrize("drain", DRAINS)
@pytest.mark.parametrize("lead", [0, 4])
def test_producer_no_loss_when_output_blocked(lead, drain):
    # The reader sleeps while many short tiles are issued: the credits run out, and the
    # producer must wait for them.
    rows, cols = 3, 4
    rng = np.random.default_rng(4)
    tiles = [random_tile(rng, rows, cols, int(k)) for k in rng.integers(1, 6, 40)]
    dut = SystolicArray(rows, cols, lead=lead, drain=drain)
    issued, _ = run_producer(dut, tiles, ready_after=300, p_stall=0.5)
    assert issued[-1] >= 300, "beats kept being issued although the output was blocked"


@pytest.mark.parametrize("drain", DRAINS)
@pytest.mark.parametrize("lead", [0, 2, 5])
@pytest.mark.parametrize("rows,cols", [(1, 1), (4, 4), (3, 5), (5, 3), (8, 8)])
def test_producer_full_rate(rows, cols, lead, drain):
    # The FIFO's lead + 1 extra rows keep a full-rate stream from waiting for credits: with
    # K >= max(R, C) a beat is issued every cycle and rows leave at the array's latency.
    dut = SystolicArray(rows, cols, product_register=True, lead=lead, drain=drain)
    own = SystolicArray(rows, cols, product_register=True, drain=drain)
    assert dut.fifo_depth == own.fifo_depth + lead + 1
    rng = np.random.default_rng(rows + 10 * cols + lead)
    for k in (max(rows, cols), max(rows, cols) + 3):
        n_tiles = 6
        tiles = [random_tile(rng, rows, cols, k) for _ in range(n_tiles)]
        issued, taken = run_producer(dut, tiles)
        assert issued == list(range(n_tiles * k))
        assert taken == [issued[(t + 1) * k - 1] + lead + dut.latency + r
                         for t in range(n_tiles) for r in range(rows)]


@pytest.mark.parametrize("drain", DRAINS)
@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 5), (5, 2)])
def test_column_fifo(rows, cols, drain):
    # The output FIFO as one memory per column, each with its own pointers: the same rows
    # under bubbles and backpressure, with the array's rules and with the producer's, and
    # with the output blocked until the FIFO is full; the latency does not change.
    rng = np.random.default_rng(rows * 7 + cols)
    ks = tile_lengths(rows, cols)
    tiles = [random_tile(rng, rows, cols, k) for k in ks + ks[::-1] + list(rng.permutation(ks))]
    dut = SystolicArray(rows, cols, drain=drain, fifo_columns=True)
    assert dut.latency == SystolicArray(rows, cols, drain=drain).latency
    sent, taken = check(dut, tiles, seed=3, p_idle=0.3, p_stall=0.4)
    # Cycle for cycle what the FIFO of whole rows does with the same stimulus.
    _, sent_rows, taken_rows = run(SystolicArray(rows, cols, drain=drain), tiles, seed=3,
                                   p_idle=0.3, p_stall=0.4)
    assert (sent, taken) == (sent_rows, taken_rows)
    short = [random_tile(rng, rows, cols, int(k)) for k in rng.integers(1, 6, 30)]
    sent, _ = check(SystolicArray(rows, cols, drain=drain, fifo_columns=True), short,
                    ready_after=200, p_stall=0.5)
    assert sent[-1] >= 200, "input kept flowing although the output was blocked"
    dut = SystolicArray(rows, cols, lead=2, product_register=True, drain=drain,
                        fifo_columns=True)
    run_producer(dut, tiles, seed=4, p_idle=0.3, p_stall=0.4)
