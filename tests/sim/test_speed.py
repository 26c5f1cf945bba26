"""``python -m sim.speed``: the idle-clock measurement and the command line's refusals."""

import subprocess
import sys

import pytest

from sim import harness, speed
from tests.sim.test_harness import VERILOG


def test_idle_speed_counts_the_cycles(tmp_path):
    cycles, wall = speed.idle_speed(harness.build(VERILOG), 5000, tmp_path)
    assert cycles == 5000 and wall > 0


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "--seed: must be a non-negative integer"),
    (["--pe", "0x4"], "--pe rows must be in 1..64"),
    (["--cycles", "0"], "--cycles: must be a positive integer"),
    (["--k", "100000000"], "needs about"),
])
def test_bad_arguments(args, message):
    done = subprocess.run([sys.executable, "-m", "sim.speed", *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and message in done.stderr
