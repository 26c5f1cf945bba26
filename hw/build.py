"""Generate the accelerator's Verilog and a manifest describing it.

Usage: ``python -m hw.build --pe 16x16 [--out build/]``; ``--help`` lists every option.
Writes ``DIR/qmac_RxC.v`` (top module ``qmac_top``) and ``DIR/manifest.json``.

The buffers' contents are undefined after power-up (``docs/isa.md``), so the Verilog carries
no ``initial`` contents for memories whose Amaranth ``init`` is all zero: Amaranth would
otherwise spell out every zero word, and Yosys spent 1,269 of 1,734 s of a 16x16 synthesis
reading them (and a 1M-word buffer grew generation past 8 GB).
"""

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from amaranth import Shape

from golden.cli import ArgumentParser

from .config import HOST_WIDTHS, AcceleratorConfig, pe_argument
from .isa import ISA_VERSION, words_per_lanes
from .resources import DEVICES, fitting_depths

__all__ = ["TOP_MODULE", "convert", "generate", "manifest", "check_out_dir",
           "add_config_arguments", "config_from_args", "main"]

TOP_MODULE = "qmac_top"
_DEFAULTS = AcceleratorConfig()


def _ports(top):
    """The top module's ports as Verilog names them: clock and reset, then the streams."""
    ports = [
        {"name": "clk", "direction": "input", "width": 1},
        {"name": "rst", "direction": "input", "width": 1},
    ]
    for path, member in top.signature.members.flatten():
        if member.is_port:
            ports.append({
                "name": "__".join(map(str, path)),
                "direction": "input" if member.flow.name == "In" else "output",
                "width": Shape.cast(member.shape).width,
            })
    return ports


def _buffers(config):
    c = config
    par_bits = c.cols * (32 + 32 + 6)
    sizes = {
        "act": (c.act_depth, 8 * c.rows, words_per_lanes(c.rows)),
        "wgt": (c.wgt_depth, 8 * c.cols, words_per_lanes(c.cols)),
        "par": (c.par_depth, par_bits, 3 * c.cols),
        "out": (c.out_depth, 8 * c.cols, words_per_lanes(c.cols)),
    }
    return {name: {"banks": 2, "words_per_bank": depth, "bits_per_word": bits,
                   "host_words_per_word": host_words, "total_bits": 2 * depth * bits}
            for name, (depth, bits, host_words) in sizes.items()}


def resources(config):
    """The manifest's ``resources`` section: expected DSP blocks and block RAMs (docs/fpga.md)."""
    return config.resources.to_dict()


def manifest(config, top, *, verilog_name, seconds):
    """The description of one build, as written to ``manifest.json``."""
    from amaranth import __version__ as amaranth_version

    c = config
    return {
        "top_module": TOP_MODULE,
        "verilog": verilog_name,
        "isa_version": ISA_VERSION,
        "config": c.to_dict(),
        "ports": _ports(top),
        "buffers": _buffers(c),
        "peak_macs_per_cycle": c.peak_macs_per_cycle,
        "resources": resources(c),
        "latency": {
            "array": top.array_latency,
            "requantizer": top.requant_latency,
        },
        "generated": {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(seconds, 2),
            "amaranth": amaranth_version,
        },
    }


# Yosys's Verilog backend writes operands narrower than their operator (sign extensions of
# products into sums, `!` on multi-bit values, `case` without `default` on full decodes):
# correct Verilog that Verilator's lint reports as width / case warnings, fatal by default.
# Waiving exactly those three in the file lets a plain `verilator --lint-only` pass while
# every other lint check stays on.
LINT_PREAMBLE = (
    "/* verilator lint_off WIDTHEXPAND */\n"
    "/* verilator lint_off WIDTHTRUNC */\n"
    "/* verilator lint_off CASEINCOMPLETE */\n"
)


