"""How fast the Verilated accelerator simulates, and how much of that the testbench costs.

::

    python -m sim.speed --pe 16x16 [--m 256 --k 256 --n 256] [--cycles 200000] [--debug]

Builds ``hw.top.Accelerator`` the way every test does (``sim.harness``: only the ports
public; ``--debug``: every signal public, as cocotb's runner does by default), then on that
one build runs the random GEMM of ``python -m sim.bench gemm`` (checked against the golden
model) and a testbench that only clocks the idle design for ``--cycles`` cycles. It prints
the build time, both speeds in simulated cycles per second and their ratio, with the load
average beside them: these 2-core machines are shared, and speeds move with the load.
``--fresh`` builds in an empty cache to time a cold build.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from golden.cli import ArgumentParser, nonnegative_int, positive_int
from hw.config import AcceleratorConfig, pe_argument

__all__ = ["idle_speed", "main"]


def idle_speed(build_dir, cycles, workdir):
    """(cycles, wall seconds) of ``cycles`` idle clock cycles on ``build_dir``."""
    from sim import harness

    harness.run(build_dir, "sim.tb.clock_tb", testcase="idle", test_dir=workdir,
                env={"CYCLES": cycles, "OUT": Path(workdir) / "idle.npz"})
    out = np.load(Path(workdir) / "idle.npz")
    return int(out["cycles"]), float(out["wall"])


def _parser():
    p = ArgumentParser(prog="python -m sim.speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--pe", type=pe_argument, default=(16, 16), metavar="RxC",
                   help="PE array, e.g. 16x16 (default)")
    for dim in ("m", "k", "n"):
        p.add_argument(f"--{dim}", type=positive_int, default=256,
                       help="GEMM dimension (default 256)")
    p.add_argument("--cycles", type=positive_int, default=200_000,
                   help="idle clock cycles (default 200000)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random operands' seed")
    p.add_argument("--debug", action="store_true",
                   help="every signal public (cocotb's default), the slow build")
    p.add_argument("--fresh", action="store_true",
                   help="build in an empty temporary cache (a cold build)")
    return p


def _load():
    return f"load {os.getloadavg()[0]:.1f}"


def main(argv=None):
    from hw.top import Accelerator
    from sim import bench, harness

    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = AcceleratorConfig(rows=args.pe[0], cols=args.pe[1])
        bench.check_size(args.m, args.k, args.n)
        program, want = bench.random_gemm(config, args.m, args.k, args.n,
                                          np.random.default_rng(args.seed))
    except ValueError as exc:
        parser.error(str(exc))
    with tempfile.TemporaryDirectory(prefix="sim-speed-") as tmp:
        if args.fresh:
            os.environ["QMAC_SIM_CACHE"] = str(Path(tmp) / "cache")
        started = time.perf_counter()
        verilog = harness.verilog_of(Accelerator(config))
        elaborated = time.perf_counter()
        build_dir = harness.build(verilog, debug=args.debug)
        built = time.perf_counter()
        print(f"accelerator {config.rows}x{config.cols}, Verilator model with "
              f"{'every signal' if args.debug else 'only the ports'} public")
        print(f"elaboration {elaborated - started:.1f} s, Verilator build "
              f"{built - elaborated:.1f} s ({_load()})")
        load = _load()
        gemm = bench.measure(config, [("gemm", program, want)], build_dir=build_dir,
                             workdir=Path(tmp) / "gemm")[0]
        print(f"gemm {args.m}x{args.k}x{args.n}: {gemm.total} cycles at {gemm.speed:,.0f} "
              f"cycles/s, {'exact' if gemm.exact else 'MISMATCH'} ({load})")
        load = _load()
        cycles, wall = idle_speed(build_dir, args.cycles, Path(tmp) / "idle")
        print(f"idle clock: {cycles} cycles at {cycles / wall:,.0f} cycles/s ({load})")
        print(f"testbench-driven / idle clock: {gemm.speed * wall / cycles:.2f}")
    if not gemm.exact:
        print("MISMATCH against the golden model", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
