"""hw.requant.Requantizer as Verilog on Verilator, driven by cocotb: rtl(case) == golden.

Each configuration is built once (cached by ``sim.harness``). One simulator run per test
sends a full-rate segment (no gaps, no stalls: checks one beat per cycle), every corner
case, then tens of thousands of random lane-vectors under random valid gaps and ready
stalls; the results are compared with ``golden.requant.requantize``.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from hw.requant import Requantizer
from sim import harness
from tests.hw.test_requant import corner_case, join, pack_inputs, random_case, reference

# (lanes, rounding, pipeline, datapath units)
CONFIGS = [(4, "double", "deep", 4), (4, "single", "deep", 4), (16, "double", "deep", 16),
           (16, "single", "deep", 16), (2, "double", "compact", 1), (3, "single", "compact", 2)]
LANE_VECTORS = 40_000


@pytest.fixture(scope="module")
def builds():
    """Every configuration, Verilated concurrently: each build has serial phases."""
    duts = {config: Requantizer(config[0], rounding=config[1], pipeline=config[2],
                                multipliers=["dsp"] * 4 * config[3])
            for config in CONFIGS}
    sources = {config: harness.verilog_of(dut) for config, dut in duts.items()}
    with ThreadPoolExecutor(len(CONFIGS)) as pool:
        dirs = dict(zip(CONFIGS, pool.map(harness.build, sources.values()), strict=True))
    return {config: (duts[config], dirs[config]) for config in CONFIGS}


@pytest.mark.parametrize("config", CONFIGS, ids=[f"{n}-{r}-{p}-{u}" for n, r, p, u in CONFIGS])
def test_requantize(builds, config, tmp_path):
    dut, build_dir = builds[config]
    lanes, rounding = dut.lanes, dut.rounding
    rng = np.random.default_rng(lanes * 7 + len(rounding))
    # One layer record: in the compact pipeline a new one waits for the beats before it.
    full_rate = random_case(rng, 200, lanes, rounding=rounding, n_layers=1)
    corners = corner_case(lanes, rounding=rounding)
    stressed = random_case(rng, LANE_VECTORS // lanes, lanes, rounding=rounding)
    case = join(full_rate, corners, stressed)
    segments = np.array([
        (len(full_rate["acc"]), 0.0, 0.0),
        (len(corners["acc"]), 0.3, 0.3),
        (len(stressed["acc"]) // 2, 0.4, 0.2),
        (len(stressed["acc"]) - len(stressed["acc"]) // 2, 0.1, 0.6),
    ])
    np.savez(tmp_path / "case.npz", words=pack_inputs(dut, case), segments=segments,
             seed=lanes)
    harness.run(build_dir, "sim.tb.requant_tb", testcase="requantize", test_dir=tmp_path,
                env={"CASE": tmp_path / "case.npz", "OUT": tmp_path / "out.npz"})
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(out["outputs"], reference(case, rounding))
    # Full rate: a beat taken every `passes` cycles (the first within `passes`), the last
    # of n leaving `latency` cycles after it was taken; exactly n + latency for one pass.
    n, passes, latency = int(segments[0][0]), dut.passes, dut.latency
    assert (n - 1) * passes + latency + 1 <= out["cycles"][0] <= n * passes + latency
