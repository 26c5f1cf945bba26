"""The board top under Verilator at its UART pins, driven by the host code of
``boards.run`` over a bit-level UART at 3 Mbaud from a 12 MHz clock (4 cycles a bit):
board(layer) == golden(layer) for a random model; a lost or corrupted byte in either
direction is a LinkError, never a wrong answer; a mismatching build is refused."""

import numpy as np
import pytest

from boards import run
from golden.tflite_io import save_tflite
from hw.config import AcceleratorConfig
from tests.golden.netbuild import random_batch
from tests.sim.test_run import SHAPE, random_model

CONFIG = AcceleratorConfig(rows=2, cols=3, host_width=8, act_depth=64, wgt_depth=64,
                           par_depth=2, out_depth=64)
FREQ, BAUD = 12.0, 3_000_000


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    rng = np.random.default_rng(8)
    net = random_model(rng)
    tmp = tmp_path_factory.mktemp("board")
    model, data = tmp / "model.tflite", tmp / "x.npy"
    save_tflite(net, model)
    np.save(data, random_batch(rng, SHAPE, 2))
    return str(model), str(data), net


def test_model_through_the_uart_is_exact(files):
    model, data, net = files
    answer = run.simulate(run.Request(model, data, 1, CONFIG, timeout=0.01), CONFIG,
                          freq=FREQ, baud=BAUD)
    assert "error" not in answer, answer
    result = answer["result"]
    board = [r for r in result.layers if r.board]
    assert len(board) == 4
    assert all(r.exact for r in board), [r for r in board if not r.exact]
    want = net.run(np.load(data)[:1])[net.outputs[0]]
    np.testing.assert_array_equal(result.output, want)


@pytest.mark.parametrize("noise", [
    pytest.param((0, 300, 0), id="h2b-lost", marks=pytest.mark.slow),
    pytest.param((0, 200, 1), id="h2b-flip"),
    pytest.param((1, 40, 0), id="b2h-lost"),
    pytest.param((1, 60, 1), id="b2h-flip", marks=pytest.mark.slow),
])
def test_a_bad_byte_is_an_error_not_an_answer(files, noise):
    model, data, _ = files
    answer = run.simulate(run.Request(model, data, 1, CONFIG, timeout=0.005), CONFIG,
                          freq=FREQ, baud=BAUD, noise=[noise])
    assert "result" not in answer
    assert answer["error"].startswith("LinkError"), answer
    assert any(s in answer["error"] for s in ("fault", "corrupted", "stopped answering")), \
        answer


def test_another_build_is_refused(files):
    model, data, _ = files
    other = AcceleratorConfig(rows=2, cols=3, host_width=8, act_depth=128, wgt_depth=64,
                              par_depth=2, out_depth=64)
    answer = run.simulate(run.Request(model, data, 1, other, timeout=0.01), CONFIG,
                          freq=FREQ, baud=BAUD)
    assert answer["error"].startswith("ConfigMismatch")
    assert "act 64" in answer["error"] and "act 128" in answer["error"]
