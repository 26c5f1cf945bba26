"""``boards.run`` on the command line: a missing port or a silent one is one line and exit
1, bad arguments one line and exit 2; no traceback, no hang."""

import os
import pty
import subprocess
import sys

import pytest

from golden.tflite_io import save_tflite
from tests.golden.netbuild import random_batch
from tests.sim.test_run import SHAPE, random_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import numpy as np

    rng = np.random.default_rng(1)
    tmp = tmp_path_factory.mktemp("run")
    save_tflite(random_model(rng), tmp / "m.tflite")
    np.save(tmp / "x.npy", random_batch(rng, SHAPE, 2))
    return str(tmp / "m.tflite"), str(tmp / "x.npy")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "boards.run", *args], capture_output=True,
                          text=True, timeout=120)


def one_line(r, code):
    assert r.returncode == code, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_missing_port(files):
    r = run_cli("--board", "icebreaker", "--port", "/dev/qmac-no-such-port", files[0],
                "--input", files[1])
    one_line(r, 1)
    assert "cannot open serial port /dev/qmac-no-such-port" in r.stderr


def test_a_port_nobody_answers_on_times_out(files):
    """A pseudo-terminal stands in for a board that is not programmed: silence."""
    controller, device = pty.openpty()
    try:
        r = run_cli("--board", "icebreaker", "--port", os.ttyname(device), "--timeout", "0.5",
                    files[0], "--input", files[1])
    finally:
        os.close(controller)
        os.close(device)
    one_line(r, 1)
    assert "no answer to RESET within 0.5 s" in r.stderr


@pytest.mark.parametrize("args,message", [
    (["--board", "icebreaker", "--sim"], "--sim needs --pe RxC"),
    (["--board", "nope", "--sim", "--pe", "1x1"], "board must be one of"),
    (["--board", "icebreaker", "--port", "/dev/null", "--pe", "9x9x"], "--pe must look like"),
    (["--board", "icebreaker", "--port", "/dev/null", "--timeout", "0"], "--timeout must be"),
])
def test_bad_arguments(files, args, message):
    r = run_cli(*args, files[0], "--input", files[1])
    one_line(r, 2)
    assert message in r.stderr


def test_missing_model_file(files):
    r = run_cli("--board", "icebreaker", "--sim", "--pe", "1x1", "/nonexistent.tflite",
                "--input", files[1])
    one_line(r, 2)
    assert "cannot read model /nonexistent.tflite" in r.stderr
