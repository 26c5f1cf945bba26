"""Double-banked on-chip buffers: one write port, one synchronous read port, two banks."""

from amaranth import Cat, Module, Mux, Shape, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .vendor import kept_register

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
    latency : {1, 2}
        Read latency. 2 (block RAM only) registers every input of the memory, lane by lane:
        each lane (element of an ``ArrayLayout`` shape) is a memory of its own with its own
        copy of the address, enable and data registers, so no net fans out from one
        register to every block of the buffer (on a large FPGA they lie across the whole
        die) and none carries logic into a block RAM. A write lands a cycle later.
    output_register : bool
        Register the read data once more (one more cycle of read latency,
        :attr:`latency`), so the block RAM's clock-to-output delay ends at a flip-flop
        beside it instead of on a path across the die.
    group : int
        With ``latency=2``: lanes per memory (and per copy of the registers); more than one
        where one lane a memory would take more blocks than the buffer needs.
    replica : {None, "ecp5"}
        With ``latency=2``: ``"ecp5"`` builds the per-lane copies of the address and enable
        registers as ``TRELLIS_FF`` instances marked ``keep``, since Yosys merges equal
        registers back into one; None uses plain registers (for simulation: the same
        behaviour).

    Members
    -------
    w_bank : :py:`In(1)`
        Bank written by ``w``.
    w : :py:`Out(WritePort.Signature(addr_width, shape, granularity))`
        Write port (its members are inputs of the buffer).
    r_bank : :py:`In(1)`
        Bank read by ``r``.
    r : :py:`Out(ReadPort.Signature(addr_width, shape))`
        Synchronous read port: ``data`` is the word at ``addr`` :attr:`latency` cycles with
        ``en`` high earlier (``en`` enables the whole read pipeline); while ``en`` is low
        ``data`` holds. Not transparent: reading a word written in the same cycle (or, with
        latency 2, the cycle before) returns its old contents.
    """

    def __init__(self, shape, depth, *, granularity=None, ram="block", latency=1,
                 replica=None, group=1, output_register=False):
        if not isinstance(depth, int) or depth < 1:
            raise TypeError(f"Depth must be a positive integer, not {depth!r}")
        if ram not in ("block", "spram"):
            raise ValueError(f"ram must be 'block' or 'spram', not {ram!r}")
        if latency not in (1, 2) or (latency == 2 and ram != "block"):
            raise ValueError(f"latency must be 1, or 2 with block RAM, not {latency!r}")
        if replica not in (None, "ecp5"):
            raise ValueError(f"replica must be None or 'ecp5', not {replica!r}")
        if latency == 2 and not isinstance(shape, data.ArrayLayout):
            raise TypeError(f"A latency-2 buffer needs an ArrayLayout shape, not {shape!r}")
        if not isinstance(group, int) or group < 1:
            raise ValueError(f"group must be a positive integer, not {group!r}")
        self._latency = latency
        self._output_register = bool(output_register)
        self._group = group
        self._replica = replica
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

    @staticmethod
    def read_latency(*, latency=1, output_register=False, ram="block"):
        """:attr:`latency` of a buffer built with these arguments."""
        return (latency if ram == "block" else 1) + bool(output_register)

    @property
    def latency(self):
        """Cycles from a read port's ``en`` to its ``data``."""
        return self.read_latency(latency=self._latency, output_register=self._output_register,
                                 ram=self._ram)

    @property
    def output_register(self):
        """Whether the read data passes a register after the memory."""
        return self._output_register

    def _physical(self, bank, addr):
        if self._depth & (self._depth - 1) == 0 and self._depth > 1:
            return Cat(addr, bank)
        return Mux(bank, addr + self._depth, addr)

    def elaborate(self, platform):
        m = Module()
        if self._output_register:
            # The memory's read data is registered with the same enable, so the pipeline
            # still moves only while ``en`` is high.
            read_data = Signal.like(self.r.data, name="read_data")
            data_reg = Signal.like(self.r.data, name="data_reg", reset_less=True)
            with m.If(self.r.en):
                m.d.sync += data_reg.eq(read_data)
            m.d.comb += self.r.data.eq(data_reg)
        else:
            read_data = self.r.data
        if self._ram == "spram":
            self._elaborate_spram(m, read_data)
        elif self._latency == 2:
            self._elaborate_lanes(m, read_data)
        else:
            self._elaborate_block(m, read_data)
        return m

    def _elaborate_block(self, m, read_data):
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
            read_data.eq(rp.data),
        ]

    def _register(self, m, value, name, en=1, copy=False, reset=False):
        """``value`` registered (clock enable ``en``), cleared by the domain's reset only if
        ``reset``; a ``copy`` of a register other lanes also have is a kept vendor flip-flop
        where ``replica`` asks for one."""
        return kept_register(m, value, name, en=en, family=self._replica if copy else None,
                             reset=reset)

    def _elaborate_lanes(self, m, read_data):
        lanes = self._shape.length
        w_addr = Signal(self.addr_width + 1)
        r_addr = Signal(self.addr_width + 1)
        m.d.comb += [w_addr.eq(self._physical(self.w_bank, self.w.addr)),
                     r_addr.eq(self._physical(self.r_bank, self.r.addr))]
        granular = self._granularity is not None
        bits = Shape.cast(self._shape.elem_shape).width
        for g, first in enumerate(range(0, lanes, self._group)):
            count = min(self._group, lanes - first)
            memory = Memory(shape=data.ArrayLayout(self._shape.elem_shape, count),
                            depth=2 * self._depth, init=[], attrs={"ram_style": "block"})
            m.submodules[f"lanes{g}"] = memory
            wp = memory.write_port(granularity=1 if granular else None)
            rp = memory.read_port()
            en = (self.w.en[first // self._granularity:(first + count) // self._granularity]
                  if granular else self.w.en)
            lane_bits = slice(first * bits, (first + count) * bits)
            m.d.comb += [
                wp.addr.eq(self._register(m, w_addr, f"w_addr{g}", copy=True)),
                wp.data.eq(self._register(m, self.w.data.as_value()[lane_bits], f"w_data{g}")),
                wp.en.eq(self._register(m, en, f"w_en{g}", copy=not granular, reset=True)),
                rp.addr.eq(self._register(m, r_addr, f"r_addr{g}", en=self.r.en, copy=True)),
                rp.en.eq(self.r.en),
                read_data.as_value()[lane_bits].eq(rp.data),
            ]

    def _elaborate_spram(self, m, read_data):
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
        m.d.comb += read_data.eq(Mux(read_bank, datas[1], datas[0]))
