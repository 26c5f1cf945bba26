"""Register slices for streams: every output and ``i.ready`` come from registers.

:class:`SkidBuffer` cuts a stream's combinational paths in one cycle; :class:`Relay` carries
a stream over a long distance through plain registers, with credits for flow control.
"""

from amaranth import Module, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer", "Relay"]


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
        # The payload registers have no reset, only the valid flags.
        spare = Signal.like(self.i.payload, reset_less=True)
        payload = Signal.like(self.o.payload, name="payload", reset_less=True)
        spare_valid = Signal()
        incoming = self.i.valid & ~spare_valid
        m.d.comb += [self.i.ready.eq(~spare_valid), self.o.payload.eq(payload)]
        with m.If(~self.o.valid | self.o.ready):
            with m.If(spare_valid):
                m.d.sync += [payload.eq(spare), self.o.valid.eq(1), spare_valid.eq(0)]
            with m.Else():
                m.d.sync += [payload.eq(self.i.payload), self.o.valid.eq(incoming)]
        with m.Elif(incoming):
            m.d.sync += [spare.eq(self.i.payload), spare_valid.eq(1)]
        return m


class Relay(wiring.Component):
    """A stream carried through ``stages`` plain registers each way, with credit flow control.

    A :class:`SkidBuffer` keeps its spare entry beside its input and its output register
    beside its output, so when the two ends of a stream lie far apart (a host port on the
    pins at one edge of the die, the controller in its middle) one route of the slice spans
    the whole distance. Here the beats travel through ``stages`` registers that have no
    enable and no logic in front of them (the placer can spread them along the way), into a
    FIFO at the far end; the FIFO's reads return as credits through ``stages`` more
    registers. The sending end offers ``i.ready`` while it holds a credit, so the FIFO never
    overflows, whatever the backpressure on ``o``; beats keep their order, none is lost or
    repeated. With the default depth the relay passes one beat per cycle.

    ``o.valid`` and ``o.payload`` are the FIFO's output registers; ``i.ready`` is a
    comparison of the sending end's credit counter.

    Parameters
    ----------
    shape : shape-like
        The payload.
    stages : int
        Registers on the way there (and as many for the credits on the way back), at least 1.
    depth : int or None
        FIFO entries (and credits). Default: :meth:`full_rate_depth`, the fewest that keep
        one beat per cycle.

    Members
    -------
    i : :py:`In(stream.Signature(shape))`
    o : :py:`Out(stream.Signature(shape))`
    """

    #: Cycles from a write into the FIFO to its entry on ``o`` (SyncFIFOBuffered).
    _FIFO_LATENCY = 2

    def __init__(self, shape, stages, *, depth=None):
        if depth is None and isinstance(stages, int):
            depth = self.full_rate_depth(stages)
        for name, value in (("stages", stages), ("depth", depth)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                self._MustUse__silence = True   # never elaborated: no "unused" warning
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self._stages = stages
        self._depth = depth
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
        })

    @classmethod
    def full_rate_depth(cls, stages):
        """Credits that cover a beat's round trip: ``stages`` registers there, the FIFO's
        latency, ``stages`` registers back and the counter's own register."""
        return 2 * stages + cls._FIFO_LATENCY + 1

    @property
    def stages(self):
        return self._stages

    @property
    def depth(self):
        return self._depth

    @property
    def latency(self):
        """Cycles from a beat's transfer on ``i`` to its presentation on ``o`` (when the
        FIFO is empty)."""
        return self._stages + self._FIFO_LATENCY

    def elaborate(self, platform):
        m = Module()
        raw = Value.cast(self.i.payload)
        width = len(raw)
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=width, depth=self._depth)

        credits = Signal(range(self._depth + 1), init=self._depth)
        returned = Signal()
        taken = Signal()
        m.d.comb += [
            self.i.ready.eq(credits != 0),
            taken.eq(self.i.valid & self.i.ready),
        ]
        m.d.sync += credits.eq(credits - taken + returned)

        # There: plain registers, the payload without an enable, the valid flag reset.
        payload, valid = raw, taken
        for n in range(self._stages):
            next_payload = Signal(width, name=f"there_payload_{n}", reset_less=True)
            next_valid = Signal(name=f"there_valid_{n}")
            m.d.sync += [next_payload.eq(payload), next_valid.eq(valid)]
            payload, valid = next_payload, next_valid
        m.d.comb += [fifo.w_data.eq(payload), fifo.w_en.eq(valid)]

        m.d.comb += [
            self.o.payload.eq(fifo.r_data),
            self.o.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.o.ready),
        ]
        # Back: one credit per beat read.
        credit = self.o.valid & self.o.ready
        for n in range(self._stages):
            next_credit = Signal(name=f"back_credit_{n}")
            m.d.sync += next_credit.eq(credit)
            credit = next_credit
        m.d.comb += returned.eq(credit)
        return m
