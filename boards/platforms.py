"""The boards qmac builds for: their platforms, clocks, UART, LEDs and device resources.

iCEBreaker and ULX3S come from amaranth-boards; the OrangeCrab r0.2 (ECP5-25F) has no
platform there (0.0.21), so :class:`OrangeCrabR02Platform` defines the pins this design uses.
"""

from dataclasses import dataclass

from amaranth.build import Attrs, Clock, Pins, PinsN, Resource, Subsignal
from amaranth.vendor import LatticeECP5Platform
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.resources import RGBLEDResource
from amaranth_boards.ulx3s import (
    ULX3S_12F_Platform,
    ULX3S_25F_Platform,
    ULX3S_45F_Platform,
    ULX3S_85F_Platform,
)

__all__ = ["Device", "Board", "BOARDS", "DEVICES", "board", "OrangeCrabR02Platform"]


class OrangeCrabR02Platform(LatticeECP5Platform):
    """OrangeCrab r0.2 with the ECP5-25F: 48 MHz oscillator, RGB LED, user button, and a
    UART on Feather header pins 0 (FPGA receives) and 1 (FPGA sends) for an external 3.3 V
    USB-UART adapter, since the board's USB port goes straight to the FPGA."""

    device = "LFE5U-25F"
    package = "MG285"
    speed = "8"
    default_clk = "clk48"
    resources = [
        Resource("clk48", 0, Pins("A9", dir="i"), Clock(48e6), Attrs(IO_TYPE="LVCMOS33")),
        RGBLEDResource(0, r="K4", g="M3", b="J3", invert=True,
                       attrs=Attrs(IO_TYPE="LVCMOS33")),
        Resource("button", 0, PinsN("J17", dir="i"), Attrs(IO_TYPE="SSTL135_I")),
        Resource("uart", 0,
                 Subsignal("rx", Pins("N17", dir="i")),
                 Subsignal("tx", Pins("M18", dir="o")),
                 Attrs(IO_TYPE="LVCMOS33", PULLMODE="UP")),
    ]
    connectors = []

    def toolchain_prepare(self, fragment, name, **kwargs):
        # The bootloader loads at most 38.8 MHz SPI-rate bitstreams, compressed.
        overrides = dict(ecppack_opts="--compress --freq 38.8")
        overrides.update(kwargs)
        return super().toolchain_prepare(fragment, name, **overrides)


@dataclass(frozen=True)
class Device:
    """Totals of one FPGA (data sheet counts, as nextpnr reports them available)."""

    name: str
    family: str          # "ice40" or "ecp5"
    luts: int
    dsps: int            # SB_MAC16 / MULT18X18D
    brams: int           # EBR (4 kbit) / DP16KD (18 kbit)
    sprams: int = 0      # iCE40 UP SPRAM (256 kbit)

    @property
    def bram_configs(self):
        """(width, depth) shapes of one block RAM."""
        if self.family == "ice40":
            return ((16, 256), (8, 512), (4, 1024), (2, 2048))
        return ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))


DEVICES = {d.name: d for d in (
    Device("iCE40UP5K", "ice40", 5280, 8, 30, 4),
    Device("LFE5U-12F", "ecp5", 12096, 28, 32),
    Device("LFE5U-25F", "ecp5", 24288, 28, 56),
    Device("LFE5U-45F", "ecp5", 43848, 72, 108),
    Device("LFE5U-85F", "ecp5", 83640, 156, 208),
)}


@dataclass(frozen=True)
class Board:
    """How the board top uses one board.

    ``leds``: (resource, number[, subsignal]) of the busy, fault and heartbeat LEDs.
    ``usb_uart``: what carries the UART to the host, and the fastest baud rate it takes.
    """

    name: str
    platform: type
    clock: str
    f_in: float          # MHz of the oscillator
    default_freq: float  # MHz of the PLL output by default
    leds: tuple
    usb_uart: str
    max_baud: int
    program: str

    @property
    def device(self):
        return DEVICES[self.platform.device]

    @property
    def family(self):
        return self.device.family


_ULX3S_LEDS = (("led", 0), ("led", 1), ("led", 7))
_ULX3S = dict(clock="clk25", f_in=25.0, default_freq=45.0, leds=_ULX3S_LEDS,
              usb_uart="FT231X on the US1 USB port", max_baud=3_000_000,
              program="openFPGALoader -b ulx3s {bitstream}")

BOARDS = {b.name: b for b in (
    Board("icebreaker", ICEBreakerPlatform, "clk12", 12.0, 24.0,
          (("led_g", 0), ("led_r", 0), None),
          "FT2232H (interface B) on the USB port", 3_000_000,
          "iceprog {bitstream}  (or: openFPGALoader -b ice40_generic {bitstream})"),
    Board("ulx3s-12f", ULX3S_12F_Platform, **_ULX3S),
    Board("ulx3s-25f", ULX3S_25F_Platform, **_ULX3S),
    Board("ulx3s-45f", ULX3S_45F_Platform, **_ULX3S),
    Board("ulx3s-85f", ULX3S_85F_Platform, **_ULX3S),
    Board("orangecrab", OrangeCrabR02Platform, "clk48", 48.0, 48.0,
          (("rgb_led", 0, "g"), ("rgb_led", 0, "r"), ("rgb_led", 0, "b")),
          "an external 3.3 V USB-UART adapter (e.g. FT232H) on Feather pins 0 (RX) and 1 "
          "(TX)", 3_000_000,
          "dfu-util -D {bitstream}  (bootloader: hold the button while plugging in)"),
)}


def board(name):
    """The :class:`Board` called ``name``; ValueError listing the known boards otherwise."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"board must be one of {', '.join(BOARDS)}, not {name!r}") from None
