"""Build parameters of the accelerator, checked once, shared by gateware, driver and manifest."""

import argparse
import re
from dataclasses import asdict, dataclass

from golden.arith import ROUNDINGS

from .resources import DEVICES, check, plan

__all__ = ["AcceleratorConfig", "parse_pe", "pe_argument", "MAX_DIM", "HOST_WIDTHS"]

MAX_DIM = 64
HOST_WIDTHS = (8, 16, 32, 64, 128)
ACC_WIDTHS = range(16, 33)
MAX_DEPTH = 1 << 20
#: Most register stages of the host relay (hw.skid.Relay) each way.
MAX_RELAY = 16


def parse_pe(text):
    """``"16x8"`` -> ``(16, 8)``; ValueError naming the problem otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match:
        raise ValueError(f"--pe must look like RxC (e.g. 16x16), not {text!r}")
    rows, cols = int(match[1]), int(match[2])
    for name, v in (("rows", rows), ("cols", cols)):
        if not 1 <= v <= MAX_DIM:
            raise ValueError(f"--pe {name} must be in 1..{MAX_DIM}, not {v} (in {text!r})")
    return rows, cols


def pe_argument(text):
    """argparse type for ``--pe``: :func:`parse_pe` with its message kept on error."""
    try:
        return parse_pe(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True)
class AcceleratorConfig:
    """Every parameter of one accelerator build.

    Parameters
    ----------
    rows, cols : int
        PE array size R x C, each in 1..64.
    acc_width : int
        Accumulator bits per PE, 16..32 (TFLite accumulates in int32).
    rounding : {"double", "single"}
        Requantizer rounding: TFLite's default double rounding or TFLITE_SINGLE_ROUNDING.
    host_width : int
        Bits per beat of the host streams, one of 8, 16, 32, 64, 128.
    act_depth, wgt_depth, out_depth : int
        Words per bank of the activation (R int8), weight (C int8) and output (C int8)
        buffers. The defaults hold a 256 x 256 x 256 GEMM on a 16 x 16 array.
    par_depth : int
        Groups of C channels per bank of the parameter buffer.
    device : str or None
        Target FPGA, a key of :data:`hw.resources.DEVICES` (e.g. ``"ecp5-85f"``): its DSP
        blocks and block RAMs are the budget, and on ECP5 the DSP blocks are instantiated
        with their registers. None: no target, every product a generic multiply (for
        simulation and Yosys's generic flow).
    dsp_budget, bram_budget : int or None
        Override the device's DSP block / block RAM count (None: the device's own).
    buffer_latency : {None, 1, 2}
        Read latency of the block-RAM buffers (``hw.buffers.BankedBuffer``); 2 registers
        every memory input lane by lane (``docs/fpga.md`` has what it measured). None: the
        device's default (2 on ECP5, whose block RAMs lie across the whole die, else 1).
    buffer_output_register : bool or None
        Register the read data of every buffer once more (one more cycle of read latency
        on top of ``buffer_latency``), so a block RAM's clock-to-output delay ends beside
        it. None: the device's default (on ECP5, whose DP16KD takes 5.8 ns from clock to
        data, and nowhere else).
    host_relay : int or None
        Register stages each way of a :class:`hw.skid.Relay` between each host port and
        the controller, 0..16 (0 or None: none; ``hw.resources.Plan.host_relay``).

    A configuration whose buffers need more block RAM than the budget raises
    :class:`hw.resources.ResourceError` (a ValueError) naming the numbers; past the DSP
    budget, products are built in logic instead (``hw.resources.plan``).
    """

    rows: int = 16
    cols: int = 16
    acc_width: int = 32
    rounding: str = "double"
    host_width: int = 32
    act_depth: int = 4096
    wgt_depth: int = 4096
    par_depth: int = 64
    out_depth: int = 4096
    device: str | None = None
    dsp_budget: int | None = None
    bram_budget: int | None = None
    buffer_latency: int | None = None
    buffer_output_register: bool | None = None
    host_relay: int | None = None

    def __post_init__(self):
        for name in ("rows", "cols"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 1 <= v <= MAX_DIM:
                raise ValueError(f"{name} must be an integer in 1..{MAX_DIM}, not {v!r}")
        if self.acc_width not in ACC_WIDTHS:
            raise ValueError(f"acc_width must be in {ACC_WIDTHS.start}..{ACC_WIDTHS.stop - 1}, "
                             f"not {self.acc_width!r}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, "
                             f"not {self.rounding!r}")
        if self.host_width not in HOST_WIDTHS:
            raise ValueError(f"host_width must be one of {HOST_WIDTHS}, not {self.host_width!r}")
        for name in ("act_depth", "wgt_depth", "par_depth", "out_depth"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 1 <= v <= MAX_DEPTH:
                raise ValueError(f"{name} must be an integer in 1..{MAX_DEPTH}, not {v!r}")
        if self.device is not None and self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        for name in ("dsp_budget", "bram_budget"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 0):
                raise ValueError(f"{name} must be a non-negative integer, not {v!r}")
        if self.buffer_latency not in (None, 1, 2):
            raise ValueError(f"buffer_latency must be 1 or 2, not {self.buffer_latency!r}")
        if self.buffer_output_register not in (None, False, True):
            raise ValueError("buffer_output_register must be None, False or True, not "
                             f"{self.buffer_output_register!r}")
        if self.host_relay is not None and (
                not isinstance(self.host_relay, int) or isinstance(self.host_relay, bool)
                or not 0 <= self.host_relay <= MAX_RELAY):
            raise ValueError(f"host_relay must be an integer in 0..{MAX_RELAY}, not "
                             f"{self.host_relay!r}")
        if self.bram_budget is not None and self.device is None:
            raise ValueError("bram_budget needs a device, whose block RAM geometry it counts")
        check(self)

    @property
    def peak_macs_per_cycle(self):
        return self.rows * self.cols

    @property
    def resources(self):
        """The :class:`hw.resources.Plan` of this configuration."""
        return plan(self)

    def to_dict(self):
        return asdict(self)