@contextmanager
def _without_zero_memory_init():
    # Amaranth 0.5 has no "uninitialised" memory: ``init=[]`` means all zeros, and its RTLIL
    # emitter writes that as one $meminit_v2 constant of depth x width bits, built one bit at a
    # time. Skipping the cell when every word is zero leaves the memory uninitialised ('x), which
    # is what the design promises. Amaranth is pinned (pyproject.toml); a version without this
    # method fails here loudly instead of silently emitting the initialisers.
    from amaranth.back import rtlil

    emit_memory = rtlil.ModuleEmitter.emit_memory

    def emit_nonzero_init(self, cell_idx, cell):
        if any(cell.init):
            emit_memory(self, cell_idx, cell)

    rtlil.ModuleEmitter.emit_memory = emit_nonzero_init
    try:
        yield
    finally:
        rtlil.ModuleEmitter.emit_memory = emit_memory


def convert(top, fmt="verilog", name=TOP_MODULE):
    """Verilog or RTLIL text of the component ``top``, without all-zero memory initialisers.

    Parameters
    ----------
    top : wiring.Component
        E.g. :class:`hw.top.Accelerator`; its signature's members become the ports.
    fmt : {"verilog", "rtlil"}
        Verilog (through Amaranth's Yosys, the same text as ``amaranth.back.verilog``) or
        Yosys's RTLIL (``read_rtlil``; no Yosys run at generation time).
    name : str
        Top module name.
    """
    from amaranth.back import rtlil, verilog

    backends = {"verilog": verilog.convert, "rtlil": rtlil.convert}
    if fmt not in backends:
        raise ValueError(f"Format must be one of {', '.join(backends)}, not {fmt!r}")
    with _without_zero_memory_init():
        return backends[fmt](top, name=name, emit_src=False)


