"""Board tops: the accelerator behind a UART link, and the board around it.

:class:`UartAccelerator` is everything between the UART pins (UART, link bridge,
accelerator) in one clock domain; the simulation runs exactly this. :class:`BoardTop` adds
what a board needs: the PLL from its oscillator, a reset held until the PLL locks, the UART
pins and the LEDs.
"""

from amaranth import ClockDomain, Elaboratable, Module, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.top import Accelerator

from .bridge import LinkBridge
from .pll import PLL, ecp5_dividers, ice40_dividers
from .uart import UartRx, UartTx, divisor

__all__ = ["UartAccelerator", "BoardTop", "clock_plan", "HOST_WIDTH", "IDLE_TIMEOUT_S"]

#: The link carries bytes; the accelerator takes them one beat each.
HOST_WIDTH = 8
#: An unfinished frame is dropped after this much silence on the line (seconds): far
#: longer than a USB-UART bridge pauses inside a frame, far shorter than a human notices.
IDLE_TIMEOUT_S = 0.01


def clock_plan(board, freq, baud):
    """(PLL dividers, UART divisor) for ``freq`` MHz and ``baud`` on ``board``; ValueError
    when the PLL cannot make the clock or the clock cannot divide the baud rate."""
    dividers = (ecp5_dividers if board.family == "ecp5" else ice40_dividers)(board.f_in, freq)
    return dividers, divisor(dividers.f_out * 1e6, baud)


class UartAccelerator(wiring.Component):
    """The accelerator behind the UART link protocol (:mod:`boards.link`).

    Parameters
    ----------
    config : AcceleratorConfig
        With ``host_width`` 8.
    divisor : int
        Clock cycles per UART bit (:func:`boards.uart.divisor`).
    depth : int
        Receive-buffer bytes, the host's credit window.
    idle_timeout : int
        Clock cycles of silence that end an unfinished frame.

    Members
    -------
    rx : :py:`In(1, init=1)`
        UART line from the host.
    tx : :py:`Out(1, init=1)`
        UART line to the host.
    busy : :py:`Out(1)`
        Bytes waiting in the link in either direction.
    fault : :py:`Out(1)`
        A link fault is pending (until the host's next RESET).
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    busy: Out(1)
    fault: Out(1)

    def __init__(self, config, *, divisor, depth=2048, idle_timeout=1 << 20):
        if not isinstance(config, AcceleratorConfig) or config.host_width != HOST_WIDTH:
            raise ValueError(f"config must be an AcceleratorConfig with host_width "
                             f"{HOST_WIDTH}, not {config!r}")
        self._config = config
        self._rx = UartRx(divisor)
        self._tx = UartTx(divisor)
        self._bridge = LinkBridge(depth=depth, idle_timeout=idle_timeout)
        super().__init__()

    @property
    def config(self):
        return self._config

    @property
    def depth(self):
        return self._bridge.depth

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = rx = self._rx
        m.submodules.uart_tx = tx = self._tx
        m.submodules.bridge = bridge = self._bridge
        m.submodules.accel = accel = ResetInserter(bridge.soft_reset)(
            Accelerator(self._config))
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx), bridge.rx_error.eq(rx.error),
                     self.busy.eq(bridge.busy), self.fault.eq(bridge.fault)]
        wiring.connect(m, rx.o, bridge.rx)
        wiring.connect(m, bridge.tx, tx.i)
        wiring.connect(m, bridge.host, accel.i)
        wiring.connect(m, accel.o, bridge.dev)
        return m


class BoardTop(Elaboratable):
    """A :class:`UartAccelerator` on a board (:data:`boards.platforms.BOARDS`).

    Parameters
    ----------
    board : boards.platforms.Board
    config : AcceleratorConfig
    freq : float
        Clock of the design, MHz (the PLL's nearest setting).
    baud : int
        UART baud rate; ``freq`` must divide it within :data:`boards.uart.BAUD_TOLERANCE`.
    depth : int
        Receive-buffer bytes.

    LEDs: busy (bytes in flight in the link), fault (a link fault until the next RESET)
    and, where the board has a third one, a heartbeat of about 1 Hz from the PLL clock.
    """

    def __init__(self, board, config, *, freq, baud, depth=2048):
        self.board = board
        self.dividers, self.divisor = clock_plan(board, freq, baud)
        self.freq = self.dividers.f_out
        self.baud = baud
        self.core = UartAccelerator(config, divisor=self.divisor, depth=depth,
                                    idle_timeout=int(self.freq * 1e6 * IDLE_TIMEOUT_S))

    def elaborate(self, platform):
        m = Module()
        b = self.board
        if b.family == "ice40":
            # SB_PLL40_PAD takes the oscillator straight from its dedicated pad.
            clk_in = platform.request(b.clock, dir="-").io
        else:
            clk_in = platform.request(b.clock).i
        m.submodules.pll = pll = PLL(b.family, self.dividers, clk_in)
        m.domains.sync = sync = ClockDomain("sync")
        # nextpnr derives the clock's constraint through the PLL from the oscillator's.
        m.d.comb += sync.clk.eq(pll.clk_out)
        m.submodules.reset = ResetSynchronizer(~pll.locked, domain="sync")

        m.submodules.core = core = self.core
        uart = platform.request("uart", 0)
        m.d.comb += [core.rx.eq(uart.rx.i), uart.tx.o.eq(core.tx)]

        heartbeat = Signal(range(int(self.freq * 1e6) // 2 + 1))
        blink = Signal()
        with m.If(heartbeat == 0):
            m.d.sync += [heartbeat.eq(int(self.freq * 1e6) // 2), blink.eq(~blink)]
        with m.Else():
            m.d.sync += heartbeat.eq(heartbeat - 1)
        requested = {}
        for led, value in zip(b.leds, (core.busy, core.fault, blink), strict=True):
            if led is None:
                continue
            # An RGB LED is one resource of three pins: request it once.
            if led[:2] not in requested:
                requested[led[:2]] = platform.request(*led[:2])
            res = requested[led[:2]]
            pin = getattr(res, led[2]) if len(led) > 2 else res
            m.d.comb += pin.o.eq(value)
        return m
