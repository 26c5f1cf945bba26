"""A two-stage pipelined multiplier that is a DSP block or plain logic, as the build asks.

The same product, ``p = a * b``, comes out :attr:`Multiplier.latency` = 2 register stages
after its operands, whichever way it is built:

- ``"dsp"``: ``a * b`` between two registers. Yosys maps the product to a DSP block (a
  MULT18X18D on ECP5, an SB_MAC16 on iCE40, whose ``ice40_dsp`` pass also takes in the
  registers). This is also the form every simulator runs.
- ``"ecp5"``: an ECP5 ``MULT18X18D`` instance whose own input and output registers are the
  two stages, so no route to or from the DSP block lies on a register-to-register path in
  the fabric. Operands up to 18 bits (17 bits if unsigned).
- ``"logic"``: shift-and-add partial products in an adder tree, the first levels before the
  first register and the rest before the second, so Yosys never sees a multiplication and
  uses no DSP block for it.
- ``"carry"``: the same tree, but each pair of partial products ``a * b[i]`` and
  ``a * b[i+1] * 2`` is added in one carry chain whose LUTs form the partial products
  themselves (:func:`hw.vendor.carry_chain`): ECP5 ``CCU2C`` cells with ``family="ecp5"``,
  their logic model with None. An 8 x 8 product takes about half the logic of ``"logic"``.

Each stage has its own clock enable (``en[0]`` the operand stage, ``en[1]`` the product
stage), so a stalling pipeline can hold a product in place.
"""

from amaranth import ClockSignal, Instance, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .vendor import FAMILIES, carry_chain

__all__ = ["IMPLS", "LOGIC_IMPLS", "LATENCY", "Multiplier", "check_impl"]

IMPLS = ("dsp", "ecp5", "logic", "carry")
#: The implementations that use no DSP block.
LOGIC_IMPLS = ("logic", "carry")
#: Register stages from operands to product, the same for every ``impl``.
LATENCY = 2

_ECP5_WIDTH = 18


def check_impl(impl):
    if impl not in IMPLS:
        raise ValueError(f"Multiplier must be one of {', '.join(map(repr, IMPLS))}, "
                         f"not {impl!r}")


