"""Width adapters between the host streams (``host_width`` bits a beat) and 32-bit words.

See "Words and beats" in ``docs/isa.md``: a narrow host sends a word as ``32 / host_width``
beats, lowest bits first; a wide host packs ``host_width / 32`` words a beat, lowest word in
the lowest bits, and every response is padded with zero words to a whole beat.
"""

from amaranth import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import HOST_WIDTHS

__all__ = ["WORD", "HostToWords", "WordsToHost"]

#: A response word; ``last`` marks the final word of a response (a wide host beat ends there).
WORD = data.StructLayout({"data": 32, "last": 1})


def _check_width(host_width):
    if host_width not in HOST_WIDTHS:
        raise ValueError(f"Host width must be one of {HOST_WIDTHS}, not {host_width!r}")


class HostToWords(wiring.Component):
    """Host beats in, 32-bit command words out, one word per cycle at most.

    Parameters
    ----------
    host_width : int
        Bits per host beat: 8, 16, 32, 64 or 128.

    Members
    -------
    i : :py:`In(stream.Signature(host_width))`
        Host beats.
    o : :py:`Out(stream.Signature(32))`
        Words, in order; a wide beat's zero padding comes out as zero words (NOPs).
    """

    def __init__(self, host_width):
        _check_width(host_width)
        self._host_width = host_width
        super().__init__({
            "i": In(stream.Signature(host_width)),
            "o": Out(stream.Signature(32)),
        })

    @property
    def host_width(self):
        return self._host_width

    def elaborate(self, platform):
        m = Module()
        w = self._host_width
        if w == 32:
            wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.o))
            return m

        if w < 32:
            beats = 32 // w
            shreg = Signal(32)
            count = Signal(range(beats))
            full = Signal()
            m.d.comb += [
                self.o.valid.eq(full),
                self.o.payload.eq(shreg),
                # Shifting in a beat would disturb the word on ``o`` until it is taken.
                self.i.ready.eq(~full | self.o.ready),
            ]
            with m.If(self.o.valid & self.o.ready):
                m.d.sync += full.eq(0)
            with m.If(self.i.valid & self.i.ready):
                m.d.sync += shreg.eq(self.i.payload.shift_left(32 - w)
                                     | shreg.shift_right(w))
                with m.If(count == beats - 1):
                    m.d.sync += [count.eq(0), full.eq(1)]
                with m.Else():
                    m.d.sync += count.eq(count + 1)
            return m

        words = w // 32
        beat = Signal(w)
        index = Signal(range(words))
        full = Signal()
        m.d.comb += [
            self.o.valid.eq(full),
            self.o.payload.eq(beat.word_select(index, 32)),
            self.i.ready.eq(~full | (self.o.ready & (index == words - 1))),
        ]
        with m.If(self.o.valid & self.o.ready):
            with m.If(index == words - 1):
                m.d.sync += [index.eq(0), full.eq(0)]
            with m.Else():
                m.d.sync += index.eq(index + 1)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [beat.eq(self.i.payload), full.eq(1)]
        return m


class WordsToHost(wiring.Component):
    """Response words in, host beats out.

    Parameters
    ----------
    host_width : int
        Bits per host beat: 8, 16, 32, 64 or 128.

    Members
    -------
    i : :py:`In(stream.Signature(WORD))`
        Response words; ``last`` closes a partially filled wide beat with zero words (it is
        ignored for ``host_width <= 32``).
    o : :py:`Out(stream.Signature(host_width))`
        Host beats.
    """

    def __init__(self, host_width):
        _check_width(host_width)
        self._host_width = host_width
        super().__init__({
            "i": In(stream.Signature(WORD)),
            "o": Out(stream.Signature(host_width)),
        })

    @property
    def host_width(self):
        return self._host_width

    def elaborate(self, platform):
        m = Module()
        w = self._host_width
        if w == 32:
            m.d.comb += [
                self.o.valid.eq(self.i.valid),
                self.o.payload.eq(self.i.payload.data),
                self.i.ready.eq(self.o.ready),
            ]
            return m

        if w < 32:
            beats = 32 // w
            shreg = Signal(32)
            count = Signal(range(beats))
            full = Signal()
            m.d.comb += [
                self.o.valid.eq(full),
                self.o.payload.eq(shreg[:w]),
                self.i.ready.eq(~full | (self.o.ready & (count == beats - 1))),
            ]
            with m.If(self.o.valid & self.o.ready):
                m.d.sync += shreg.eq(shreg.shift_right(w))
                with m.If(count == beats - 1):
                    m.d.sync += [count.eq(0), full.eq(0)]
                with m.Else():
                    m.d.sync += count.eq(count + 1)
            with m.If(self.i.valid & self.i.ready):
                m.d.sync += [shreg.eq(self.i.payload.data), full.eq(1)]
            return m

        words = w // 32
        beat = Signal(w)
        index = Signal(range(words))
        full = Signal()
        m.d.comb += [
            self.o.valid.eq(full),
            self.o.payload.eq(beat),
            self.i.ready.eq(~full | self.o.ready),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += full.eq(0)
        with m.If(self.i.valid & self.i.ready):
            with m.If(index == 0):
                # A fresh beat starts from zeros, which become the padding after ``last``.
                m.d.sync += beat.eq(self.i.payload.data)
            with m.Else():
                m.d.sync += beat.word_select(index, 32).eq(self.i.payload.data)
            with m.If((index == words - 1) | self.i.payload.last):
                m.d.sync += [index.eq(0), full.eq(1)]
            with m.Else():
                m.d.sync += index.eq(index + 1)
        return m
