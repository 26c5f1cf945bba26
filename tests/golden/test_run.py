"""The golden.run command line: tensor dumps against LiteRT, and one-line errors."""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.tools import flatbuffer_utils

from golden import run
from golden.tflite_io import from_tflite_bytes, to_tflite_bytes

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
    assert files == sorted([f"{i}.npy" for i in ref] + ["index.json"])
    for i, want in ref.items():
        np.testing.assert_array_equal(np.load(tmp_path / "out" / f"{i}.npy"), want)
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    net = from_tflite_bytes(data)
    assert index["batch"] == 5
    assert index["inputs"] == ["input0"] and index["outputs"] == [net.tensors[-1].name]
    for entry in index["tensors"]:
        t = net.tensors[entry["index"]]
        array = np.load(tmp_path / "out" / entry["file"])
        assert entry["name"] == t.name and list(array.shape) == entry["shape"]
        assert entry["dtype"] == str(array.dtype)
    assert [e["role"] for e in index["tensors"]].count("intermediate") == 2
    out_name = net.tensors[net.outputs[0]].name
    assert f"output {out_name!r} -> " in result.stdout


def test_streams_in_chunks(model, tmp_path):
    """Chunks of 3 over a batch of 8 (the last one short): the same files as LiteRT."""
    path, data = model
    x = random_batch(np.random.default_rng(63), (8, 8, 2), 8)
    np.save(tmp_path / "x.npy", x)
    result = run_cli(path, "--input", tmp_path / "x.npy", "--out-dir", tmp_path / "out",
                     "--chunk", 3)
    assert result.returncode == 0, result.stderr
    assert "chunks of 3" in result.stdout
    for i, want in litert_run(data, {0: x}).items():
        np.testing.assert_array_equal(np.load(tmp_path / "out" / f"{i}.npy"), want)


def test_existing_outputs_need_force(model, tmp_path):
    path, _ = model
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8, 2), np.int8))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "3.npy").write_text("mine")
    result = run_cli(path, "--input", tmp_path / "x.npy", "--out-dir", tmp_path / "out")
    assert_one_line_error(result, "3.npy exists", "--force")
    assert (tmp_path / "out" / "3.npy").read_text() == "mine"
    assert sorted(os.listdir(tmp_path / "out")) == ["3.npy"]
    result = run_cli(path, "--input", tmp_path / "x.npy", "--out-dir", tmp_path / "out",
                     "--force")
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "out" / "3.npy").shape[0] == 2


def test_input_is_never_an_output(model, tmp_path):
    path, _ = model
    np.save(tmp_path / "0.npy", np.zeros((2, 8, 8, 2), np.int8))
    result = run_cli(path, "--input", tmp_path / "0.npy", "--out-dir", tmp_path, "--force")
    assert_one_line_error(result, "is also an output file of this run")
    assert np.load(tmp_path / "0.npy").shape == (2, 8, 8, 2)


def test_overflowing_layer_is_refused_by_name(model, tmp_path):
    """A bias whose channel range leaves int32: one line naming op, tensor and channel;
    nothing written."""
    _, data = model

    def big_bias(m):
        sub = m.subgraphs[0]
        bias = sub.tensors[sub.operators[0].inputs[2]]
        values = np.frombuffer(bytes(m.buffers[bias.buffer].data), np.int32).copy()
        values[2] = 2**31 - 1
        m.buffers[bias.buffer].data = np.frombuffer(values.tobytes(), np.uint8)

    bad = tmp_path / "big.tflite"
    bad.write_bytes(patched(data, big_bias))
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 2), np.int8))
    result = run_cli(bad, "--input", tmp_path / "x.npy", "--out-dir", tmp_path / "o")
    assert_one_line_error(result, "op 0 (", "CONV_2D: output channel 2: ", "int32")
    assert os.listdir(tmp_path / "o") == []


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
    with open(tmp_path / "z.npy", "wb") as f:
        np.savez(f, x=np.zeros((1, 8, 8, 2), np.int8))
    result = run_cli(path, "--input", tmp_path / "z.npy", "--out-dir", tmp_path / "o")
    assert_one_line_error(result, "cannot read input", "an .npz archive")


