"""A register slice for streams: every output and ``i.ready`` come straight from registers."""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer"]


class SkidBuffer(wiring.Component):
    """Two-entry stream register slice (a skid buffer).

    ``o.valid`` and ``o.payload`` are registers and ``i.ready`` is the inverse of a register
    (the spare entry is empty), so the slice cuts every combinational path between the two
    sides, in both directions, at full rate: one beat per cycle while ``o.ready`` is high,
    and a beat offered while ``o`` stalls waits in the spare entry. Beats keep their order;
    none is lost or repeated under any backpressure. Latency: one cycle.

    Parameters
    ----------
    shape : shape-like
        The payload.

    Members
    -------
    i : :py:`In(stream.Signature(shape))`
    o : :py:`Out(stream.Signature(shape))`
    """

    def __init__(self, shape):
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
        })

    @property
    def latency(self):
        """Cycles from a beat's transfer on ``i`` to its presentation on ``o``."""
        return 1

    def elaborate(self, platform):
        m = Module()
        spare = Signal.like(self.i.payload)
        spare_valid = Signal()
        incoming = self.i.valid & ~spare_valid
        m.d.comb += self.i.ready.eq(~spare_valid)
        with m.If(~self.o.valid | self.o.ready):
            with m.If(spare_valid):
                m.d.sync += [self.o.payload.eq(spare), self.o.valid.eq(1), spare_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(incoming)]
        with m.Elif(incoming):
            m.d.sync += [spare.eq(self.i.payload), spare_valid.eq(1)]
        return m
