"""PLLs of the two FPGA families: divider search (as ``ecppll`` / ``icepll`` do) and the
primitive instances.

:func:`ecp5_dividers` and :func:`ice40_dividers` pick the dividers whose output is
closest to the request within the data-sheet ranges; :class:`PLL` instantiates
``EHXPLLL`` (ECP5) or ``SB_PLL40_PAD`` (iCE40, fed straight from its dedicated pad).
"""

from dataclasses import dataclass

from amaranth import Elaboratable, Instance, Module, Signal

__all__ = ["PllDividers", "ecp5_dividers", "ice40_dividers", "PLL"]

# ECP5 EHXPLLL ranges, MHz (Lattice TN1263 / prjtrellis ecppll).
_ECP5_IN = (8.0, 400.0)
_ECP5_PFD = (3.125, 400.0)
_ECP5_VCO = (400.0, 800.0)
_ECP5_OUT = (3.125, 400.0)
# iCE40 SB_PLL40 ranges, MHz (iCE40 sysCLOCK PLL design guide / icestorm icepll).
_ICE40_IN = (10.0, 133.0)
_ICE40_PFD = (10.0, 133.0)
_ICE40_VCO = (533.0, 1066.0)
_ICE40_OUT = (16.0, 275.0)


@dataclass(frozen=True)
class PllDividers:
    """One PLL setting: ``f_out = f_in / input_div * feedback_div / output_div``.

    For iCE40 ``input_div`` is DIVR + 1, ``feedback_div`` DIVF + 1 and ``output_div``
    2 ** DIVQ; ``filter_range`` is its loop-filter setting (0 on ECP5).
    """

    f_in: float
    f_out: float
    f_vco: float
    input_div: int
    feedback_div: int
    output_div: int
    filter_range: int = 0


def _check(name, f, lo, hi):
    if not lo <= f <= hi:
        raise ValueError(f"{name} must be in {lo:g}..{hi:g} MHz, not {f:g} MHz")


def ecp5_dividers(f_in, f_out):
    """EHXPLLL dividers (CLKOP feedback) for ``f_out`` MHz from ``f_in`` MHz; among equally
    close outputs the one with the VCO nearest 600 MHz."""
    _check("ECP5 PLL input", f_in, *_ECP5_IN)
    _check("ECP5 PLL output", f_out, *_ECP5_OUT)
    best = None
    for input_div in range(1, 129):
        f_pfd = f_in / input_div
        if not _ECP5_PFD[0] <= f_pfd <= _ECP5_PFD[1]:
            continue
        for feedback_div in range(1, 81):
            out = f_pfd * feedback_div
            # The output divider only moves the VCO: take the one nearest 600 MHz in range.
            lo = max(1, -(-_ECP5_VCO[0] // out))
            hi = min(128, _ECP5_VCO[1] // out)
            if lo > hi:
                continue
            output_div = int(min(max(round(600 / out), lo), hi))
            f_vco = out * output_div
            key = (abs(out - f_out), abs(f_vco - 600))
            if best is None or key < best[0]:
                best = (key, PllDividers(f_in, out, f_vco, input_div, feedback_div,
                                         output_div))
    if best is None:
        raise ValueError(f"no ECP5 PLL setting gives {f_out:g} MHz from {f_in:g} MHz")
    return best[1]


def ice40_dividers(f_in, f_out):
    """SB_PLL40 dividers (SIMPLE feedback) for ``f_out`` MHz from ``f_in`` MHz; the first
    closest setting in icepll's search order."""
    _check("iCE40 PLL input", f_in, *_ICE40_IN)
    _check("iCE40 PLL output", f_out, *_ICE40_OUT)
    best = None
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not _ICE40_PFD[0] <= f_pfd <= _ICE40_PFD[1]:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not _ICE40_VCO[0] <= f_vco <= _ICE40_VCO[1]:
                continue
            for divq in range(1, 7):
                out = f_vco / (1 << divq)
                if best is None or abs(out - f_out) < abs(best.f_out - f_out):
                    filter_range = sum(f_pfd >= edge for edge in (17, 26, 44, 66, 101)) + 1
                    best = PllDividers(f_in, out, f_vco, divr + 1, divf + 1, 1 << divq,
                                       filter_range)
    if best is None:
        raise ValueError(f"no iCE40 PLL setting gives {f_out:g} MHz from {f_in:g} MHz")
    return best


class PLL(Elaboratable):
    """A PLL primitive with one output clock.

    Parameters
    ----------
    family : {"ecp5", "ice40"}
    dividers : PllDividers
    clk_in : Signal or io port
        ECP5: the reference clock signal. iCE40: the raw pad of the clock pin (the PLL
        takes its dedicated pad, ``platform.request(..., dir="-")``).

    Attributes
    ----------
    clk_out : Signal
        The output clock (on a global network).
    locked : Signal
        The PLL's lock output.
    """

    def __init__(self, family, dividers, clk_in):
        if family not in ("ecp5", "ice40"):
            raise ValueError(f"family must be 'ecp5' or 'ice40', not {family!r}")
        self.family = family
        self.dividers = dividers
        self.clk_in = clk_in
        self.clk_out = Signal()
        self.locked = Signal()

    def elaborate(self, platform):
        m = Module()
        d = self.dividers
        if self.family == "ecp5":
            m.submodules.pll = Instance(
                "EHXPLLL",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
                p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=d.output_div,
                p_CLKOP_CPHASE=d.output_div - 1, p_CLKOP_FPHASE=0,
                p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=d.feedback_div, p_CLKI_DIV=d.input_div,
                a_FREQUENCY_PIN_CLKI=f"{d.f_in:g}", a_FREQUENCY_PIN_CLKOP=f"{d.f_out:g}",
                i_CLKI=self.clk_in, i_CLKFB=self.clk_out, i_RST=0, i_STDBY=0,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=0, i_PHASESTEP=0,
                i_PHASELOADREG=0, i_PLLWAKESYNC=0, i_ENCLKOP=0,
                o_CLKOP=self.clk_out, o_LOCK=self.locked)
        else:
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT="GENCLK",
                p_DIVR=d.input_div - 1, p_DIVF=d.feedback_div - 1,
                p_DIVQ=d.output_div.bit_length() - 1, p_FILTER_RANGE=d.filter_range,
                i_PACKAGEPIN=self.clk_in, i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=self.clk_out, o_LOCK=self.locked)
        return m
