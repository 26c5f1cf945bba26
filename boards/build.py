"""Build a board bitstream with the YoWASP tools and report what it uses and how fast it runs.

::

    python -m boards.build --board NAME --pe RxC|auto [--freq MHZ] [--baud N] [--out DIR]

Writes into ``DIR`` (default ``build/board-NAME-RxC``) the Amaranth build files, the
bitstream (``qmac_board.bin`` on iCE40, ``qmac_board.bit`` on ECP5), the tool logs
(``qmac_board.rpt``: Yosys, ``qmac_board.tim``: nextpnr, ``nextpnr-report.json``: nextpnr's
own report) and ``report.json``; prints one summary line.

``--pe auto`` searches for the largest array: a resource model (DSP blocks as measured,
``R*C + 4*C + 3``, block RAM from the buffer shapes, logic from the per-PE estimate)
picks the largest array that fits the device, and place and route confirms it; an array
that does not place or misses the clock makes the search step down to the next smaller.

Exit status: 0 when the bitstream is built and meets timing, 1 when a tool fails or the
design misses timing, 2 on a bad argument (unknown board, an array the device cannot hold).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from golden.cli import ArgumentParser, positive_int
from hw.config import MAX_DIM, AcceleratorConfig, parse_pe

from .platforms import BOARDS
from .platforms import board as board_named
from .top import HOST_WIDTH, BoardTop, clock_plan

__all__ = ["NAME", "DEFAULT_BAUD", "LINK_DEPTH", "TX_DEPTH", "board_config", "estimate",
           "check_fit", "candidates", "read_report", "build", "summary", "main"]

NAME = "qmac_board"
DEFAULT_BAUD = 3_000_000
LINK_DEPTH = 2048
TX_DEPTH = 512
#: Logic per PE and for everything else (controller, requantizer, link), and extra per
#: product built in logic (an 8x8 PE product, a 16x16 requantizer partial product); only
#: used to rank arrays before place and route decides. Measured: iCEBreaker 1x1 4884 LCs,
#: ULX3S-85F 4x4 8528 LUTs.
LUTS_PER_PE = 120
LUTS_BASE = {"ice40": 4800, "ecp5": 6600}
LUTS_LOGIC_PE = 80
LUTS_LOGIC_REQUANT = 320
#: Share of the LUTs the model lets an array take (place and route needs slack).
LUT_SHARE = 0.95

#: hw.resources' names of our devices.
_SYNTH_DEVICES = {"iCE40UP5K": "ice40-up5k", "LFE5U-12F": "ecp5-12f", "LFE5U-25F": "ecp5-25f",
                  "LFE5U-45F": "ecp5-45f", "LFE5U-85F": "ecp5-85f"}

_TOOLS = {"YOSYS": "yosys", "NEXTPNR_ICE40": "nextpnr-ice40", "ICEPACK": "icepack",
          "NEXTPNR_ECP5": "nextpnr-ecp5", "ECPPACK": "ecppack"}


def link_brams(board):
    """Block RAMs of the link: its receive buffer and transmit FIFO."""
    from hw.resources import block_rams

    return sum(block_rams(board.family, words, 1, 8, False) for words in (LINK_DEPTH, TX_DEPTH))


def board_config(board, rows, cols):
    """The accelerator of ``rows`` x ``cols`` for ``board``: 8-bit host stream, the device's
    DSP blocks (products past them in logic, ``hw.resources``), and the deepest buffers
    (``hw.resources.fitting_depths``) that leave the link its block RAMs."""
    from types import SimpleNamespace

    from hw.resources import DEVICES, ResourceError, fitting_depths

    device = _SYNTH_DEVICES[board.device.name]
    budget = DEVICES[device].bram - link_brams(board)
    trial = {name: f.default for name, f in AcceleratorConfig.__dataclass_fields__.items()}
    trial.update(rows=rows, cols=cols, host_width=HOST_WIDTH, device=device,
                 bram_budget=budget)
    depths = fitting_depths(SimpleNamespace(**trial))
    try:
        return AcceleratorConfig(**{**trial, **depths})
    except ResourceError as e:
        # Even the smallest buffers overflow: say so without hw.build's option names.
        need = str(e).split("; reduce")[0].replace("the --bram budget", "what the link leaves")
        raise ValueError(f"a {rows}x{cols} array does not fit {board.name}: {need}") from None


def estimate(board, config):
    """Resource model of ``config`` on ``board``: dict of dsp, bram, spram (as
    ``hw.resources`` plans them, link included) and lut (an estimate)."""
    p = config.resources
    logic_pe = sum(impl == "logic" for impl in p.pe_multipliers)
    logic_rq = sum(impl == "logic" for impl in p.requant_multipliers)
    return {
        "dsp": p.dsp,
        "bram": p.bram + link_brams(board),
        "spram": sum((p.spram or {}).values()),
        "lut": (LUTS_BASE[board.family] + LUTS_PER_PE * config.rows * config.cols
                + LUTS_LOGIC_PE * logic_pe + LUTS_LOGIC_REQUANT * logic_rq),
    }


def check_fit(board, config):
    """ValueError when the model says ``config`` does not fit ``board``'s logic (DSP blocks
    and block RAM are budgeted by the configuration itself)."""
    dev = board.device
    need = estimate(board, config)["lut"]
    if need > LUT_SHARE * dev.luts:
        raise ValueError(f"a {config.rows}x{config.cols} array needs about {need} LUTs but "
                         f"the {dev.name} of {board.name} has {dev.luts} (the model allows "
                         f"{LUT_SHARE:.0%})")


def candidates(board):
    """Arrays the model says fit ``board``, largest first (R = C, or R = 2C / C = 2R)."""
    shapes = {(r, c) for r in range(1, MAX_DIM + 1) for c in range(1, MAX_DIM + 1)
              if r == c or r == 2 * c or c == 2 * r}
    fits = []
    for r, c in shapes:
        try:
            check_fit(board, board_config(board, r, c))
        except ValueError:     # logic past the model's share, or buffers past the block RAM
            continue
        fits.append((r * c, r, c))
    return [(r, c) for _, r, c in sorted(fits, reverse=True)]


def tool_env():
    """The environment with Amaranth's tool variables pointing at the YoWASP tools that sit
    beside this interpreter."""
    env = dict(os.environ)
    bindir = Path(sys.executable).parent
    for var, tool in _TOOLS.items():
        exe = bindir / f"yowasp-{tool}"
        env[var] = str(exe) if exe.exists() else f"yowasp-{tool}"
    return env


def read_report(board, config, out, nextpnr, yosys_log, *, target, baud, divisor, seconds):
    """The report of one build, every figure from the tools' own outputs as
    :func:`hw.synth.summarize` reads them: nextpnr's ``--report`` (Fmax of the design clock
    against the constraint nextpnr derived through the PLL, utilisation) and the Yosys log
    (LUT and flip-flop cells on iCE40, where nextpnr counts logic cells). Peak GOPS is
    ``2 * R * C * target``: the board runs at the PLL's clock, not at Fmax."""
    from hw.synth import DEVICES, summarize

    synth_device = DEVICES[_SYNTH_DEVICES[board.device.name]]
    figures = summarize(device=synth_device, rows=config.rows, cols=config.cols,
                        yosys_log=yosys_log, nextpnr_report=nextpnr)
    bitstream = Path(out) / (f"{NAME}.bin" if board.family == "ice40" else f"{NAME}.bit")
    return {
        "board": board.name,
        "device": board.device.name,
        "pe": f"{config.rows}x{config.cols}",
        "config": config.to_dict(),
        "target_mhz": round(target, 4),
        "fmax_mhz": figures["fmax_mhz"],
        "timing_met": figures["timing_met"],
        "baud": baud,
        "uart_divisor": divisor,
        "link_depth": LINK_DEPTH,
        "resources": figures["resources"],
        "critical_path": figures["critical_path"],
        "peak_gops": round(2 * config.rows * config.cols * target / 1e3, 3),
        "bitstream": str(bitstream) if bitstream.exists() else None,
        "logs": {"yosys": f"{NAME}.rpt", "nextpnr": f"{NAME}.tim",
                 "nextpnr_report": "nextpnr-report.json"},
        "seconds": round(seconds, 1),
    }


