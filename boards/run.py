"""Run an int8 .tflite model with its CONV_2D and FULLY_CONNECTED layers on a board.

::

    python -m boards.run --board NAME --port DEV MODEL.tflite --input X.npy [--out Y.npy]
    python -m boards.run --board NAME --sim --pe RxC MODEL.tflite --input X.npy

The host resets the link, asks the bitstream who it is (ID) and refuses a build other than
``--pe`` (when given) on that board, then does what ``sim.run`` does: the golden model runs
the whole model, every CONV_2D / FULLY_CONNECTED layer runs on the board, fed the golden
model's input of that layer, and is compared bit for bit; every other operator runs on the
host. ``--out`` saves the model's output, taken from the board when a board layer produces
it. ``--sim`` runs the same host code against the board top (UART pins, link bridge,
accelerator; no PLL) under Verilator, with a bit-level UART at the real baud rate divided
from the board's clock; times are then simulated board time.

Exit status: 0 when every board layer matches, 1 on a mismatch or a link error (missing
port, a board that stops answering, a corrupted byte), 2 on bad input or a bitstream that
is not the requested build.
"""

import argparse
import json
import pickle
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from golden.cli import ArgumentParser, positive_int
from hw import driver as drv
from hw.config import AcceleratorConfig, pe_argument
from hw.isa import ID_WORDS
from sim.run import compile_layers

from .build import DEFAULT_BAUD, LINK_DEPTH, board_config
from .link import LinkError
from .platforms import BOARDS
from .platforms import board as board_named
from .top import HOST_WIDTH, IDLE_TIMEOUT_S
from .transport import LinkTransport, SerialPort

__all__ = ["Request", "LayerRun", "Result", "ConfigMismatch", "execute", "format_table",
           "simulate", "main"]


class ConfigMismatch(ValueError):
    """The bitstream on the board is not the build the command asked for."""


def as_identified(config):
    """``config`` as the ID command reports it: without the FPGA target, which decides how
    products and buffers are built (``hw.resources``), not what they compute; also the
    configuration the simulation builds (generic multiplies and memories)."""
    return replace(config, device=None, dsp_budget=None, bram_budget=None)


@dataclass
class Request:
    """What to run: the model and input files, samples, the expected build (or None to
    take whatever the board is), and the link timeout in seconds."""

    model: str
    input: str
    limit: int = 1
    expect: AcceleratorConfig | None = None
    timeout: float = 2.0

    def to_dict(self):
        return {**asdict(self), "expect": self.expect and self.expect.to_dict()}

    @classmethod
    def from_dict(cls, d):
        expect = d["expect"] and AcceleratorConfig(**d["expect"])
        return cls(**{**d, "expect": expect})


@dataclass
class LayerRun:
    """One operator; board layers with GEMM shape, link time, bytes and exactness."""

    index: int
    kind: str
    board: bool
    m: int = 0
    k: int = 0
    n: int = 0
    seconds: float = 0.0
    bytes_out: int = 0
    bytes_in: int = 0
    mismatches: int = 0
    error: str = ""

    @property
    def exact(self):
        return self.board and not self.error and self.mismatches == 0


@dataclass
class Result:
    config: AcceleratorConfig
    layers: list
    output: np.ndarray = field(repr=False, default=None)


def identify(link):
    """Reset the link, ID the bitstream: its :class:`AcceleratorConfig`."""
    link.reset()
    words = link(drv.cmd_id(), [len(ID_WORDS)])
    try:
        return drv.parse_id(words).to_config(HOST_WIDTH)
    except drv.AcceleratorError as e:
        raise LinkError(f"the board is not a qmac bitstream this host can drive: {e}") from None


