"""8N1 UART receiver and transmitter, one byte stream each way.

The bit time is a whole number of clock cycles, ``divisor`` (:func:`divisor` picks it from
the clock and the baud rate and refuses a rate the clock cannot divide within tolerance).
"""

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MIN_DIVISOR", "BAUD_TOLERANCE", "divisor", "UartRx", "UartTx"]

#: Fewest clock cycles per bit: the receiver samples in the middle of a bit and needs a
#: cycle on either side of that sample to absorb the edge's synchronizer jitter.
MIN_DIVISOR = 4
#: Largest relative error of the divided baud rate: an 8N1 receiver samples the stop bit
#: 9.5 bit times after the start edge, so 2 % on each side keeps the sample inside it.
BAUD_TOLERANCE = 0.02


def divisor(clk_freq, baud):
    """Clock cycles per bit for ``baud`` at ``clk_freq`` Hz.

    Raises
    ------
    ValueError
        If the clock gives fewer than :data:`MIN_DIVISOR` cycles per bit, or the nearest
        whole divisor misses ``baud`` by more than :data:`BAUD_TOLERANCE`.
    """
    if not baud > 0 or not clk_freq > 0:
        raise ValueError(f"clock and baud rate must be positive, not {clk_freq!r} and {baud!r}")
    div = round(clk_freq / baud)
    if div < MIN_DIVISOR:
        raise ValueError(f"baud rate {baud:g} needs a clock of at least "
                         f"{MIN_DIVISOR * baud / 1e6:g} MHz, not {clk_freq / 1e6:g} MHz")
    error = abs(clk_freq / div - baud) / baud
    if error > BAUD_TOLERANCE:
        raise ValueError(f"{clk_freq / 1e6:g} MHz / {div} = {clk_freq / div:.0f} baud misses "
                         f"{baud:g} baud by {100 * error:.1f} % (at most "
                         f"{100 * BAUD_TOLERANCE:g} %)")
    return div


def _check_divisor(div):
    if not isinstance(div, int) or div < MIN_DIVISOR:
        raise ValueError(f"divisor must be an integer of at least {MIN_DIVISOR}, not {div!r}")


class UartRx(wiring.Component):
    """UART receiver, 8 data bits, no parity, one stop bit, LSB first.

    A line cannot be held back: a received byte waits in ``o`` until taken, and a byte that
    completes while the previous one is still waiting is dropped and flagged.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Members
    -------
    rx : :py:`In(1, init=1)`
        The serial line (asynchronous; synchronized inside).
    o : :py:`Out(stream.Signature(8))`
        Received bytes.
    error : :py:`Out(1)`
        One-cycle pulse: a stop bit was 0 (framing error or break), or a byte was dropped
        because ``o`` was still full (overrun).
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    error: Out(1)

    def __init__(self, divisor):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__()

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        sync = Signal(2, init=0b11)
        m.d.sync += sync.eq(Cat(self.rx, sync[0]))
        line = sync[1]
        timer = Signal(range(div))
        bits = Signal(range(8))
        shreg = Signal(8)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(div - 1), bits.eq(0)]
                    # A start bit that is gone by its middle was a glitch.
                    with m.If(line):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(div - 1), shreg.eq(Cat(shreg[1:], line)),
                                 bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    # Back to IDLE in the middle of the stop bit, so that a start bit that
                    # follows right away is seen from its edge.
                    m.next = "IDLE"
                    with m.If(~line | (self.o.valid & ~self.o.ready)):
                        m.d.comb += self.error.eq(1)
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
        return m


class UartTx(wiring.Component):
    """UART transmitter, 8N1, LSB first; back-to-back bytes leave no idle time between them.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Members
    -------
    i : :py:`In(stream.Signature(8))`
        Bytes to send.
    tx : :py:`Out(1, init=1)`
        The serial line, driven from a register.
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__()

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        timer = Signal(range(div))
        bits = Signal(range(10))
        shreg = Signal(9)   # 8 data bits and the stop bit still to send
        sending = Signal()

        # The cycle the stop bit ends may already load the next byte.
        m.d.comb += self.i.ready.eq(~sending | ((bits == 9) & (timer == 0)))
        with m.If(sending):
            m.d.sync += timer.eq(timer - 1)
            with m.If(timer == 0):
                m.d.sync += [timer.eq(div - 1), self.tx.eq(shreg[0]), shreg.eq(shreg[1:]),
                             bits.eq(bits + 1)]
                with m.If(bits == 9):
                    m.d.sync += [sending.eq(0), self.tx.eq(1)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [sending.eq(1), self.tx.eq(0), timer.eq(div - 1), bits.eq(0),
                         shreg.eq(Cat(self.i.payload, Const(1, 1)))]
        return m