class BuildFailed(RuntimeError):
    """A tool of the build failed; the message names it and the log to read."""


def build(board, config, *, freq, baud, out):
    """Build the bitstream of ``config`` on ``board`` into ``out``; return the report
    (also written to ``out/report.json``).

    Raises
    ------
    ValueError
        On a PLL or baud rate the board cannot make, or an array that does not fit.
    BuildFailed
        When Yosys, nextpnr or the packer fails (e.g. the placer runs out of cells).
    """
    check_fit(board, config)
    top = BoardTop(board, config, freq=freq, baud=baud, depth=LINK_DEPTH)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    opts = ["--report", "nextpnr-report.json", "--timing-allow-fail"]
    synth = []
    if board.family == "ice40":
        synth.append("-dsp")
    else:
        # The default router did not converge on arrays of 8x8 and up in 25 minutes.
        opts += ["--router", "router2"]
    # Amaranth writes an all-zero initializer for every memory; the buffers' contents are
    # undefined (docs/isa.md) and the FIFOs' never read before written, and SPRAM cannot
    # be initialized at all, so the initializers go before synthesis (as hw.build does).
    plan = board.platform().build(top, name=NAME, build_dir=str(out), do_build=False,
                                  synth_opts=" ".join(synth), nextpnr_opts=" ".join(opts),
                                  script_after_read="delete t:$meminit_v2")
    start = time.monotonic()
    try:
        plan.execute_local(str(out), env=tool_env())
    except subprocess.CalledProcessError as e:
        log = out / (f"{NAME}.tim" if (out / f"{NAME}.json").exists() else f"{NAME}.rpt")
        raise BuildFailed(f"{Path(str(e.cmd[0]) if isinstance(e.cmd, list) else 'build').name}"
                          f" failed (exit {e.returncode}); see {log}") from None
    seconds = time.monotonic() - start
    nextpnr = json.loads((out / "nextpnr-report.json").read_text())
    yosys_log = (out / f"{NAME}.rpt").read_text(errors="replace")
    report = read_report(board, config, out, nextpnr, yosys_log, target=top.freq,
                         baud=baud, divisor=top.divisor, seconds=seconds)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def summary(report):
    """The one line ``boards.build`` prints."""
    used = ", ".join(f"{k} {v['used']}/{v['total']}" for k, v in report["resources"].items()
                     if k != "IO")
    return (f"{report['board']} ({report['device']}) {report['pe']}: "
            f"{report['fmax_mhz']:.1f} MHz achieved for {report['target_mhz']:g} MHz "
            f"({'met' if report['timing_met'] else 'MISSED'}), {used}, "
            f"peak {report['peak_gops']:.3g} GOPS, {report['baud']} baud; "
            f"{report['bitstream']} in {report['seconds']:.0f} s")


