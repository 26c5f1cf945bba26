"""One processing element of the output-stationary MAC array.

A PE multiplies the int8 activation arriving from the left by the int8 weight arriving
from the top, adds the product to its accumulator, and passes both operands on, one cycle
later, to its right and lower neighbours. The partial sum stays put. When the step flagged
``last`` passes, the finished sum ``acc + a * b`` moves to the ``result`` register and the
accumulator starts the next tile from zero in the same cycle, so tiles follow each other
without a bubble (see ``docs/architecture.md``).
"""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Operand", "PE"]


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
        Sum of the last finished tile: ``sum_k a[k] * b[k]``. Holds its value until the
        next tile's ``last`` step.
    done : ``Out(1)``
        High for one cycle when ``result`` has just taken a new sum.
    """

    def __init__(self, acc_width=32):
        if not isinstance(acc_width, int) or acc_width < 16:
            raise ValueError(f"acc_width must be an integer of at least 16, not {acc_width!r}")
        self._acc_width = acc_width
        super().__init__({
            "a": In(Operand),
            "b": In(Operand),
            "a_out": Out(Operand),
            "b_out": Out(Operand),
            "result": Out(signed(acc_width)),
            "done": Out(1),
        })

    @property
    def acc_width(self):
        return self._acc_width

    @property
    def latency(self):
        """Cycles from a ``last`` step at the inputs to its sum on ``result``."""
        return 1

    def elaborate(self, platform):
        m = Module()

        acc = Signal(signed(self._acc_width))
        total = Signal(signed(self._acc_width))
        step = self.a.valid & self.b.valid
        m.d.comb += total.eq(acc + self.a.data * self.b.data)

        m.d.sync += [
            self.a_out.eq(self.a),
            self.b_out.eq(self.b),
            self.done.eq(step & self.a.last & self.b.last),
        ]
        with m.If(step):
            with m.If(self.a.last & self.b.last):
                m.d.sync += [
                    self.result.eq(total),
                    acc.eq(0),
                ]
            with m.Else():
                m.d.sync += acc.eq(total)

        return m
