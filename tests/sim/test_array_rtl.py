"""hw.array.SystolicArray as Verilog on Verilator, driven by cocotb: rtl(tiles) == golden.

Each configuration is built once (cached by ``sim.harness``). One simulator run per test
sends a full-rate segment (no gaps, no stalls: checks one beat per cycle and the latency),
the corner tiles, then random tiles of every interesting K under random valid gaps and
ready stalls, then short tiles against a mostly stalled reader; every row is compared with
``golden.ops.gemm``. The slow 16 x 16 test streams a whole 256^3 GEMM and checks the
utilization the controller relies on.
"""

import numpy as np
import pytest

from hw.array import SystolicArray
from sim import harness
from tests.hw.test_array import random_tile, reference, tile_lengths


def pack(tiles):
    """(beats, R + C + 1) uint8 ``i.payload`` words of ``tiles`` ((x, w) int8 pairs)."""
    words = []
    for x, w in tiles:
        k = x.shape[1]
        last = np.zeros((k, 1), np.uint8)
        last[-1] = 1
        words.append(np.hstack([x.T.view(np.uint8), w.view(np.uint8), last]))
    return np.vstack(words)


def simulate(dut, build_dir, tmp_path, segments, seed=1):
    """Run ``segments`` (lists of (tiles, p_gap, p_stall)); return (rows, cycles per segment)."""
    tiles = [t for seg_tiles, _, _ in segments for t in seg_tiles]
    table = np.array([(sum(x.shape[1] for x, _ in seg_tiles), dut.rows * len(seg_tiles),
                       p_gap, p_stall) for seg_tiles, p_gap, p_stall in segments])
    np.savez(tmp_path / "case.npz", words=pack(tiles), cols=dut.cols, segments=table,
             seed=seed)
    harness.run(build_dir, "sim.tb.array_tb", testcase="tiles", test_dir=tmp_path,
                env={"CASE": tmp_path / "case.npz", "OUT": tmp_path / "out.npz"})
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(out["rows"], np.concatenate([reference(x, w)
                                                               for x, w in tiles]))
    return out["rows"], out["cycles"]


def build(rows, cols):
    dut = SystolicArray(rows, cols)
    return dut, harness.build(harness.verilog_of(dut), "top")


# A Verilator build takes about a minute even for a small array: one shape by default,
# the others where speed does not matter.
CONFIGS = [pytest.param((3, 5), id="3x5"),
           pytest.param((5, 2), id="5x2", marks=pytest.mark.slow),
           pytest.param((4, 4), id="4x4", marks=pytest.mark.slow)]


@pytest.fixture(scope="module", params=CONFIGS)
def built(request):
    return build(*request.param)


def test_tiles(built, tmp_path):
    dut, build_dir = built
    R, C = dut.rows, dut.cols
    rng = np.random.default_rng(R * 10 + C)
    n_full, k_full = 8, max(R, C)
    full_rate = [random_tile(rng, R, C, k_full) for _ in range(n_full)]
    corners = []
    for a, b in [(-128, -127), (127, 127), (-128, 127), (127, -127)]:
        corners += [(np.full((R, k), a, np.int8), np.full((k, C), b, np.int8)) for k in (1, 300)]
    ks = tile_lengths(R, C)
    stressed = [random_tile(rng, R, C, int(k)) for k in rng.choice(ks, 300)]
    short = [random_tile(rng, R, C, int(k)) for k in rng.integers(1, 4, 100)]
    _, cycles = simulate(dut, build_dir, tmp_path, [
        (full_rate, 0.0, 0.0),
        (corners, 0.2, 0.3),
        (stressed, 0.3, 0.4),
        (short, 0.1, 0.9),
    ])
    # Full rate: n beats in n cycles, the last row latency + R - 1 cycles after the last beat.
    assert cycles[0] == n_full * k_full + dut.latency + R - 1


@pytest.mark.slow
def test_gemm_256_on_16x16(tmp_path):
    dut, build_dir = build(16, 16)
    R, C, size = dut.rows, dut.cols, 256
    rng = np.random.default_rng(256)
    x = rng.integers(-128, 128, (size, size)).astype(np.int8)
    w = rng.integers(-127, 128, (size, size)).astype(np.int8)
    tiles = [(x[m0:m0 + R], w[:, n0:n0 + C])
             for m0 in range(0, size, R) for n0 in range(0, size, C)]
    corners = [(np.full((R, 1000), -128, np.int8), np.full((1000, C), -127, np.int8))]
    rows, cycles = simulate(dut, build_dir, tmp_path, [(tiles, 0.0, 0.0),
                                                       (corners, 0.0, 0.3)])
    beats = len(tiles) * size
    assert cycles[0] == beats + dut.latency + R - 1
    assert beats / cycles[0] >= 0.99
    y = rows[:beats // size * R].reshape(size // R, size // C, R, C).transpose(0, 2, 1, 3)
    np.testing.assert_array_equal(y.reshape(size, size), np.asarray(x, np.int64) @ w)
