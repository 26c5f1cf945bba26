"""One processing element of the output-stationary MAC array.

A PE multiplies the int8 activation arriving from the left by the int8 weight arriving
from the top and passes both operands on, one cycle later, to its right and lower
neighbours. The product leaves a two-stage multiplier (a DSP block with its own registers,
or logic: :mod:`hw.mul`) and is added to the accumulator, so no path holds more than one
of multiply and accumulate. The partial sum stays put. When the product of the step flagged
``last`` arrives, the finished sum ``acc + a * b`` moves to the ``result`` register and the
accumulator starts the next tile from zero in the same cycle, so tiles follow each other
without a bubble (see ``docs/architecture.md``).
"""

from amaranth.hdl import Cat, Module, Mux, ResetSignal, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .mul import LATENCY, Multiplier, check_impl
from .vendor import kept_register

__all__ = ["Operand", "PE", "pe_latency"]


def pe_latency(product_register=False):
    """:attr:`PE.latency`: the multiplier's stages, the optional product register and the
    accumulator."""
    return LATENCY + bool(product_register) + 1


#: One int8 operand with the flags of the step it belongs to.
Operand = data.StructLayout({
    "data": signed(8),
    "valid": 1,
    "last": 1,
})


class PE(wiring.Component):
    """Output-stationary int8 x int8 multiply-accumulate cell.

    A step happens in a cycle where both operands are valid (in a correctly skewed array
    they always are together); its flags are the operands' flags. The accumulator is
    ``acc_width`` bits wide and wraps modulo ``2 ** acc_width``; keeping a layer inside
    that range is the compiler's job (``../shared/ARITHMETIC.md``).

    Parameters
    ----------
    acc_width : int
        Accumulator bits, at least 16 (one int8 x int8 product).
    multiplier : {"dsp", "ecp5", "logic", "carry"}
        How the product is built (:class:`hw.mul.Multiplier`); the results are the same.
    replica : {None, "ecp5"}
        How the operands' flags and the step's flags are registered
        (:func:`hw.vendor.kept_register`): every PE on an anti-diagonal sees the same flags
        in the same cycles, and Yosys would merge their registers into one per
        anti-diagonal that drives PEs across the array. Also the ``family`` of a
        ``"carry"`` multiplier (ECP5 ``CCU2C`` cells, or their logic model). The results are
        the same.
    product_register : bool
        Register the product once more before the accumulator (one more cycle of
        :attr:`latency`): a DSP block sits in a row of DSP blocks that may lie far from
        the PE's logic, and the route from it then ends at a register, not after a carry
        chain.
    drain : bool
        Add the ``drain`` and ``drain_in`` ports.

    Members
    -------
    a : ``In(Operand)``
        Activation from the left.
    b : ``In(Operand)``
        Weight from the top.
    a_out : ``Out(Operand)``
        ``a`` delayed one cycle, to the PE on the right.
    b_out : ``Out(Operand)``
        ``b`` delayed one cycle, to the PE below.
    result : ``Out(signed(acc_width))``
        Sum of the last finished tile: ``sum_k a[k] * b[k]``, :attr:`latency` cycles after
        its ``last`` step was at the inputs. Holds its value until the next tile's, or until
        ``drain``.
    done : ``Out(1)``
        High for one cycle when ``result`` has just taken a new sum.
    drain_in : ``In(signed(acc_width))``
        Only with ``drain``: the value ``result`` takes instead when ``drain`` is high (the
        array's chain drain makes the ``result`` registers of a column a shift register).
    drain : ``In(1)``
        Only with ``drain``: ``result`` takes ``drain_in`` in this cycle, unless it takes a
        new sum.
    """

    def __init__(self, acc_width=32, *, multiplier="dsp", product_register=False,
                 replica=None, drain=False):
        if not isinstance(acc_width, int) or acc_width < 16:
            raise ValueError(f"acc_width must be an integer of at least 16, not {acc_width!r}")
        self._acc_width = acc_width
        check_impl(multiplier)
        self._multiplier = multiplier
        self._product_register = bool(product_register)
        self._replica = replica
        self._drain = bool(drain)
        members = {
            "a": In(Operand),
            "b": In(Operand),
            "a_out": Out(Operand),
            "b_out": Out(Operand),
            "result": Out(signed(acc_width)),
            "done": Out(1),
        }
        if self._drain:
            members.update(drain_in=In(signed(acc_width)), drain=In(1))
        super().__init__(members)

    @property
    def acc_width(self):
        return self._acc_width

    @property
    def multiplier(self):
        return self._multiplier

    @property
    def latency(self):
        """Cycles from a ``last`` step at the inputs to its sum on ``result``."""
        return pe_latency(self._product_register)

    def elaborate(self, platform):
        m = Module()
        m.submodules.mul = mul = Multiplier(signed(8), signed(8), impl=self._multiplier,
                                            family=self._replica)
        m.d.comb += [mul.a.eq(self.a.data), mul.b.eq(self.b.data)]

        product = mul.p
        if self._product_register:
            product = Signal.like(mul.p, name="product", reset_less=True)
            m.d.sync += product.eq(mul.p)

        # The step's flags travel beside its product through the multiplier's stages.
        step = self.a.valid & self.b.valid
        last = self.a.last & self.b.last
        for n in range(mul.latency + self._product_register):
            flags = kept_register(m, Cat(step, last), f"flags_{n}", family=self._replica,
                                  reset=True)
            step, last = flags[0], flags[1]

        total = Signal(signed(self._acc_width))
        # The domain's reset is folded into the accumulator's own clock enable and clear:
        # a register with two resets, one of them gated by the enable, keeps a multiplexer
        # per bit in front of it, while this form is exactly an iCE40 SB_DFFESR (enable
        # over synchronous reset) fed straight by the adder.
        acc = Signal(signed(self._acc_width), reset_less=True)
        reset = ResetSignal()
        m.d.comb += total.eq(acc + product)

        # Data registers have no reset (only the flags do): they are read only where the
        # flags say they are valid, and the domain's reset then reaches a few flip-flops
        # per PE instead of all of them.
        a_data = Signal.like(self.a.data, name="a_data", reset_less=True)
        b_data = Signal.like(self.b.data, name="b_data", reset_less=True)
        result = Signal.like(self.result, name="sum", reset_less=True)
        m.d.sync += [
            a_data.eq(self.a.data),
            b_data.eq(self.b.data),
            self.done.eq(step & last),
        ]
        m.d.comb += [self.a_out.data.eq(a_data), self.b_out.data.eq(b_data),
                     self.result.eq(result)]
        for port, out, name in ((self.a, self.a_out, "a_flags"), (self.b, self.b_out, "b_flags")):
            flags = kept_register(m, Cat(port.valid, port.last), name, family=self._replica,
                                  reset=True)
            m.d.comb += [out.valid.eq(flags[0]), out.last.eq(flags[1])]
        with m.If(step | reset):
            m.d.sync += acc.eq(Mux(last | reset, 0, total))
        with m.If(step & last):
            m.d.sync += result.eq(total)
        if self._drain:
            with m.Elif(self.drain):
                m.d.sync += result.eq(self.drain_in)

        return m
