"""The board side of the UART link protocol (:mod:`boards.link`), between UART and accelerator.

::

    rx bytes ─► FrameParser ─► receive buffer (commit on good CRC) ─► host ─► accelerator
                                                                             │
    tx bytes ◄── Packetizer ◄── READY / FAULT / CREDIT, transmit FIFO ◄── dev ◄┘
"""

from amaranth import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.crc import catalog
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .link import LINK_VERSION, MAX_PAYLOAD, SYNC, Fault, Kind

__all__ = ["LinkBridge", "Packetizer"]

_CRC = catalog.CRC16_XMODEM(8)


def _check_depth(depth):
    if not isinstance(depth, int) or depth < 2 * MAX_PAYLOAD or depth & (depth - 1) \
            or depth > 1 << 16:
        raise ValueError(f"depth must be a power of two in {2 * MAX_PAYLOAD}..{1 << 16}, "
                         f"not {depth!r}")


class Packetizer(wiring.Component):
    """Frames to the host: READY, FAULT and CREDIT on request, DATA from a FIFO.

    Priority READY > FAULT > CREDIT > DATA, decided between frames. A DATA frame carries
    what ``level`` says the FIFO holds (at most 255 bytes), so it never waits for data.

    Parameters
    ----------
    depth : int
        Receive-buffer depth reported in READY.
    level_width : int
        Bits of ``level``.

    Members
    -------
    o : :py:`Out(stream.Signature(8))`
        Frame bytes to the UART transmitter.
    data : :py:`In(stream.Signature(8))`
        Output bytes of the accelerator (a FIFO's read side).
    level : :py:`In(level_width)`
        Bytes available in ``data``.
    ready_req, fault_req : :py:`In(1)`
        A READY / FAULT frame is wanted; ``*_ack`` pulses when one is started.
    faults : :py:`In(8)`
        FAULT payload.
    credit : :py:`In(16)`
        Credits not yet returned; ``credit_req`` asks for a CREDIT frame of ``credit``
        bytes, and ``credit_ack`` pulses the cycle that value is taken.
    """

    def __init__(self, depth, level_width):
        self._depth = depth
        super().__init__({
            "o": Out(stream.Signature(8)),
            "data": In(stream.Signature(8)),
            "level": In(level_width),
            "ready_req": In(1), "ready_ack": Out(1),
            "fault_req": In(1), "fault_ack": Out(1), "faults": In(8),
            "credit_req": In(1), "credit_ack": Out(1), "credit": In(16),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = _CRC.create()
        kind = Signal(8)
        length = Signal(8)
        index = Signal(8)
        args = Signal(24)   # payload of a READY / FAULT / CREDIT frame, first byte lowest

        byte = Signal(8)
        m.d.comb += [self.o.payload.eq(byte), crc.data.eq(byte),
                     crc.valid.eq(self.o.valid & self.o.ready)]
        sent = self.o.valid & self.o.ready
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.ready_req):
                    m.d.comb += self.ready_ack.eq(1)
                    m.d.sync += [kind.eq(Kind.READY), length.eq(3),
                                 args.eq(Cat(Const(self._depth >> 8, 8),
                                             Const(self._depth & 0xFF, 8),
                                             Const(LINK_VERSION, 8)))]
                    m.next = "SYNC"
                with m.Elif(self.fault_req):
                    m.d.comb += self.fault_ack.eq(1)
                    m.d.sync += [kind.eq(Kind.FAULT), length.eq(1), args.eq(self.faults)]
                    m.next = "SYNC"
                with m.Elif(self.credit_req):
                    m.d.comb += self.credit_ack.eq(1)
                    m.d.sync += [kind.eq(Kind.CREDIT), length.eq(2),
                                 args.eq(Cat(self.credit[8:], self.credit[:8]))]
                    m.next = "SYNC"
                with m.Elif(self.level != 0):
                    m.d.sync += [kind.eq(Kind.DATA),
                                 length.eq(Mux(self.level < MAX_PAYLOAD, self.level,
                                                    MAX_PAYLOAD))]
                    m.next = "SYNC"
            with m.State("SYNC"):
                m.d.comb += [byte.eq(SYNC), self.o.valid.eq(1), crc.start.eq(1),
                             crc.valid.eq(0)]
                with m.If(sent):
                    m.next = "KIND"
            with m.State("KIND"):
                m.d.comb += [byte.eq(kind), self.o.valid.eq(1)]
                with m.If(sent):
                    m.next = "LENGTH"
            with m.State("LENGTH"):
                m.d.comb += [byte.eq(length), self.o.valid.eq(1)]
                with m.If(sent):
                    m.d.sync += index.eq(0)
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                with m.If(kind == Kind.DATA):
                    m.d.comb += [byte.eq(self.data.payload), self.o.valid.eq(self.data.valid),
                                 self.data.ready.eq(self.o.ready)]
                with m.Else():
                    m.d.comb += [byte.eq(args.word_select(index[:2], 8)), self.o.valid.eq(1)]
                with m.If(sent):
                    m.d.sync += index.eq(index + 1)
                with m.If(index == length):
                    # No payload left (or none at all): the CRC went through every byte.
                    m.d.comb += [self.o.valid.eq(0), self.data.ready.eq(0)]
                    m.next = "CRC_HI"
            with m.State("CRC_HI"):
                m.d.comb += [byte.eq(crc.crc[8:]), self.o.valid.eq(1), crc.valid.eq(0)]
                with m.If(sent):
                    m.next = "CRC_LO"
            with m.State("CRC_LO"):
                m.d.comb += [byte.eq(crc.crc[:8]), self.o.valid.eq(1), crc.valid.eq(0)]
                with m.If(sent):
                    m.next = "IDLE"
        return m


class LinkBridge(wiring.Component):
    """Board side of :mod:`boards.link`: frames in, bytes to the accelerator and back.

    Parameters
    ----------
    depth : int
        Receive-buffer bytes, a power of two, at least 2 x 255: the host's credit window.
    idle_timeout : int
        Clock cycles without a byte after which an unfinished frame is abandoned (a
        :attr:`~boards.link.Fault.TIMEOUT` fault); longer than any gap the host's USB link
        leaves inside a frame.
    tx_depth : int
        Transmit FIFO bytes.

    Members
    -------
    rx : :py:`In(stream.Signature(8))`
        Bytes from the UART receiver (always taken).
    rx_error : :py:`In(1)`
        The UART receiver's error pulse.
    tx : :py:`Out(stream.Signature(8))`
        Bytes to the UART transmitter.
    host : :py:`Out(stream.Signature(8))`
        The accelerator's input stream (checked DATA payload, in order).
    dev : :py:`In(stream.Signature(8))`
        The accelerator's output stream.
    soft_reset : :py:`Out(1)`
        Pulses for a RESET frame: reset the accelerator with it.
    busy : :py:`Out(1)`
        Bytes are waiting in either direction.
    fault : :py:`Out(1)`
        A fault is pending (until the next RESET).
    """

    def __init__(self, *, depth=2048, idle_timeout=1 << 20, tx_depth=512):
        _check_depth(depth)
        if not isinstance(idle_timeout, int) or idle_timeout < 16:
            raise ValueError(f"idle_timeout must be an integer of at least 16, "
                             f"not {idle_timeout!r}")
        self._depth = depth
        self._idle_timeout = idle_timeout
        self._tx_depth = tx_depth
        super().__init__({
            "rx": In(stream.Signature(8)),
            "rx_error": In(1),
            "tx": Out(stream.Signature(8)),
            "host": Out(stream.Signature(8)),
            "dev": In(stream.Signature(8)),
            "soft_reset": Out(1),
            "busy": Out(1),
            "fault": Out(1),
        })

    @property
    def depth(self):
        return self._depth

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        abits = depth.bit_length() - 1
        reset = self.soft_reset

        m.submodules.buffer = buffer = Memory(shape=8, depth=depth, init=[])
        wr = buffer.write_port()
        rd = buffer.read_port()
        m.submodules.crc = crc = _CRC.create()
        m.submodules.tx_fifo = tx_fifo = ResetInserter(reset)(
            SyncFIFOBuffered(width=8, depth=self._tx_depth))
        m.submodules.packetizer = packetizer = ResetInserter(reset)(
            Packetizer(depth, len(tx_fifo.level)))

        # Pointers one bit wider than the address tell a full buffer from an empty one.
        wptr = Signal(abits + 1)    # next payload byte of the frame being received
        cptr = Signal(abits + 1)    # end of the checked (committed) bytes
        rptr = Signal(abits + 1)    # next byte to read for the accelerator
        faults = Signal(8)
        fault_new = Signal()
        ready_pending = Signal()
        credit = Signal(16)

        # --- receive: frame parser -------------------------------------------------------
        byte = self.rx.payload
        got = self.rx.valid
        m.d.comb += self.rx.ready.eq(1)
        kind = Signal(8)
        remaining = Signal(8)
        idle = Signal(range(self._idle_timeout + 1))
        f_crc, f_overflow, f_timeout, f_uart, f_frame = (Signal(name=f"fault_{f.name.lower()}")
                                                         for f in Fault)
        new_faults = Signal(8)
        m.d.comb += new_faults.eq(Cat(f_crc, f_overflow, f_timeout, f_uart, f_frame))
        m.d.comb += [crc.data.eq(byte), wr.addr.eq(wptr[:abits]), wr.data.eq(byte)]
        m.d.comb += f_uart.eq(self.rx_error)

        timeout = Signal()
        check = Signal()
        m.d.comb += timeout.eq(idle == self._idle_timeout)
        with m.FSM() as parser:
            with m.State("SYNC"):
                with m.If(got):
                    with m.If(byte == SYNC):
                        m.next = "KIND"
                    with m.Else():
                        m.d.comb += f_frame.eq(1)
            with m.State("KIND"):
                m.d.comb += [crc.start.eq(1), crc.valid.eq(got)]
                with m.If(got):
                    m.d.sync += kind.eq(byte)
                    m.next = "LENGTH"
                with m.If(timeout):
                    m.next = "SYNC"
            with m.State("LENGTH"):
                m.d.comb += crc.valid.eq(got)
                with m.If(got):
                    m.d.sync += remaining.eq(byte)
                    with m.If(byte == 0):
                        m.next = "CRC_HI"
                    with m.Else():
                        m.next = "PAYLOAD"
                with m.If(timeout):
                    m.next = "SYNC"
            with m.State("PAYLOAD"):
                m.d.comb += crc.valid.eq(got)
                with m.If(got):
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If((kind == Kind.DATA) & (faults == 0)):
                        with m.If((wptr - rptr)[:abits + 1] == depth):
                            m.d.comb += f_overflow.eq(1)
                        with m.Else():
                            m.d.comb += wr.en.eq(1)
                            m.d.sync += wptr.eq(wptr + 1)
                    with m.If(remaining == 1):
                        m.next = "CRC_HI"
                with m.If(timeout):
                    m.next = "SYNC"
            with m.State("CRC_HI"):
                m.d.comb += crc.valid.eq(got)
                with m.If(got):
                    m.next = "CRC_LO"
                with m.If(timeout):
                    m.next = "SYNC"
            with m.State("CRC_LO"):
                m.d.comb += crc.valid.eq(got)
                with m.If(got):
                    m.d.sync += check.eq(1)
                    m.next = "SYNC"
                with m.If(timeout):
                    m.next = "SYNC"
        # The CRC register is ready the cycle after the last byte; the parser is back in
        # SYNC by then and takes the next frame's first byte in the same cycle.
        with m.If(check):
            m.d.sync += check.eq(0)
            with m.If(~crc.match_detected):
                m.d.comb += f_crc.eq(1)
            with m.Elif(kind == Kind.RESET):
                m.d.comb += reset.eq(1)
            with m.Elif(kind != Kind.DATA):
                m.d.comb += f_frame.eq(1)
            with m.Elif(faults == 0):
                m.d.sync += cptr.eq(wptr)

        # Inside a frame, a byte that never comes ends it: it was lost on the wire.
        with m.If(got | parser.ongoing("SYNC")):
            m.d.sync += idle.eq(0)
        with m.Elif(~timeout):
            m.d.sync += idle.eq(idle + 1)
        m.d.comb += f_timeout.eq(timeout)

        with m.If(new_faults != 0):
            m.d.sync += faults.eq(faults | new_faults)
            with m.If(faults == 0):
                m.d.sync += fault_new.eq(1)
        # An uncommitted frame is dropped: on a fault, and at every frame start.
        with m.If((new_faults != 0) | (faults != 0)):
            m.d.sync += wptr.eq(cptr)

        # --- receive buffer to the accelerator -----------------------------------------
        take = ~self.host.valid | self.host.ready
        m.d.comb += [rd.addr.eq(rptr[:abits]), rd.en.eq(take), self.host.payload.eq(rd.data)]
        with m.If(take):
            m.d.sync += self.host.valid.eq(rptr != cptr)
            with m.If(rptr != cptr):
                m.d.sync += rptr.eq(rptr + 1)

        # --- transmit side ---------------------------------------------------------------
        wiring.connect(m, wiring.flipped(self.dev), tx_fifo.w_stream)
        wiring.connect(m, tx_fifo.r_stream, packetizer.data)
        wiring.connect(m, packetizer.o, wiring.flipped(self.tx))
        consumed = self.host.valid & self.host.ready
        drained = (rptr == cptr) & ~self.host.valid
        unit = depth // 8
        m.d.comb += [
            packetizer.level.eq(tx_fifo.level),
            packetizer.ready_req.eq(ready_pending),
            packetizer.fault_req.eq(fault_new),
            packetizer.faults.eq(faults),
            packetizer.credit.eq(credit),
            packetizer.credit_req.eq((credit >= unit) | ((credit != 0) & drained)),
        ]
        with m.If(packetizer.credit_ack):
            m.d.sync += credit.eq(consumed)
        with m.Elif(consumed):
            m.d.sync += credit.eq(credit + 1)
        with m.If(packetizer.fault_ack):
            m.d.sync += fault_new.eq(0)
        with m.If(packetizer.ready_ack):
            m.d.sync += ready_pending.eq(0)

        with m.If(reset):
            m.d.sync += [wptr.eq(0), cptr.eq(0), rptr.eq(0), self.host.valid.eq(0),
                         faults.eq(0), fault_new.eq(0), credit.eq(0), ready_pending.eq(1)]

        m.d.comb += [
            self.busy.eq((rptr != cptr) | self.host.valid | (tx_fifo.level != 0)),
            self.fault.eq(faults != 0),
        ]
        return m
