"""Double-banked on-chip buffers: one write port, one synchronous read port, two banks."""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["BankedBuffer", "bank_addr_width"]


def bank_addr_width(depth):
    """Width of an address within a bank of ``depth`` words (at least 1)."""
    return max(1, ceil_log2(depth))


class BankedBuffer(wiring.Component):
    """Two banks of ``depth`` words of ``shape``, in one simple dual-port memory.

    Bank ``b`` word ``a`` lives at ``b * depth + a`` of a :class:`~amaranth.lib.memory.Memory`
    of ``2 * depth`` words, so one write port and one synchronous read port (the shape of a
    block RAM) serve both banks: a loader fills one bank while the compute engine reads the
    other. Addresses are not checked here; the controller never issues one past ``depth``.

    Parameters
    ----------
    shape : shape-like
        One word, e.g. ``data.ArrayLayout(signed(8), R)``.
    depth : int
        Words per bank, at least 1.
    granularity : int or None
        Write granularity, as for :meth:`Memory.write_port`; with an ``ArrayLayout`` shape and
        granularity 1 every element has its own write enable.
    ram : {"block", "spram"}
        ``"block"``: one block-RAM memory for both banks (Yosys ``ram_style = "block"``).
        ``"spram"``: one single-ported memory per bank (``ram_style = "huge"``: the iCE40
        UP5K's SB_SPRAM256KA, 16K x 16 bits): each bank's one address is the write address
        while the bank is written, else the read address. The controller never writes the
        bank the compute engine reads (interlock, ``docs/isa.md``), so the two never meet.

    Members
    -------
    w_bank : :py:`In(1)`
        Bank written by ``w``.
    w : :py:`Out(WritePort.Signature(addr_width, shape, granularity))`
        Write port (its members are inputs of the buffer).
    r_bank : :py:`In(1)`
        Bank read by ``r``.
    r : :py:`Out(ReadPort.Signature(addr_width, shape))`
        Synchronous read port: ``data`` follows ``addr`` one cycle after ``en``; while ``en``
        is low ``data`` holds. Not transparent: reading a word written in the same cycle
        returns its old contents.
    """

    def __init__(self, shape, depth, *, granularity=None, ram="block"):
        if not isinstance(depth, int) or depth < 1:
            raise TypeError(f"Depth must be a positive integer, not {depth!r}")
        if ram not in ("block", "spram"):
            raise ValueError(f"ram must be 'block' or 'spram', not {ram!r}")
        self._ram = ram
        self._shape = shape
        self._depth = depth
        self._granularity = granularity
        addr_width = self.addr_width
        super().__init__({
            "w_bank": In(1),
            "w": Out(WritePort.Signature(addr_width=addr_width, shape=shape,
                                         granularity=granularity)),
            "r_bank": In(1),
            "r": Out(ReadPort.Signature(addr_width=addr_width, shape=shape)),
        })

    @property
    def depth(self):
        """Words per bank."""
        return self._depth

    @property
    def addr_width(self):
        """Width of an address within a bank (at least 1)."""
        return bank_addr_width(self._depth)

    @property
    def latency(self):
        """Cycles from a read port's ``en`` to its ``data``."""
        return 1

    def _physical(self, bank, addr):
        if self._depth & (self._depth - 1) == 0 and self._depth > 1:
            return Cat(addr, bank)
        return Mux(bank, addr + self._depth, addr)

    def elaborate(self, platform):
        if self._ram == "spram":
            return self._elaborate_spram()
        m = Module()
        # Block RAM whatever the size, so that hw.resources counts what Yosys maps.
        m.submodules.memory = memory = Memory(shape=self._shape, depth=2 * self._depth, init=[],
                                              attrs={"ram_style": "block"})
        wp = memory.write_port(granularity=self._granularity)
        rp = memory.read_port()
        w_addr = Signal.like(wp.addr)
        r_addr = Signal.like(rp.addr)
        m.d.comb += [
            w_addr.eq(self._physical(self.w_bank, self.w.addr)),
            wp.addr.eq(w_addr),
            wp.data.eq(self.w.data),
            wp.en.eq(self.w.en),
            r_addr.eq(self._physical(self.r_bank, self.r.addr)),
            rp.addr.eq(r_addr),
            rp.en.eq(self.r.en),
            self.r.data.eq(rp.data),
        ]
        return m

    def _elaborate_spram(self):
        m = Module()
        writing = self.w.en.any()
        datas = []
        for bank in range(2):
            memory = Memory(shape=self._shape, depth=self._depth, init=[],
                            attrs={"ram_style": "huge"})
            m.submodules[f"bank{bank}"] = memory
            wp = memory.write_port(granularity=self._granularity)
            rp = memory.read_port()
            written = writing & (self.w_bank == bank)
            addr = Signal.like(wp.addr, name=f"addr{bank}")
            m.d.comb += [
                addr.eq(Mux(written, self.w.addr, self.r.addr)),
                wp.addr.eq(addr),
                wp.data.eq(self.w.data),
                wp.en.eq(Mux(self.w_bank == bank, self.w.en, 0)),
                rp.addr.eq(addr),
                rp.en.eq(self.r.en & (self.r_bank == bank) & ~written),
            ]
            datas.append(rp.data)
        # The bank of the last read selects the data, which holds while ``en`` is low.
        read_bank = Signal()
        with m.If(self.r.en):
            m.d.sync += read_bank.eq(self.r_bank)
        m.d.comb += self.r.data.eq(Mux(read_bank, datas[1], datas[0]))
        return m