def execute(port, request):
    """The host side of ``boards.run`` on any link port; returns a :class:`Result`.

    Raises
    ------
    LinkError
        On a link fault, bad frames or silence from the board.
    ConfigMismatch
        If the board's build is not ``request.expect``.
    ValueError
        On a bad model or input (or a layer the driver refuses).
    """
    from golden.tflite_io import load_tflite

    net = load_tflite(request.model)
    x = np.load(request.input, allow_pickle=False)
    probe = AcceleratorConfig(rows=1, cols=1, host_width=HOST_WIDTH)
    link = LinkTransport(port, probe, timeout=request.timeout)
    config = identify(link)
    if request.expect is not None and config != as_identified(request.expect):
        raise ConfigMismatch(f"the board holds {_describe(config)}, not the requested "
                             f"{_describe(request.expect)}")
    link.config = config
    driver = drv.Driver(config, link)
    layers = compile_layers(net, x, config, limit=request.limit)
    by_index, board_out = {}, {}
    for layer in layers:
        p = layer.program
        row = LayerRun(layer.index, layer.kind, True, p.plan.m, p.plan.k, p.plan.n,
                       bytes_out=4 * len(p.words), bytes_in=4 * p.expected_response_words)
        start = port.now()
        try:
            got = driver.run(p).reshape(layer.want.shape)
            row.mismatches = int(np.count_nonzero(got != layer.want))
            board_out[net.ops[layer.index].outputs[0]] = got
        except drv.AcceleratorError as e:
            row.error = str(e)
            row.mismatches = int(layer.want.size)
        row.seconds = port.now() - start
        by_index[layer.index] = row
    rows = [by_index.get(k, LayerRun(k, op.kind, False)) for k, op in enumerate(net.ops)]
    out_index = net.outputs[0]
    output = board_out.get(out_index)
    if output is None:
        output = net.run(x[:request.limit], rounding=config.rounding)[out_index]
    return Result(config, rows, output)


def _describe(c):
    return (f"{c.rows}x{c.cols} (acc {c.acc_width}, {c.rounding} rounding, depths "
            f"act {c.act_depth} wgt {c.wgt_depth} par {c.par_depth} out {c.out_depth})")


def format_table(result, where):
    c = result.config
    head = (f"{'op':>3}  {'kind':<18} {'M':>6} {'K':>5} {'N':>5} {'sent B':>8} {'recv B':>7} "
            f"{'time ms':>9}  {'exact':>5} {'mismatches':>10}")
    lines = [f"{where}: accelerator {_describe(c)}", head, "-" * len(head)]
    for r in result.layers:
        if not r.board:
            lines.append(f"{r.index:>3}  {r.kind:<18} {'on the host (golden model)':>42}")
            continue
        line = (f"{r.index:>3}  {r.kind:<18} {r.m:>6} {r.k:>5} {r.n:>5} {r.bytes_out:>8} "
                f"{r.bytes_in:>7} {1e3 * r.seconds:>9.2f}  {'yes' if r.exact else 'NO':>5} "
                f"{r.mismatches:>10}")
        lines.append(line + (f"  ({r.error})" if r.error else ""))
    return "\n".join(lines)


# --- simulation --------------------------------------------------------------------------

def sim_build(config, freq, baud):
    """Verilator build of the board top for ``config`` at ``freq`` MHz: (dir, divisor)."""
    from sim import harness

    from .top import UartAccelerator
    from .uart import divisor

    div = divisor(freq * 1e6, baud)
    top = UartAccelerator(config, divisor=div, depth=LINK_DEPTH,
                          idle_timeout=int(freq * 1e6 * IDLE_TIMEOUT_S))
    return harness.build(harness.verilog_of(top, name="top"), "top"), div


def simulate(request, config, *, freq, baud, noise=()):
    """Run :func:`execute` against the simulated board top of ``config``.

    Returns
    -------
    dict
        ``{"result": Result}``, or ``{"error": message}`` for a link error or mismatch of
        configuration raised inside the simulation.
    """
    from sim import harness

    build_dir, div = sim_build(as_identified(config), freq, baud)
    with tempfile.TemporaryDirectory(prefix="qmac-board-") as tmp:
        case, out = Path(tmp) / "case.npz", Path(tmp) / "out.pkl"
        np.savez(case, divisor=div, period_ps=2 * round(1e6 / freq / 2),
                 request=json.dumps(request.to_dict()),
                 noise=np.asarray(noise, np.int64).reshape(-1, 3))
        harness.run(build_dir, "sim.tb.board_tb", "top", env={"CASE": case, "OUT": out},
                    test_dir=Path(tmp) / "run")
        return pickle.loads(out.read_bytes())


