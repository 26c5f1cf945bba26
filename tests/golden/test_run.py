"""The golden.run command line: tensor dumps against LiteRT, and one-line errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.tools import flatbuffer_utils

from golden.tflite_io import to_tflite_bytes

from .netbuild import Builder, litert_run, random_batch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "golden.run", *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    rng = np.random.default_rng(61)
    b = Builder(rng)
    x = b.input((8, 8, 2))
    h = b.conv2d(x, 4, 3, 1, "SAME", 1, "RELU")
    h = b.pool("AVERAGE_POOL_2D", h, 2, 2, "VALID")
    y = b.add(h, b.constant((1, 1, 1, 4)))
    data = to_tflite_bytes(b.build([y]))
    path = tmp_path_factory.mktemp("model") / "m.tflite"
    path.write_bytes(data)
    return path, data


def patched(data, edit):
    m = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    edit(m)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_dumps_every_tensor_like_litert(model, tmp_path):
    path, data = model
    x = random_batch(np.random.default_rng(62), (8, 8, 2), 5)
    np.save(tmp_path / "x.npy", x)
    result = run_cli(path, "--input", tmp_path / "x.npy", "--out-dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    ref = litert_run(data, {0: x})
    files = sorted(os.listdir(tmp_path / "out"))
    assert files == sorted(f"{i}.npy" for i in ref)
    for i, want in ref.items():
        np.testing.assert_array_equal(np.load(tmp_path / "out" / f"{i}.npy"), want)


def test_help():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "--out-dir" in result.stdout and "--input" in result.stdout


def test_unsupported_operator(model, tmp_path):
    _, data = model

    def to_softmax(m):
        m.operatorCodes[1].builtinCode = fb.BuiltinOperator.SOFTMAX
        m.operatorCodes[1].deprecatedBuiltinCode = fb.BuiltinOperator.SOFTMAX

    bad = tmp_path / "softmax.tflite"
    bad.write_bytes(patched(data, to_softmax))
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 2), np.int8))
    result = run_cli(bad, "--input", tmp_path / "x.npy", "--out-dir", tmp_path / "o")
    assert_one_line_error(result, "unsupported operator SOFTMAX (op 1)")


def test_float_model(model, tmp_path):
    _, data = model

    def to_float(m):
        m.subgraphs[0].tensors[0].type = fb.TensorType.FLOAT32

    bad = tmp_path / "float.tflite"
    bad.write_bytes(patched(data, to_float))
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 2), np.int8))
    result = run_cli(bad, "--input", tmp_path / "x.npy", "--out-dir", tmp_path / "o")
    assert_one_line_error(result, "tensor 0 'input0' is FLOAT32; only int8 models are "
                                  "supported")


@pytest.mark.parametrize("content", [b"garbage bytes, not a model", b"",
                                     b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 3])
def test_garbage_model(tmp_path, content):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(content)
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 2), np.int8))
    result = run_cli(bad, "--input", tmp_path / "x.npy", "--out-dir", tmp_path / "o")
    assert_one_line_error(result, "golden.run: error:")


def test_truncated_model(model, tmp_path):
    _, data = model
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(data[: len(data) // 2])
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 2), np.int8))
    result = run_cli(bad, "--input", tmp_path / "x.npy", "--out-dir", tmp_path / "o")
    assert_one_line_error(result, "golden.run: error:")


@pytest.mark.parametrize("x, fragment", [
    (np.zeros((2, 8, 8, 2), np.float32), "float32"),
    (np.zeros((2, 8, 8, 3), np.int8), "(2, 8, 8, 3)"),
    (np.zeros((8, 8, 2), np.int8), "needs int8 of shape (N, 8, 8, 2)"),
])
def test_wrong_input(model, tmp_path, x, fragment):
    path, _ = model
    np.save(tmp_path / "x.npy", x)
    result = run_cli(path, "--input", tmp_path / "x.npy", "--out-dir", tmp_path / "o")
    assert_one_line_error(result, fragment)


def test_missing_files(model, tmp_path):
    path, _ = model
    result = run_cli(tmp_path / "nope.tflite", "--input", tmp_path / "x.npy",
                     "--out-dir", tmp_path / "o")
    assert_one_line_error(result, "cannot read model")
    (tmp_path / "x.npy").write_bytes(b"not npy")
    result = run_cli(path, "--input", tmp_path / "x.npy", "--out-dir", tmp_path / "o")
    assert_one_line_error(result, "cannot read input")


def test_bad_arguments():
    assert_one_line_error(run_cli("model.tflite"), "required")
