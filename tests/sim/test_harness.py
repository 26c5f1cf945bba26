"""The Verilator harness builds, caches, runs, and reports failures as failures."""

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sim import harness


class Accumulator(wiring.Component):
    a: In(8)
    en: In(1)
    total: Out(32)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.total.eq(self.total + self.a)
        return m


@pytest.fixture(scope="module")
def build_dir():
    return harness.build(harness.verilog_of(Accumulator()))


def test_build_is_cached(build_dir):
    assert harness.build(harness.verilog_of(Accumulator())) == build_dir


def test_run_round_trip(build_dir, tmp_path):
    rng = np.random.default_rng(7)
    a, cycles = int(rng.integers(1, 256)), int(rng.integers(1000, 5000))
    np.savez(tmp_path / "case.npz", a=a, cycles=cycles)
    harness.run(build_dir, "sim.tb.counter_tb", testcase="accumulate", test_dir=tmp_path,
                env={"CASE": tmp_path / "case.npz", "OUT": tmp_path / "out.npz"})
    assert int(np.load(tmp_path / "out.npz")["total"]) == a * cycles


def test_failure_is_reported(build_dir, tmp_path):
    with pytest.raises(harness.SimulationFailed, match="failing on purpose"):
        harness.run(build_dir, "sim.tb.counter_tb", testcase="always_fails",
                    test_dir=tmp_path, env={"EXPECT_FAIL": "1"})