# --- command line ------------------------------------------------------------------------

def _parser():
    p = ArgumentParser(prog="python -m boards.run", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="\n\n".join(__doc__.split("\n\n")[2:]))
    p.add_argument("model", metavar="MODEL.tflite", help="int8 TFLite flatbuffer, one input")
    p.add_argument("--input", metavar="X.npy", required=True,
                   help="int8 batch of shape (N, *input shape without batch)")
    p.add_argument("--out", metavar="Y.npy", help="save the model's output here")
    p.add_argument("--board", required=True, metavar="NAME", help=f"one of {', '.join(BOARDS)}")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", metavar="DEV", help="serial port of the board, e.g. "
                       "/dev/ttyUSB0 (iCEBreaker: the second port of the FT2232H)")
    where.add_argument("--sim", action="store_true",
                       help="run against the simulated board top instead (needs --pe)")
    p.add_argument("--pe", type=pe_argument, metavar="RxC",
                   help="the build to expect on the board (refuse any other); the build "
                        "to simulate with --sim")
    p.add_argument("--freq", type=float, metavar="MHZ",
                   help="--sim: the board clock (default: the board's)")
    p.add_argument("--baud", type=positive_int, default=DEFAULT_BAUD, metavar="N",
                   help=f"UART baud rate (default {DEFAULT_BAUD})")
    p.add_argument("--limit", type=positive_int, default=1, metavar="N",
                   help="run the first N samples of X (default 1)")
    p.add_argument("--timeout", type=float, default=2.0, metavar="S",
                   help="seconds of silence from the board before giving up (default 2)")
    return p


def main(argv=None):
    """Entry point; returns the exit status."""
    from sim.harness import SimulationFailed

    parser = _parser()
    args = parser.parse_args(argv)
    try:
        board = board_named(args.board)
        expect = board_config(board, *args.pe) if args.pe else None
        if args.sim and expect is None:
            raise ValueError("--sim needs --pe RxC: the build to simulate")
        for path, what in ((args.model, "model"), (args.input, "input")):
            if not Path(path).is_file():
                raise ValueError(f"cannot read {what} {path}: no such file")
        if not args.timeout > 0:
            raise ValueError(f"--timeout must be positive, not {args.timeout}")
    except ValueError as e:
        parser.error(str(e))
    request = Request(str(args.model), str(args.input), args.limit, expect, args.timeout)
    started = time.perf_counter()
    try:
        if args.sim:
            freq = args.freq or board.default_freq
            answer = simulate(request, expect, freq=freq, baud=args.baud)
            if "error" in answer:
                kind, _, message = answer["error"].partition(": ")
                raise (ConfigMismatch if kind == "ConfigMismatch" else LinkError)(message)
            result = answer["result"]
            where = f"{board.name} simulated at {freq:g} MHz, {args.baud} baud"
        else:
            port = SerialPort(args.port, args.baud)
            try:
                result = execute(port, request)
            finally:
                port.close()
            where = f"{board.name} on {args.port}, {args.baud} baud"
    except ConfigMismatch as e:
        parser.error(str(e))
    except (ValueError, OverflowError) as e:
        parser.error(" ".join(str(e).split()))
    except LinkError as e:
        print(f"{parser.prog}: link error: {e}", file=sys.stderr)
        return 1
    except SimulationFailed as e:
        print(f"{parser.prog}: simulation failed: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - started
    print(format_table(result, where))
    board_rows = [r for r in result.layers if r.board]
    bad = [r for r in board_rows if not r.exact]
    link_s = sum(r.seconds for r in board_rows)
    print(f"\n{len(board_rows)} board layers, {len(board_rows) - len(bad)} exact; "
          f"{1e3 * link_s:.1f} ms on the link ({'simulated' if args.sim else 'measured'}); "
          f"wall {wall:.1f} s")
    if args.out:
        np.save(args.out, result.output)
    if bad:
        print(f"MISMATCH against the golden model in op(s) "
              f"{', '.join(str(r.index) for r in bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
