"""Run compiled programs on the accelerator RTL (Verilator) and measure it.

::

    python -m sim.bench gemm --pe 16x16 --m 256 --k 256 --n 256 [--seed S]
    python -m sim.bench conv --pe 16x16 --size 4 --cin 512 --cout 32 --kernel 3
    python -m sim.bench layers --pe 16x16

``gemm`` loads both operands so they are resident (one COMPUTE when they fit the banks),
runs the COMPUTE, and reads its cycle counter through STATUS; the testbench also times the
whole run and every handshake. It prints measured compute cycles, the ideal
``ceil(M/R) * ceil(N/C) * K``, utilization = ideal / measured, the run's total cycles
including I/O, where the other cycles went, and the simulation speed; the result is checked
against the golden model (exit status 1 on a mismatch). ``conv`` does the same for one
random convolution (SAME padding; K = kernel^2 * cin beyond a bank is split into partial
COMPUTEs). ``layers`` does it for the GEMMs of the digits CNN (``golden.nets.zoo``) and
prints one table. Utilization is reported twice: ideal / busy cycles of the layer's
COMPUTEs (STATUS), and ideal / cycles of the whole run, loads and stores included.

The library part (:func:`build`, :func:`run_rtl`) is what the RTL tests use too.
"""

import argparse
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from golden.cli import (
    ArgumentParser,
    available_memory,
    format_bytes,
    nonnegative_int,
    positive_int,
)
from hw.config import AcceleratorConfig, pe_argument

__all__ = ["Run", "RunResult", "Utilization", "Measurement", "build", "run_rtl", "measure",
           "timeline", "main"]

TB_MODULE = "sim.tb.accel_tb"
RESET_MODES = ("cycle", "in", "out")


def build(config):
    """Verilator build of ``hw.top.Accelerator(config)`` (cached by ``sim.harness``)."""
    from hw.top import Accelerator
    from sim import harness

    return harness.build(harness.verilog_of(Accelerator(config)))


@dataclass
class Run:
    """One program for the testbench: input words (whole beats) and response words to
    collect. ``reset=(mode, count)`` abandons the run with a reset instead: ``"cycle"``
    after ``count`` cycles, ``"in"``/``"out"`` once ``count`` input/output beats passed.
    ``timeout``: cycles (0: :func:`default_timeout`); ``steps``: the array work its
    COMPUTEs announce, for that default (:meth:`of` takes it from a program)."""

    words: np.ndarray
    expect: int
    timeout: int = 0
    reset: tuple = ()
    steps: int = 0

    @classmethod
    def of(cls, program, **kwargs):
        """The run of a :class:`hw.driver.Program`, its work taken from the commands the
        driver emitted (never from scanning the words: data words can look like commands).
        """
        return cls(program.words, program.expected_response_words,
                   steps=compute_steps(program), **kwargs)


@dataclass
class RunResult:
    """What the RTL answered: response words, cycles of the run, and the cycle (from the
    start of the run) at which each input beat was offered and accepted and each output beat
    was accepted; ``wall``: seconds the simulation took for it."""

    resp: np.ndarray
    cycles: int
    in_offer: np.ndarray
    in_accept: np.ndarray
    out_accept: np.ndarray
    wall: float


def compute_steps(program):
    """Cycles the COMPUTEs of ``program`` can keep the array busy at most: every array step
    plus a fill and drain of the pipeline per tile and per command."""
    from hw.isa import Op

    c = program.config
    return sum(cmd.steps + cmd.tiles * (c.rows + c.cols + 16) + 100
               for cmd in program.commands if cmd.op == Op.COMPUTE)