def search(board, shapes, *, freq, baud, out, auto):
    """Build the first of ``shapes`` that places, routes and (with ``auto``) meets the
    clock, stepping down on failure; returns the report of the last build tried.

    Raises
    ------
    BuildFailed
        If the last shape fails to build.
    """
    for n, (r, c) in enumerate(shapes):
        config = board_config(board, r, c)
        last = n + 1 == len(shapes)
        where = Path(out) / f"{r}x{c}" if auto else Path(out)
        if auto:
            need = estimate(board, config)
            print(f"auto: trying {r}x{c} (model: {need['dsp']} of {board.device.dsps} DSP, "
                  f"{need['bram']} of {board.device.brams} block RAMs, "
                  f"~{need['lut']} of {board.device.luts} LUTs)", flush=True)
        try:
            report = build(board, config, freq=freq, baud=baud, out=where)
        except BuildFailed as e:
            if not auto or last:
                raise
            print(f"auto: {r}x{c} does not place and route ({e}); trying smaller", flush=True)
            continue
        if auto and not report["timing_met"] and not last:
            print(f"auto: {r}x{c} reaches {report['fmax_mhz']:.1f} MHz, below "
                  f"{report['target_mhz']:g}; trying smaller", flush=True)
            continue
        if auto:
            print(f"auto: chose {r}x{c}, the largest array that the model fits on "
                  f"{board.device.name} and that places, routes and meets "
                  f"{report['target_mhz']:g} MHz" if report["timing_met"] else
                  f"auto: even {r}x{c} misses {report['target_mhz']:g} MHz", flush=True)
        return report
    raise AssertionError("no shape to build")