def generate(config, out_dir):
    """Write the Verilog and the manifest of ``config`` into ``out_dir``; return the manifest."""
    from .top import Accelerator

    start = time.monotonic()
    top = Accelerator(config)
    text = convert(top)
    seconds = time.monotonic() - start
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"qmac_{config.rows}x{config.cols}.v"
    (out_dir / name).write_text(LINT_PREAMBLE + text)
    info = manifest(config, top, verilog_name=name, seconds=seconds)
    (out_dir / "manifest.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def check_out_dir(path):
    """Create the output directory ``path`` if needed and check it is writable.

    Called before any work, so that a bad ``--out`` costs nothing. Returns None when it is
    usable, else a sentence naming the problem (for ``parser.error``).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"--out must be a directory, not the file {str(path)!r}"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"--out: cannot create directory {str(path)!r}: {exc.strerror}"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"--out: directory {str(path)!r} is not writable"
    return None



def _int(text):
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None


def add_config_arguments(parser, *, host_width_default=_DEFAULTS.host_width, pe_required=True):
    """Add the options of an :class:`AcceleratorConfig` (``--pe``, widths, depths) to
    ``parser``; :func:`config_from_args` reads them back. ``hw.synth`` shares them."""
    p = parser
    p.add_argument("--pe", type=pe_argument, required=pe_required, metavar="RxC",
                   help="PE array size, rows x columns, each 1..64 (e.g. 16x16)")
    p.add_argument("--acc-width", type=_int, default=_DEFAULTS.acc_width, metavar="N",
                   help=f"accumulator bits, 16..32 (default {_DEFAULTS.acc_width})")
    p.add_argument("--rounding", choices=("double", "single"), default=_DEFAULTS.rounding,
                   help="requantizer rounding: TFLite's default double rounding or "
                        "TFLITE_SINGLE_ROUNDING (default %(default)s)")
    default = "depends on the device" if host_width_default is None else host_width_default
    p.add_argument("--host-width", type=_int, default=host_width_default, metavar="W",
                   help=f"bits per host stream beat, one of {', '.join(map(str, HOST_WIDTHS))}"
                        f" (default {default})")
    for name, what in (("act", "activation words (R int8) per bank"),
                       ("wgt", "weight words (C int8) per bank"),
                       ("par", "parameter groups (C channels) per bank"),
                       ("out", "output words (C int8) per bank")):
        default = getattr(_DEFAULTS, f"{name}_depth")
        p.add_argument(f"--{name}-depth", type=_int, default=None, metavar="WORDS",
                       help=f"{what} (default {default}, halved as needed to fit --device)")
    p.add_argument("--dsp", type=_int, default=None, metavar="N",
                   help="DSP blocks to use at most (default: all of --device's, or no limit); "
                        "the other multipliers are built in logic")
    p.add_argument("--bram", type=_int, default=None, metavar="N",
                   help="block RAMs to use at most (default: all of --device's)")
    p.add_argument("--buffer-latency", type=_int, choices=(1, 2), default=None, metavar="L",
                   help="read latency of the block-RAM buffers: 2 registers their inputs "
                        "lane by lane (default: 2 on ECP5, else 1)")
    p.add_argument("--buffer-output-register", choices=("on", "off"), default=None,
                   help="register every buffer's read data once more, one more cycle of "
                        "read latency (default: on for ECP5 devices, off otherwise)")
    p.add_argument("--host-relay", type=_int, default=None, metavar="STAGES",
                   help="register stages each way between each host port and the "
                        "controller, with credit flow control (default 0: none)")


def config_from_args(args):
    """The :class:`AcceleratorConfig` of options added by :func:`add_config_arguments`, for
    ``args.device`` if the parser has one (depths not given are the defaults, halved until
    the buffers fit its block RAM: :func:`hw.resources.fitting_depths`); ValueError naming
    the bad parameter or the resource that does not fit."""
    rows, cols = args.pe
    fields = dict(rows=rows, cols=cols, acc_width=args.acc_width, rounding=args.rounding,
                  host_width=args.host_width, device=getattr(args, "device", None),
                  dsp_budget=args.dsp, bram_budget=args.bram,
                  buffer_latency=args.buffer_latency,
                  buffer_output_register={None: None, "on": True, "off": False}[
                      args.buffer_output_register],
                  host_relay=args.host_relay)
    depths = {f"{name}_depth": getattr(args, f"{name}_depth")
              for name in ("act", "wgt", "par", "out")}
    given = {key: v for key, v in depths.items() if v is not None}
    fitting = fitting_depths(SimpleNamespace(**{**_DEFAULTS.to_dict(), **fields, **given}))
    return AcceleratorConfig(**fields, **{**fitting, **given})


def _parser():
    p = ArgumentParser(
        prog="python -m hw.build",
        description="Generate the Verilog of the INT8 MAC-array accelerator (top module "
                    f"{TOP_MODULE}) and a manifest.json describing the build.")
    add_config_arguments(p)
    p.add_argument("--device", choices=tuple(DEVICES), default=None,
                   help="target FPGA: its DSP blocks and block RAMs are the budget, and ECP5 "
                        "DSP blocks are instantiated with their registers (default: none, "
                        "generic multipliers, as for simulation)")
    p.add_argument("--out", type=Path, default=Path("build"), metavar="DIR",
                   help="output directory (default build/)")
    return p


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    rows, cols = args.pe
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    problem = check_out_dir(args.out)
    if problem:
        parser.error(problem)
    print(f"generating qmac {rows}x{cols} ...", flush=True)
    try:
        info = generate(config, args.out)
    except OSError as exc:
        print(f"{parser.prog}: error: cannot write to {str(args.out)!r}: {exc.strerror}",
              file=sys.stderr)
        return 1
    kbits = sum(b["total_bits"] for b in info["buffers"].values()) / 1024
    print(f"qmac {rows}x{cols}: {info['peak_macs_per_cycle']} MACs/cycle, acc {config.acc_width}"
          f" bits, {config.rounding} rounding, host {config.host_width} bits, "
          f"buffers {kbits:.0f} kbit, latency array {info['latency']['array']} + requantizer "
          f"{info['latency']['requantizer']} cycles")
    res = info["resources"]
    if res["device"] is not None:
        print(f"{res['device']}: {res['dsp']['used']}/{res['dsp']['available']} "
              f"{res['dsp']['primitive']}, {res['block_ram']['used']}/"
              f"{res['block_ram']['available']} {res['block_ram']['primitive']} "
              f"(depths act {config.act_depth}, wgt {config.wgt_depth}, par "
              f"{config.par_depth}, out {config.out_depth})")
    print(f"wrote {args.out / info['verilog']} and {args.out / 'manifest.json'} "
          f"in {info['generated']['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