def test_bad_arguments(model, tmp_path):
    path, _ = model
    assert_one_line_error(run_cli("model.tflite"), "required")
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 2), np.int8))
    x = ("--input", tmp_path / "x.npy")
    for extra, fragment in [
        (("--out-dir", "/proc/x"), "argument --out-dir: cannot write in '/proc'"),
        (("--out-dir", ""), "must be a directory path"),
        (("--out-dir", tmp_path / "x.npy"), "exists and is not a directory"),
        (("--out-dir", tmp_path / "o", "--chunk", "0"), "--chunk: must be a positive"),
        (("--out-dir", tmp_path / "o", "--memory", "lots"), "--memory: must be a size"),
        (("--out-dir", tmp_path / "o", "--memory", "1k"), "--memory: must be a size"),
        (("--out-dir", tmp_path / "o", "--memory", "infG"), "--memory: must be a size"),
    ]:
        assert_one_line_error(run_cli(path, *x, *extra), fragment)


def test_empty_batch(model, tmp_path):
    path, _ = model
    np.save(tmp_path / "x.npy", np.zeros((0, 8, 8, 2), np.int8))
    result = run_cli(path, "--input", tmp_path / "x.npy", "--out-dir", tmp_path / "o")
    assert_one_line_error(result, "holds no samples", "N >= 1")


def test_limits_are_checked_before_allocating(model, tmp_path):
    """A batch of 10**12 samples (a zero-stride view, no memory): chunks fit the budget,
    a --chunk beyond the machine's memory and outputs beyond the disk are refused."""
    path, data = model
    net = from_tflite_bytes(data)
    huge = {0: np.broadcast_to(np.zeros((1, 8, 8, 2), np.int8), (10**12, 8, 8, 2))}
    per_sample = net.run_bytes_per_sample()
    batch, chunk, total = run._plan(net, huge, argparse.Namespace(chunk=None, memory=2**26))
    assert batch == 10**12 and chunk == 2**26 // per_sample
    assert total > 10**12 * 8 * 8 * 2
    with pytest.raises(ValueError, match=r"^--chunk 1000000000000: chunks of 1000000000000 "
                                         r"samples need about .* is available"):
        run._plan(net, huge, argparse.Namespace(chunk=10**12, memory=2**26))
    with pytest.raises(ValueError, match=r"one sample needs about .* more than --memory"):
        run._plan(net, huge, argparse.Namespace(chunk=None, memory=per_sample - 1))
    with pytest.raises(ValueError, match=r"^--memory .* is available"):
        run._plan(net, huge, argparse.Namespace(chunk=None, memory=2**60))
    args = argparse.Namespace(out_dir=str(tmp_path / "o"), force=False, input=[])
    with pytest.raises(ValueError, match=r"the tensors take .* free"):
        run._check_outputs(net, args, total)


def test_run_bytes_per_sample_bounds_the_peak(tmp_path):
    """Measured: tracemalloc's peak of Network.run per sample stays under the estimate."""
    import tracemalloc

    rng = np.random.default_rng(64)
    b = Builder(rng)
    x = b.input((12, 12, 8))
    h = b.conv2d(x, 16, 3, 1, "SAME", 1, "RELU")
    h = b.depthwise(h, 2, 5, 1, "SAME")
    h = b.add(h, b.constant((1, 1, 1, 32)))
    h = b.pool("AVERAGE_POOL_2D", h, 3, 1, "SAME")
    y = b.fully_connected(b.reshape(h, (12 * 12 * 32,)), 10)
    net = b.build([y])
    batch = random_batch(rng, (12, 12, 8), 256)
    tracemalloc.start()
    net.run(batch)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    estimate = net.run_bytes_per_sample() * 256
    assert peak <= estimate, (peak, estimate)
