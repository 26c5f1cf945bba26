"""Run compiled programs on the accelerator RTL (Verilator) and measure it.

::

    python -m sim.bench gemm --pe 16x16 --m 256 --k 256 --n 256 [--seed S]
    python -m sim.bench layers --pe 16x16

``gemm`` loads both operands so they are resident (one COMPUTE when they fit the banks),
runs the COMPUTE, and reads its cycle counter through STATUS; the testbench also times the
whole run and every handshake. It prints measured compute cycles, the ideal
``ceil(M/R) * ceil(N/C) * K``, utilization = ideal / measured, the run's total cycles
including I/O, where the other cycles went, and the simulation speed; the result is checked
against the golden model (exit status 1 on a mismatch). ``layers`` does the same for the
GEMMs of the digits CNN (``golden.nets.zoo``) and prints one table.

The library part (:func:`build`, :func:`run_rtl`) is what the RTL tests use too.
"""

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw.config import AcceleratorConfig, parse_pe

__all__ = ["Run", "RunResult", "build", "run_rtl", "main"]

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
    after ``count`` cycles, ``"in"``/``"out"`` once ``count`` input/output beats passed."""

    words: np.ndarray
    expect: int
    timeout: int = 0
    reset: tuple = ()


@dataclass
class RunResult:
    """What the RTL answered: response words, cycles of the run, and the cycle (from the
    start of the run) at which each input beat was offered and accepted and each output beat
    was accepted."""

    resp: np.ndarray
    cycles: int
    in_offer: np.ndarray
    in_accept: np.ndarray
    out_accept: np.ndarray


def default_timeout(config, words, expect, slack=1.0):
    """A generous cycle budget: every word a few cycles (narrow hosts take 32/width beats),
    every COMPUTE the worst imaginable array pass, and backpressure ``slack``."""
    per_word = max(1, 32 // config.host_width)
    return int((8 * per_word * (len(words) + expect) + 4 * _compute_bound(config, words)
                + 5000) * slack)


def _compute_bound(config, words):
    """Sum over COMPUTE headers of (K * m_tiles * n_tiles + fill), scanned from the stream;
    an upper bound of what the interlocks can make the input wait."""
    from hw.isa import Op

    total, w = 0, np.asarray(words, dtype=np.int64)
    heads = np.flatnonzero((w >> 24) == Op.COMPUTE)
    for h in heads[heads + 3 < len(w)]:
        k, mt, nt = (int(v) for v in w[h + 1:h + 4])
        if k * mt * nt < 1 << 26:
            total += k * mt * nt + mt * nt * (config.rows + config.cols) + 100
    return total


def run_rtl(config, runs, *, workdir=None, build_dir=None, seed=0, gap_p=0.0, gap_max=1,
            stall_p=0.0, stall_max=1, slack=None):
    """Run ``runs`` back to back on one simulation of ``config``; one RunResult per run.

    ``gap_p``/``gap_max``: input valid gaps, ``stall_p``/``stall_max``: output ready stalls
    (before each beat, with probability p, 1..max idle cycles). Raises
    ``sim.harness.SimulationFailed`` if the testbench failed (e.g. a timeout).
    """
    from sim import harness

    build_dir = build_dir or build(config)
    if slack is None:
        slack = (1 + gap_p * gap_max) * (1 + stall_p * stall_max)
    own = workdir is None
    tmp = tempfile.TemporaryDirectory(prefix="accel-") if own else None
    work = Path(tmp.name if own else workdir)
    try:
        case = {"runs": len(runs), "seed": seed, "gap_p": gap_p, "gap_max": gap_max,
                "stall_p": stall_p, "stall_max": stall_max}
        for n, run in enumerate(runs):
            words = np.asarray(run.words, dtype=np.uint32)
            case[f"words_{n}"] = words
            case[f"expect_{n}"] = run.expect
            case[f"timeout_{n}"] = run.timeout or default_timeout(config, words, run.expect,
                                                                  slack)
            case[f"reset_{n}"] = np.array(
                [RESET_MODES.index(run.reset[0]), run.reset[1]] if run.reset else [], np.int64)
        np.savez(work / "case.npz", **case)
        harness.run(build_dir, TB_MODULE, testcase="run_case", test_dir=work, seed=seed,
                    env={"CASE": work / "case.npz", "OUT": work / "out.npz"})
        out = np.load(work / "out.npz")
        empty = np.zeros(0, np.int64)
        return [RunResult(out[f"resp_{n}"], int(out[f"cycles_{n}"]),
                          out.get(f"in_offer_{n}", empty), out.get(f"in_accept_{n}", empty),
                          out.get(f"out_accept_{n}", empty)) for n in range(len(runs))]
    finally:
        if own:
            tmp.cleanup()
