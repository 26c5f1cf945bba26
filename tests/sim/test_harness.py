"""The Verilator harness builds, caches, runs, and reports failures as failures; a build
makes public only the ports and the internals asked for, and traces every signal."""

from pathlib import Path

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sim import harness


class Accumulator(wiring.Component):
    a: In(8)
    en: In(1)
    total: Out(32)

    def elaborate(self, platform):
        m = Module()
        steps = Signal(16)
        with m.If(self.en):
            m.d.sync += [self.total.eq(self.total + self.a), steps.eq(steps + 1)]
        return m


VERILOG = harness.verilog_of(Accumulator())


@pytest.fixture(scope="module")
def build_dir():
    return harness.build(VERILOG)


def case(tmp_path, seed=7):
    rng = np.random.default_rng(seed)
    a, cycles = int(rng.integers(1, 256)), int(rng.integers(1000, 5000))
    np.savez(tmp_path / "case.npz", a=a, cycles=cycles)
    return a, cycles, {"CASE": tmp_path / "case.npz", "OUT": tmp_path / "out.npz"}


def test_ports_of():
    assert sorted(harness.ports_of(VERILOG)) == ["a", "clk", "en", "rst", "total"]
    with pytest.raises(ValueError, match="no module 'nope'"):
        harness.ports_of(VERILOG, "nope")


def test_build_is_cached(build_dir, capfd):
    assert harness.build(VERILOG) == build_dir
    assert "(cached)" in capfd.readouterr().err


def test_run_round_trip(build_dir, tmp_path):
    a, cycles, env = case(tmp_path)
    harness.run(build_dir, "sim.tb.counter_tb", testcase="accumulate", test_dir=tmp_path,
                env=env)
    assert int(np.load(tmp_path / "out.npz")["total"]) == a * cycles


def test_failure_is_reported(build_dir, tmp_path):
    with pytest.raises(harness.SimulationFailed,
                       match=r"always_fails: 1 of 1 failed: AssertionError: failing on purpose; "
                             r"log kept at \S+failed\S+\.log\n") as failed:
        harness.run(build_dir, "sim.tb.counter_tb", testcase="always_fails",
                    test_dir=tmp_path, env={"EXPECT_FAIL": "1"})
    kept = str(failed.value).splitlines()[0].rsplit(" ", 1)[1]
    assert "failing on purpose" in Path(kept).read_text()


def test_internals_are_private_by_default(build_dir, tmp_path):
    _, _, env = case(tmp_path)
    with pytest.raises(harness.SimulationFailed, match="steps"):
        harness.run(build_dir, "sim.tb.counter_tb", testcase="peek", test_dir=tmp_path,
                    env=env)


@pytest.mark.parametrize("visibility", [{"public": [("top", "steps")]}, {"debug": True}])
def test_internals_made_public(visibility, tmp_path):
    build_dir = harness.build(VERILOG, **visibility)
    a, cycles, env = case(tmp_path, seed=8)
    harness.run(build_dir, "sim.tb.counter_tb", testcase="peek", test_dir=tmp_path, env=env)
    out = np.load(tmp_path / "out.npz")
    assert (int(out["total"]), int(out["steps"])) == (a * cycles, cycles)


def test_waves_trace_internals(tmp_path):
    build_dir = harness.build(VERILOG, waves=True)
    _, _, env = case(tmp_path)
    harness.run(build_dir, "sim.tb.counter_tb", testcase="accumulate", test_dir=tmp_path,
                env=env, waves=True)
    trace = (tmp_path / "dump.vcd").read_text()
    assert " steps " in trace and " total " in trace


def test_runtime_is_compiled_once(tmp_path, monkeypatch):
    monkeypatch.setenv("QMAC_SIM_CACHE", str(tmp_path / "cache"))
    first = harness.build(VERILOG)
    assert "verilated_vpi.cpp" in (first / "build.log").read_text()
    second = harness.build(VERILOG, public=[("top", "steps")])
    assert "verilated_vpi.cpp" not in (second / "build.log").read_text()
    a, cycles, env = case(tmp_path)
    harness.run(second, "sim.tb.counter_tb", testcase="peek", test_dir=tmp_path, env=env)
    out = np.load(tmp_path / "out.npz")
    assert (int(out["total"]), int(out["steps"])) == (a * cycles, cycles)