class Multiplier(wiring.Component):
    """``p = a * b`` with two register stages, as a DSP block or as logic.

    Parameters
    ----------
    a_shape, b_shape : shape-like
        Operand shapes (signed or unsigned).
    impl : {"dsp", "ecp5", "logic", "carry"}
        How the product is built (see the module docstring); every choice computes the same
        ``p`` in the same cycle.
    family : {None, "ecp5"}
        For ``"carry"``: the carry chain's cells are ECP5 ``CCU2C`` primitives, or (None)
        their logic model.

    Members
    -------
    a, b : ``In(a_shape)``, ``In(b_shape)``
        Operands, sampled by the first stage.
    en : ``In(2, init=0b11)``
        Clock enables of the operand (bit 0) and product (bit 1) stages.
    p : ``Out(signed or unsigned(len(a) + len(b)))``
        The exact product; signed if either operand is.
    """

    def __init__(self, a_shape, b_shape, *, impl="dsp", family=None):
        check_impl(impl)
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, not {family!r}")
        self._family = family
        a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
        if impl == "ecp5":
            for name, shape in (("a", a_shape), ("b", b_shape)):
                if shape.width + (not shape.signed) > _ECP5_WIDTH:
                    raise ValueError(f"Operand {name} of {shape!r} does not fit a MULT18X18D")
        self._impl = impl
        self._signed = a_shape.signed or b_shape.signed
        width = a_shape.width + b_shape.width
        super().__init__({
            "a": In(a_shape),
            "b": In(b_shape),
            "en": In(2, init=0b11),
            "p": Out(signed(width) if self._signed else unsigned(width)),
        })

    @property
    def impl(self):
        return self._impl

    @property
    def latency(self):
        """Register stages from ``a``, ``b`` to ``p``."""
        return LATENCY

    def elaborate(self, platform):
        m = Module()
        if self._impl == "dsp":
            # No reset: Yosys 0.70's ice40_dsp leaves registers with a synchronous reset
            # out of the SB_MAC16, in the fabric (64 flip-flops per 16 x 16 product). The
            # users of a multiplier ignore its product until valid operands have gone
            # through, so the registers' power-up contents do not matter.
            a = Signal.like(self.a, name="a_reg", reset_less=True)
            b = Signal.like(self.b, name="b_reg", reset_less=True)
            p = Signal.like(self.p, name="p_reg", reset_less=True)
            with m.If(self.en[0]):
                m.d.sync += [a.eq(self.a), b.eq(self.b)]
            with m.If(self.en[1]):
                m.d.sync += p.eq(a * b)
            m.d.comb += self.p.eq(p)
        elif self._impl == "ecp5":
            self._ecp5(m)
        else:
            self._logic(m)
        return m

    def _pairs(self, m):
        """The partial products ``a * b[i] * 2**i`` as (value, shift) rows, two per carry
        chain: ``a * b[i] + 2 * a * b[i+1]`` (minus, for a signed ``b``'s sign bit)."""
        a, b = self.a, self.b
        n = len(a)
        # The sum of two rows and its sign need len(a) + 2 bits, one more for unsigned ``a``.
        width = n + 2 + (not a.shape().signed)

        zero = (lambda p, q: 0, 0, 0)

        def bit(i, k):
            """Bit k of row i (``b[i] ? a : 0``, extended) as a term of two inputs."""
            if k < n or a.shape().signed:
                return (lambda p, q: p & q, a[min(k, n - 1)], b[i])
            return zero

        rows = []
        for i in range(0, len(b), 2):
            if i + 1 == len(b):
                row = Mux(b[i], a, 0)
                rows.append((-row if b.shape().signed else row, i))
                continue
            negate = b.shape().signed and i + 2 == len(b)
            bits = []
            for k in range(width):
                x = bit(i, k)
                f, p, q = bit(i + 1, k - 1) if k else zero
                # x - 2y = x + ~(2y) + 1 for the sign bit's row.
                y = (lambda p, q, f=f: 1 - f(p, q), p, q) if negate else (f, p, q)
                bits.append((x, y))
            total = carry_chain(m, bits, f"pair{i // 2}", cin=int(negate), family=self._family)
            rows.append((total.as_signed(), i))
        return rows

    def _ecp5(self, m):
        # Sign- or zero-extended to 18 bits: an unsigned operand's top bit is then 0, so the
        # block multiplies signed x signed whatever the operands are.
        a = Signal(signed(_ECP5_WIDTH), name="a_ext")
        b = Signal(signed(_ECP5_WIDTH), name="b_ext")
        m.d.comb += [a.eq(self.a), b.eq(self.b)]
        product = Signal(2 * _ECP5_WIDTH)
        ports = {}
        for n in range(_ECP5_WIDTH):
            ports[f"i_A{n}"] = a[n]
            ports[f"i_B{n}"] = b[n]
            ports[f"i_C{n}"] = 0
        for n in range(2 * _ECP5_WIDTH):
            ports[f"o_P{n}"] = product[n]
        for n in range(4):
            ports[f"i_CLK{n}"] = ClockSignal() if n == 0 else 0
            ports[f"i_RST{n}"] = 0
        ports["i_CE0"] = self.en[0]
        ports["i_CE1"] = self.en[1]
        ports["i_CE2"] = 0
        ports["i_CE3"] = 0
        m.submodules.dsp = Instance(
            "MULT18X18D",
            p_REG_INPUTA_CLK="CLK0", p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
            p_REG_INPUTB_CLK="CLK0", p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
            p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE1", p_REG_OUTPUT_RST="RST0",
            p_GSR="DISABLED", p_RESETMODE="SYNC",
            i_SIGNEDA=1, i_SIGNEDB=1, i_SOURCEA=0, i_SOURCEB=0,
            **ports)
        m.d.comb += self.p.eq(product[:len(self.p)])

    def _logic(self, m):
        # Rows a * b[i] * 2**i, the sign bit's row negated for a signed b (two's complement).
        a, b = self.a, self.b
        width = len(self.p)

        def register_shape(row):
            # "carry" keeps each row's own width (Yosys drops constant bits).
            return row.shape() if self._impl == "carry" else self.p.shape()

        if self._impl == "carry":
            # The first level of the tree is in the carry chains.
            levels = (len(b) - 1).bit_length()
            first = levels - levels // 2 - 1
            rows = [value << shift for value, shift in self._pairs(m)]
            levels -= 1
        else:
            rows = []
            for i in range(len(b)):
                row = Mux(b[i], a, 0)
                rows.append(-(row << i) if b.shape().signed and i == len(b) - 1 else row << i)
            levels = (len(rows) - 1).bit_length()
            first = levels - levels // 2
        for level in range(levels):
            if level == first:
                staged = []
                for n, row in enumerate(rows):
                    reg = Signal(register_shape(row), name=f"partial{n}", reset_less=True)
                    with m.If(self.en[0]):
                        m.d.sync += reg.eq(row)
                    staged.append(reg)
                rows = staged
            rows = [rows[n] + rows[n + 1] if n + 1 < len(rows) else rows[n]
                    for n in range(0, len(rows), 2)]
        if levels == 0 or first == levels:
            staged = Signal(register_shape(rows[0]), name="partial0", reset_less=True)
            with m.If(self.en[0]):
                m.d.sync += staged.eq(rows[0])
            rows = [staged]
        # No reset, as in the DSP block's registers (``elaborate``).
        p = Signal.like(self.p, name="p_reg", reset_less=True)
        with m.If(self.en[1]):
            m.d.sync += p.eq(rows[0][:width])
        m.d.comb += self.p.eq(p)