def _parser():
    p = ArgumentParser(prog="python -m boards.build", description=__doc__.split("\n\n")[0],
                       epilog="boards: " + ", ".join(BOARDS))
    p.add_argument("--board", metavar="NAME",
                   help=f"one of {', '.join(BOARDS)}")
    p.add_argument("--pe", metavar="RxC|auto",
                   help="PE array (e.g. 4x4), or auto for the largest that fits and meets "
                        "the clock")
    p.add_argument("--freq", type=float, metavar="MHZ",
                   help="clock of the design (default: the board's, e.g. 24 on icebreaker)")
    p.add_argument("--baud", type=positive_int, default=DEFAULT_BAUD, metavar="N",
                   help=f"UART baud rate (default {DEFAULT_BAUD})")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="output folder (default build/board-NAME-RxC)")
    p.add_argument("--results", action="store_true",
                   help="build the largest array of each board (or of --board, or --pe), "
                        "measure the digits CNN on its simulated board, and print the "
                        "results table of docs/boards.md (default folder "
                        "build/board-results)")
    return p


def _prepare(parser, args):
    try:
        board = board_named(args.board)
        freq = args.freq if args.freq is not None else board.default_freq
        if args.baud > board.max_baud:
            raise ValueError(f"--baud must be at most {board.max_baud} on {board.name} "
                             f"({board.usb_uart}), not {args.baud}")
        if args.pe == "auto":
            shapes = candidates(board)
            if not shapes:
                raise ValueError(f"no array fits {board.name}")
        else:
            shapes = [parse_pe(args.pe)]
        first = board_config(board, *shapes[0])
        check_fit(board, first)
        # The PLL's nearest setting and the UART divisor of it, checked before any tool runs.
        clock_plan(board, freq, args.baud)
    except ValueError as e:
        parser.error(str(e))
    return board, freq, shapes


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.results:
        return _results(parser, args)
    if args.board is None or args.pe is None:
        parser.error("--board and --pe are required (or --results)")
    board, freq, shapes = _prepare(parser, args)
    auto = args.pe == "auto"
    out = args.out or Path("build") / f"board-{board.name}-{args.pe}"
    try:
        report = search(board, shapes, freq=freq, baud=args.baud, out=out, auto=auto)
    except BuildFailed as e:
        print(f"{parser.prog}: {e}", file=sys.stderr)
        return 1
    print(summary(report))
    return 0 if report["timing_met"] else 1


def _results(parser, args):
    from . import results

    out = args.out or Path("build") / "board-results"
    entries = []
    for name in [args.board] if args.board else results.RESULT_BOARDS:
        args.board = name
        board, freq, shapes = _prepare(parser, argparse.Namespace(**{**vars(args),
                                                                     "pe": args.pe or "auto"}))
        try:
            report = search(board, shapes, freq=freq, baud=args.baud, out=out / name,
                            auto=(args.pe or "auto") == "auto")
        except BuildFailed as e:
            print(f"{parser.prog}: {name}: {e}", file=sys.stderr)
            return 1
        print(summary(report), flush=True)
        measured = results.measure(board, report, out)
        measured["command"] = (f"python -m boards.build --results --board {name}"
                               + (f" --pe {args.pe}" if args.pe else ""))
        entries.append((report, measured))
        results.save(out, entries)
    print(results.table(entries))
    print(f"wrote {out / 'results.md'} and {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