def default_timeout(config, words, expect, steps, slack=1.0):
    """A generous cycle budget: every word a few cycles (narrow hosts take 32/width beats),
    four times the announced array work ``steps`` (what the interlocks can make the input
    wait), and backpressure ``slack``."""
    per_word = max(1, 32 // config.host_width)
    return int((8 * per_word * (len(words) + expect) + 4 * steps + 5000) * slack)


def run_rtl(config, runs, *, workdir=None, build_dir=None, seed=0, gap_p=0.0, gap_max=1,
            stall_p=0.0, stall_max=1, slack=None):
    """Run ``runs`` back to back on one simulation of ``config``; one RunResult per run.

    ``gap_p``/``gap_max``: input valid gaps, ``stall_p``/``stall_max``: output ready stalls
    (before each beat, with probability p, 1..max idle cycles). Raises
    ``sim.harness.SimulationFailed`` if the testbench failed (e.g. a timeout); its message
    names the folder that keeps the case and the simulation log (a temporary folder is
    kept then).
    """
    from sim import harness

    build_dir = build_dir or build(config)
    if slack is None:
        slack = (1 + gap_p * gap_max) * (1 + stall_p * stall_max)
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="qmac-sim-") if own else workdir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        case = {"runs": len(runs), "seed": seed, "gap_p": gap_p, "gap_max": gap_max,
                "stall_p": stall_p, "stall_max": stall_max}
        for n, run in enumerate(runs):
            words = np.asarray(run.words, dtype=np.uint32)
            case[f"words_{n}"] = words
            case[f"expect_{n}"] = run.expect
            case[f"timeout_{n}"] = run.timeout or default_timeout(config, words, run.expect,
                                                                  run.steps, slack)
            case[f"reset_{n}"] = np.array(
                [RESET_MODES.index(run.reset[0]), run.reset[1]] if run.reset else [], np.int64)
        np.savez(work / "case.npz", **case)
        try:
            harness.run(build_dir, TB_MODULE, testcase="run_case", test_dir=work, seed=seed,
                        env={"CASE": work / "case.npz", "OUT": work / "out.npz"})
        except harness.SimulationFailed as e:
            own = False         # keep the evidence
            raise harness.SimulationFailed(
                f"{_reason(work / 'sim.log')} (case and log kept in {work})\n{e}") from None
        out = np.load(work / "out.npz")
        empty = np.zeros(0, np.int64)
        return [RunResult(out[f"resp_{n}"], int(out[f"cycles_{n}"]),
                          out.get(f"in_offer_{n}", empty), out.get(f"in_accept_{n}", empty),
                          out.get(f"out_accept_{n}", empty), float(out.get(f"wall_{n}", 0)))
                for n in range(len(runs))]
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def _reason(log):
    """The testbench's own account of a failure (e.g. its timeout line) from the log."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no simulation log"
    for line in lines:
        found = re.search(r"\b\w*(Error|Exception): .*", line)
        if found:
            return found.group(0)[:300]
    return "the testbench failed"


# --- measurement -------------------------------------------------------------------------

def _beat_of_word(config, word):
    """Index of the last input beat that carries (part of) word ``word``."""
    w = config.host_width
    return word // (w // 32) if w >= 32 else (word + 1) * (32 // w) - 1


class Utilization:
    """The utilizations of a result with ``ideal`` array steps, ``compute`` busy cycles of
    the compute engine and ``total`` cycles of the whole run (a mixin of result classes)."""

    @property
    def utilization(self):
        """Ideal array steps per busy cycle of the compute engine."""
        return self.ideal / self.compute if self.compute else None

    @property
    def run_utilization(self):
        """Ideal array steps per cycle of the whole run, loads and stores included."""
        return self.ideal / self.total if self.total else None


@dataclass
class Measurement(Utilization):
    """One layer on the RTL: what STATUS and the testbench saw."""

    name: str
    m: int
    k: int
    n: int
    computes: int        # STATUS: COMPUTEs of the program
    ideal: int
    compute: int         # STATUS: busy cycles of all its COMPUTEs
    total: int           # the whole run, first input beat to last response beat
    in_words: int
    out_words: int
    phases: dict         # where the cycles went, see :func:`timeline`
    speed: float         # simulated cycles per wall-clock second
    exact: bool


def timeline(config, program, result):
    """Where a run's cycles went, from the handshake timestamps of the testbench.

    Returns a dict of cycle counts: ``load`` (first beat until the first COMPUTE is
    accepted), ``compute_tb`` (first COMPUTE accepted until the first beat of the last
    STORE's response: the STORE waits for the COMPUTE, so this is the compute time plus the
    STORE's latency), ``store`` (that first beat until the last one), ``out_gap`` (cycles
    inside that response without ``o.valid``), and ``stalls``: cycles the DUT held
    ``i.ready`` low against an offered beat, keyed ``"in X"`` for beats inside command X and
    ``"after X"`` for the header beat of the next command (X still executing, e.g. a STORE
    waiting for its COMPUTE and streaming its response).
    """
    from hw.isa import Op

    spans = program.commands
    stall = np.maximum(result.in_accept - result.in_offer - 1, 0)
    stalls, prev = {}, None
    for op, start, size, *_ in spans:
        first = _beat_of_word(config, start - 1) + 1 if start else 0
        last = _beat_of_word(config, start + size - 1)
        name = op.name
        if first <= last:
            if prev is not None:
                stalls[f"after {prev}"] = stalls.get(f"after {prev}", 0) + int(stall[first])
            inside = int(stall[first + 1:last + 1].sum())
            stalls[f"in {name}"] = stalls.get(f"in {name}", 0) + inside
        prev = name
    computes = [s for s in spans if s[0] == Op.COMPUTE]
    out = result.out_accept
    compute_accepted = int(result.in_accept[_beat_of_word(
        config, computes[0][1] + computes[0][2] - 1)])
    store_first = int(out[_first_beat_of_last_store(config, program)])
    return {"load": compute_accepted, "compute_tb": store_first - compute_accepted,
            "store": int(out[-1]) - store_first,
            "out_gap": int(out[-1] - store_first + 1
                           - (len(out) - _first_beat_of_last_store(config, program))),
            "stalls": {k: v for k, v in stalls.items() if v}}


def _first_beat_of_last_store(config, program):
    from hw import driver as drv

    wpb = drv.words_per_beat(config.host_width)
    per = max(1, 32 // config.host_width)
    sizes = [size for _, size in program.responses]
    last = max(i for i, (kind, _) in enumerate(program.responses) if kind == "store")
    words = sum(s + (-s % wpb) for s in sizes[:last])
    return words // wpb if config.host_width >= 32 else words * per


def measure(config, layers, *, build_dir=None, workdir=None):
    """Compile ``layers`` [(name, program, golden result)], run them back to back on one
    simulation without backpressure, and measure each."""
    from hw import driver as drv

    runs = [Run.of(p) for _, p, _ in layers]
    results = run_rtl(config, runs, build_dir=build_dir, workdir=workdir)
    out = []
    for (name, program, want), result in zip(layers, results, strict=True):
        try:
            got = program.decode(result.resp)
            exact = bool(np.array_equal(got, want))
        except drv.AcceleratorError:
            exact = False
        compute, computes = program.usage(result.resp)
        plan = program.plan
        out.append(Measurement(
            name, plan.m, plan.k, plan.n, computes, plan.ideal_cycles,
            compute, result.cycles, len(program.words),
            program.expected_response_words, timeline(config, program, result),
            result.cycles / result.wall if result.wall else 0.0, exact))
    return out


def random_gemm(config, m, k, n, rng, strategy="fewest"):
    """A full-range random GEMM layer, compiled with ``strategy``, and its golden result."""
    from golden.ops import gemm
    from golden.requant import requantize
    from hw import driver as drv

    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-127, 128, (k, n), dtype=np.int8)
    bias = rng.integers(-2 ** 20, 2 ** 20, n)
    m0, shift = drv.multipliers(config, np.exp2(rng.uniform(-10, -4, n)) / np.sqrt(k))
    z_out = int(rng.integers(-20, 20))
    args = (x, w, bias, m0, shift, z_out, -128, 127)
    program = drv.compile_gemm(config, *args, strategy=strategy)
    acc = gemm(x, np.ascontiguousarray(w.T), acc_width=config.acc_width)
    return program, requantize(acc, bias, m0, shift, z_out, rounding=config.rounding)


def random_conv(config, rng, name, hw, cin, cout, kernel, *, batch=1, out_scale=0.05,
                strategy="fewest"):
    """A random SAME convolution ``batch`` x hw x hw x cin -> cout, compiled, and its golden
    result: (name, program, want)."""
    from golden.ops import conv2d
    from hw import driver as drv

    x = rng.integers(-128, 128, (batch, hw, hw, cin), dtype=np.int8)
    w = rng.integers(-127, 128, (cout, kernel, kernel, cin), dtype=np.int8)
    bias = rng.integers(-5000, 5000, cout).astype(np.int32)
    m0, shift = drv.layer_multipliers(config, 0.02, rng.uniform(0.002, 0.02, cout), out_scale)
    kw = dict(z_in=-5, z_out=-128, padding="SAME", act_min=-128, act_max=127)
    program = drv.compile_conv2d(config, x, w, bias, m0, shift, strategy=strategy, **kw)
    return name, program, conv2d(x, w, bias, m0, shift, rounding=config.rounding, **kw)


def check_size(m, k, n):
    """Refuse a GEMM whose operands, program and golden result could not fit in memory or
    whose simulation could not end: ValueError with one line, before any allocation."""
    need = 3 * m * k + 3 * k * n + 16 * m * n     # int8 operands, their words, int64 acc
    room = available_memory()
    limit = min(room // 2, 16 * 10 ** 9) if room else 4 * 10 ** 9
    if need > limit:
        raise ValueError(f"GEMM M={m} K={k} N={n} needs about {format_bytes(need)} of "
                         f"memory; at most {format_bytes(limit)} are available to it")
    if m * k * n > 1 << 40:
        raise ValueError(f"GEMM M={m} K={k} N={n} takes {m * k * n} MACs; the simulation "
                         f"would not end (at most 2^40)")


def cnn_layers(config, rng):
    """GEMMs of the digits CNN (``golden.nets.zoo.cnn``) and of the shapes a bigger digits
    CNN has, as conv2d / fully-connected programs with golden results."""
    from golden.ops import fully_connected
    from hw import driver as drv

    def conv(name, hw, cin, cout, kernel):
        return random_conv(config, rng, name, hw, cin, cout, kernel)

    def fc(name, k, n):
        x = rng.integers(-128, 128, (1, k), dtype=np.int8)
        w = rng.integers(-127, 128, (n, k), dtype=np.int8)
        bias = rng.integers(-5000, 5000, n).astype(np.int32)
        m0, shift = drv.layer_multipliers(config, 0.02, rng.uniform(0.002, 0.02, n), 0.1)
        kw = dict(z_in=3, z_out=7)
        program = drv.compile_fully_connected(config, x, w, bias, m0, shift,
                                              strategy="fewest", **kw)
        return name, program, fully_connected(x, w, bias, m0, shift, rounding=config.rounding,
                                              **kw)

    return [
        conv("c1 conv3x3 1->16 8x8", 8, 1, 16, 3),
        conv("pw1 conv1x1 16->16 8x8", 8, 16, 16, 1),
        conv("conv3x3 16->32 8x8", 8, 16, 32, 3),
        conv("c2 conv3x3 16->32 4x4", 4, 16, 32, 3),
        conv("conv1x1 32->32 4x4", 4, 32, 32, 1),
        fc("fc 32->10", 32, 10),
        fc("fc 512->10", 512, 10),
    ]


def _percent(v):
    return f"{100 * v:6.1f}%" if v is not None else "    n/a"


def format_table(config, rows):
    """One line per layer: ``util`` = ideal / busy cycles of its COMPUTEs (STATUS),
    ``run`` = ideal / cycles of the whole run (loads and stores included)."""
    head = (f"{'layer':<24} {'M':>5} {'K':>5} {'N':>5} {'COMPUTEs':>8} {'ideal':>9} "
            f"{'compute':>9} {'util':>7} {'total':>9} {'run':>7} {'in w':>8} {'out w':>7} "
            f"{'cyc/s':>7} {'exact':>5}")
    lines = [f"accelerator {config.rows}x{config.cols}, host {config.host_width} bit, "
             f"acc {config.acc_width} bit, {config.rounding} rounding", head,
             "-" * len(head)]
    for r in rows:
        lines.append(f"{r.name:<24} {r.m:>5} {r.k:>5} {r.n:>5} {r.computes:>8} {r.ideal:>9} "
                     f"{r.compute:>9} {_percent(r.utilization)} {r.total:>9} "
                     f"{_percent(r.run_utilization)} {r.in_words:>8} {r.out_words:>7} "
                     f"{r.speed:>7.0f} {'yes' if r.exact else 'NO':>5}")
    return "\n".join(lines)


def format_phases(r):
    p = r.phases
    stalls = ", ".join(f"{k} {v}" for k, v in sorted(p["stalls"].items())) or "none"
    compute = (f"{r.computes} COMPUTE{'s' if r.computes != 1 else ''}, STATUS: {r.compute} "
               f"busy cycles, ideal {r.ideal}, overhead {r.compute - r.ideal}")
    return (f"{r.name}: total {r.total} cycles = load {p['load']} (until the first COMPUTE is "
            f"accepted) + compute {p['compute_tb']} (until the last STORE's first beat; "
            f"{compute}) + store {p['store']} ({p['out_gap']} cycles without o.valid). "
            f"i.ready stalls: {stalls}")


# --- command line ------------------------------------------------------------------------


def _parser():
    p = ArgumentParser(prog="python -m sim.bench", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="Builds are cached in sim_build/ (a 16x16 build takes about a minute).")
    sub = p.add_subparsers(dest="what", required=True, parser_class=ArgumentParser)
    common = ArgumentParser(add_help=False)
    common.add_argument("--pe", type=pe_argument, default=(16, 16), metavar="RxC",
                        help="PE array, e.g. 16x16 (default)")
    common.add_argument("--host-width", type=int, default=32, choices=(8, 16, 32, 64, 128),
                        help="host stream bits per beat (default 32)")
    common.add_argument("--acc-width", type=int, default=32, help="accumulator bits")
    common.add_argument("--rounding", choices=("double", "single"), default="double")
    common.add_argument("--seed", type=nonnegative_int, default=0,
                        help="random operands' seed (default 0)")
    g = sub.add_parser("gemm", parents=[common], help="one random GEMM, operands resident",
                       description="Random full-range GEMM Y = requantize(X[M,K] @ W[K,N]).")
    for dim in ("m", "k", "n"):
        g.add_argument(f"--{dim}", type=positive_int, default=256, help="default 256")
    g.add_argument("--strategy", choices=("fewest", "overlap"), default="fewest",
                   help="fewest: operands resident, as few COMPUTEs as fit (default); "
                        "overlap: the driver's default chunking, loads and stores hidden "
                        "behind double-buffered COMPUTEs")
    cv = sub.add_parser("conv", parents=[common], help="one random convolution",
                        description="Random full-range SAME convolution of a batch of "
                                    "size x size x cin images to cout channels; K = "
                                    "kernel^2 * cin beyond a bank is split.")
    cv.add_argument("--size", type=positive_int, default=4, help="image height = width "
                    "(default 4)")
    cv.add_argument("--cin", type=positive_int, default=512, help="input channels "
                    "(default 512)")
    cv.add_argument("--cout", type=positive_int, default=32, help="output channels "
                    "(default 32)")
    cv.add_argument("--kernel", type=positive_int, default=3, help="kernel size (default 3)")
    cv.add_argument("--batch", type=positive_int, default=1, help="images (default 1)")
    sub.add_parser("layers", parents=[common], help="the GEMMs of the digits CNN",
                   description="conv / FC layers of the digits CNN, one after the other.")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        config = AcceleratorConfig(rows=args.pe[0], cols=args.pe[1], acc_width=args.acc_width,
                                   rounding=args.rounding, host_width=args.host_width)
    except ValueError as exc:
        _parser().error(str(exc))
    rng = np.random.default_rng(args.seed)
    try:
        if args.what == "gemm":
            check_size(args.m, args.k, args.n)
            program, want = random_gemm(config, args.m, args.k, args.n, rng, args.strategy)
            layers = [(f"gemm {args.m}x{args.k}x{args.n}", program, want)]
        elif args.what == "conv":
            k = args.kernel ** 2 * args.cin
            check_size(args.batch * args.size ** 2, k, args.cout)
            name = (f"conv{args.kernel}x{args.kernel} {args.cin}->{args.cout} "
                    f"{args.size}x{args.size}")
            layers = [random_conv(config, rng, name, args.size, args.cin, args.cout,
                                  args.kernel, batch=args.batch,
                                  out_scale=0.03 * np.sqrt(k))]
        else:
            layers = cnn_layers(config, rng)
    except ValueError as exc:     # too big, accumulator overflow, output bank too small
        _parser().error(str(exc))
    print(f"{_parser().prog}: building the {config.rows}x{config.cols} accelerator "
          f"(Verilator)", file=sys.stderr, flush=True)
    started = time.perf_counter()
    build_dir = build(config)
    built = time.perf_counter() - started
    print(f"{_parser().prog}: simulating {len(layers)} layer(s), "
          f"{sum(p.plan.ideal_cycles for _, p, _ in layers)} ideal array cycles",
          file=sys.stderr, flush=True)
    rows = measure(config, layers, build_dir=build_dir)
    print(format_table(config, rows))
    print()
    for r in rows:
        print(format_phases(r))
    print(f"\nelaboration + Verilator build {built:.1f} s, simulation "
          f"{sum(r.total for r in rows)} cycles")
    if not all(r.exact for r in rows):
        print("MISMATCH against the golden model", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
