# amaranth: UnusedElaboratable=no
"""PE on the Amaranth simulator: every finished tile's ``result`` == its int64 dot product."""

import re

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.pe import PE

# Every multiplier the simulator can run; "ecp5" is a vendor primitive ("carry" runs as
# the logic model of its CCU2C cells).
MULTIPLIERS = ["dsp", "logic", "carry"]


def wrap(value, width):
    """``value`` modulo ``2 ** width`` as a signed integer, the accumulator's arithmetic."""
    half = 1 << (width - 1)
    return (int(value) + half) % (1 << width) - half


def steps_of(tiles, rng, p_idle):
    """Per-cycle operand pairs: each tile's steps, with random invalid cycles in between."""
    for a, b in tiles:
        for k in range(len(a)):
            while rng.random() < p_idle:
                # An invalid step carries garbage that must not be accumulated.
                junk = {"data": int(rng.integers(-128, 128)), "valid": 0,
                        "last": int(rng.integers(2))}
                yield junk, junk
            last = int(k == len(a) - 1)
            yield ({"data": int(a[k]), "valid": 1, "last": last},
                   {"data": int(b[k]), "valid": 1, "last": last})


def run(pe, tiles, *, seed=0, p_idle=0.0):
    """Drive ``tiles`` (pairs of 1-D int arrays) through ``pe``; return the sums it reports."""
    rng = np.random.default_rng(seed)
    results = []

    async def bench(ctx):
        for a, b in steps_of(tiles, rng, p_idle):
            ctx.set(pe.a, a)
            ctx.set(pe.b, b)
            _, _, a_in, b_in = await ctx.tick().sample(pe.a, pe.b)
            # Registered pass-through: after the edge the outputs show what was at the inputs.
            assert ctx.get(pe.a_out) == a_in and ctx.get(pe.b_out) == b_in
            if ctx.get(pe.done):
                results.append(ctx.get(pe.result))
        ctx.set(pe.a.valid, 0)
        ctx.set(pe.b.valid, 0)
        # The last products are still in the multiplier; then nothing more may come.
        for _ in range(pe.latency + 3):
            await ctx.tick()
            if ctx.get(pe.done):
                results.append(ctx.get(pe.result))

    sim = Simulator(pe)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return results


def expected_sums(tiles, width=32):
    return [wrap(np.dot(np.asarray(a, np.int64), np.asarray(b, np.int64)), width)
            for a, b in tiles]


def random_tiles(rng, ks):
    return [(rng.integers(-128, 128, k), rng.integers(-127, 128, k)) for k in ks]


@pytest.mark.parametrize("product_register", [False, True])
@pytest.mark.parametrize("multiplier", MULTIPLIERS)
@pytest.mark.parametrize("p_idle", [0.0, 0.4])
def test_random_tiles(p_idle, multiplier, product_register):
    rng = np.random.default_rng(1)
    tiles = random_tiles(rng, [1, 1, 2, 3, 1, 17, 64, 5, 1, 200])
    pe = PE(multiplier=multiplier, product_register=product_register)
    assert pe.latency == 3 + product_register
    assert run(pe, tiles, seed=2, p_idle=p_idle) == expected_sums(tiles)


def test_back_to_back_single_steps():
    # `last` on every cycle: each product is its own tile and the accumulator restarts
    # from zero every time.
    rng = np.random.default_rng(3)
    tiles = random_tiles(rng, [1] * 50)
    assert run(PE(), tiles) == expected_sums(tiles)


@pytest.mark.parametrize("multiplier", MULTIPLIERS)
@pytest.mark.parametrize("a,b", [(-128, -127), (127, 127), (-128, 127), (127, -127), (-128, -128)])
def test_corners(a, b, multiplier):
    tiles = [([a] * 300, [b] * 300), ([a], [b]), ([a] * 7, [b] * 7)]
    assert run(PE(multiplier=multiplier), tiles) == expected_sums(tiles)


@pytest.mark.parametrize("acc_width", [16, 24])
def test_near_accumulator_limit(acc_width):
    # The largest K whose worst case still fits, at both signs.
    k = (2 ** (acc_width - 1) - 1) // (128 * 127)
    tiles = [([-128] * k, [-127] * k), ([-128] * k, [127] * k), ([127] * k, [127] * k)]
    sums = run(PE(acc_width), tiles)
    assert sums == expected_sums(tiles, 64)
    assert max(map(abs, sums)) > 0.99 * 2 ** (acc_width - 1)


def test_wraps_modulo_accumulator_width():
    # Overflow is the compiler's to prevent; the hardware wraps like the int register it is.
    tiles = [([-128] * 3, [-127] * 3), ([-128] * 3, [127] * 3)]
    sums = run(PE(16), tiles)
    assert sums == expected_sums(tiles, 16)
    assert sums != expected_sums(tiles, 64)


def test_result_holds_until_next_tile():
    pe = PE()
    seen = []

    async def bench(ctx):
        ctx.set(pe.a, {"data": -5, "valid": 1, "last": 1})
        ctx.set(pe.b, {"data": 7, "valid": 1, "last": 1})
        await ctx.tick()
        ctx.set(pe.a, {"data": 100, "valid": 1, "last": 0})
        ctx.set(pe.b, {"data": 100, "valid": 1, "last": 0})
        await ctx.tick().repeat(pe.latency - 1)
        for _ in range(5):
            seen.append(ctx.get(pe.result))
            await ctx.tick()

    sim = Simulator(pe)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [-35] * 5


@pytest.mark.parametrize("acc_width", [15, 0, "32", None])
def test_bad_acc_width(acc_width):
    with pytest.raises(ValueError, match=r"^acc_width must be an integer of at least 16, not "):
        PE(acc_width)


def test_interface():
    pe = PE(20)
    assert pe.acc_width == 20 and pe.latency == 3 and pe.multiplier == "dsp"
    assert len(pe.result) == 20 and pe.result.shape().signed
    assert len(pe.a.data) == 8 and pe.a.data.shape().signed


def test_ecp5_flag_registers_are_kept_vendor_flip_flops():
    # Every PE of an anti-diagonal has the same flags; as kept TRELLIS_FFs Yosys cannot
    # merge them across PEs. Two operand flags and two step flags per multiplier stage.
    from amaranth.back import verilog

    pe = PE(multiplier="ecp5", product_register=True, replica="ecp5")
    text = verilog.convert(pe, name="pe")
    kept = re.findall(r"\(\* keep = 32'd1 \*\)\s*(?:\(\* src = [^*]*\*\)\s*)?TRELLIS_FF",
                      text)
    # The multiplier's stages and the product register (latency - 1 stages before the
    # accumulator), two flags each, and the two flags of each operand passed on.
    assert len(kept) == 2 * (pe.latency - 1) + 2 * 2
    assert "TRELLIS_FF" not in verilog.convert(PE(multiplier="ecp5"), name="pe")
    with pytest.raises(ValueError, match="family"):
        elaborate_with_family("xilinx")


def elaborate_with_family(family):
    from amaranth import Module, Signal

    from hw.vendor import kept_register

    return kept_register(Module(), Signal(2), "x", family=family)
