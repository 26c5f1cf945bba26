"""Float32 .tflite import (golden.nets.tflite): the imported network against LiteRT's float
interpreter, on the shipped networks' float references and on a model written here by hand
with the flatbuffer schema (other operator order, options and operators than the exporter
writes); PTQ of an imported model against LiteRT's int8 kernels; one clear error for
everything else."""

import io
from contextlib import redirect_stderr, redirect_stdout

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from golden.nets import load
from golden.nets.tflite import from_float_tflite_bytes, load_float_tflite, to_float_tflite_bytes
from golden.ptq.__main__ import main as ptq_main
from golden.ptq.quantizer import Config, quantize_model
from golden.ptq.transforms import fold_batch_norm
from golden.tflite_io import TFLiteError, load_tflite, to_tflite_bytes

from .netbuild import litert_run


def litert_float(model, x):
    """Output of a float .tflite (bytes) in LiteRT's reference kernels on batch ``x``."""
    it = Interpreter(model_content=model,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.resize_tensor_input(0, list(x.shape))
    it.allocate_tensors()
    it.set_tensor(0, x.astype(np.float32))
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).astype(np.float64)


def assert_close(got, ref):
    # LiteRT computes in float32, the import in float64 on the same float32 weights.
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5 * max(1.0, np.abs(ref).max()))


class Hand:
    """A float .tflite written directly with the schema's object API."""

    def __init__(self):
        self.buffers = [fb.BufferT()]
        self.tensors = []
        self.ops = []
        self.codes = []

    def tensor(self, shape, data=None, dtype=fb.TensorType.FLOAT32, name=None):
        t = fb.TensorT(type=dtype, shape=list(shape), buffer=0,
                       name=(name or f"t{len(self.tensors)}").encode())
        if data is not None:
            np_type = "<f4" if dtype == fb.TensorType.FLOAT32 else "<i4"
            raw = np.ascontiguousarray(data, dtype=np_type).tobytes()
            t.buffer = len(self.buffers)
            self.buffers.append(fb.BufferT(data=np.frombuffer(raw, dtype=np.uint8)))
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, kind, inputs, out_shape, options=None, options_type=None):
        code = getattr(fb.BuiltinOperator, kind)
        if code not in self.codes:
            self.codes.append(code)
        out = self.tensor(out_shape)
        o = fb.OperatorT(opcodeIndex=self.codes.index(code), inputs=inputs, outputs=[out])
        if options is not None:
            o.builtinOptionsType, o.builtinOptions = options_type, options
        self.ops.append(o)
        return out

    def bytes(self, inputs, outputs):
        codes = [fb.OperatorCodeT(deprecatedBuiltinCode=min(c, 127), builtinCode=c, version=1)
                 for c in self.codes]
        sg = fb.SubGraphT(tensors=self.tensors, inputs=inputs, outputs=outputs,
                          operators=self.ops)
        model = fb.ModelT(version=3, operatorCodes=codes, subgraphs=[sg], buffers=self.buffers)
        b = flatbuffers.Builder(1024)
        b.Finish(model.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def conv_opts(stride=1, padding=fb.Padding.SAME, act=fb.ActivationFunctionType.NONE):
    return fb.Conv2DOptionsT(padding=padding, strideH=stride, strideW=stride,
                             fusedActivationFunction=act, dilationHFactor=1, dilationWFactor=1)


def hand_model(rng, tail=None, dw_multiplier=1):
    """A 12x12x3 float model: VALID stride-2 conv + ReLU6, a SAME depthwise, an ADD whose
    first operand is the later tensor, 1x1 average pooling, a 5x5 max pool, and a
    FULLY_CONNECTED without bias straight on the 4-D tensor (no RESHAPE)."""
    h = Hand()
    act = fb.ActivationFunctionType
    x = h.tensor((1, 12, 12, 3), name="image")
    w1 = h.tensor((8, 3, 3, 3), rng.normal(0, 0.4, (8, 3, 3, 3)))
    b1 = h.tensor((8,), rng.normal(0, 0.2, 8))
    c1 = h.op("CONV_2D", [x, w1, b1], (1, 5, 5, 8),
              conv_opts(2, fb.Padding.VALID, act.RELU6), fb.BuiltinOptions.Conv2DOptions)
    wd = h.tensor((1, 3, 3, 8 * dw_multiplier), rng.normal(0, 0.4, (1, 3, 3, 8 * dw_multiplier)))
    bd = h.tensor((8 * dw_multiplier,), rng.normal(0, 0.2, 8 * dw_multiplier))
    d = h.op("DEPTHWISE_CONV_2D", [c1, wd, bd], (1, 5, 5, 8 * dw_multiplier),
             fb.DepthwiseConv2DOptionsT(padding=fb.Padding.SAME, strideH=1, strideW=1,
                                        depthMultiplier=dw_multiplier,
                                        fusedActivationFunction=act.NONE,
                                        dilationHFactor=1, dilationWFactor=1),
             fb.BuiltinOptions.DepthwiseConv2DOptions)
    a = h.op("ADD", [d, c1], (1, 5, 5, 8), fb.AddOptionsT(fusedActivationFunction=act.RELU),
             fb.BuiltinOptions.AddOptions)
    p1 = h.op("AVERAGE_POOL_2D", [a], (1, 5, 5, 8),
              fb.Pool2DOptionsT(padding=fb.Padding.VALID, strideH=1, strideW=1,
                                filterHeight=1, filterWidth=1),
              fb.BuiltinOptions.Pool2DOptions)
    p2 = h.op("MAX_POOL_2D", [p1], (1, 1, 1, 8),
              fb.Pool2DOptionsT(padding=fb.Padding.VALID, strideH=5, strideW=5,
                                filterHeight=5, filterWidth=5),
              fb.BuiltinOptions.Pool2DOptions)
    wf = h.tensor((4, 8), rng.normal(0, 0.5, (4, 8)))
    out = h.op("FULLY_CONNECTED", [p2, wf, -1], (1, 4),
               fb.FullyConnectedOptionsT(fusedActivationFunction=act.NONE),
               fb.BuiltinOptions.FullyConnectedOptions)
    if tail is not None:
        out = tail(h, out)
    return h.bytes([x], [out])


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_shipped_float_reference_matches_litert(name):
    net = load(name)
    model = to_float_tflite_bytes(net)
    imported = from_float_tflite_bytes(model)
    assert [n.kind for n in imported.nodes] == [n.kind for n in fold_batch_norm(net).nodes]
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 2, (64, *net.input_shape))
    ref = litert_float(model, x)
    assert_close(imported(x), ref)
    assert_close(net(x), ref)


def test_committed_float_files_are_the_shipped_networks():
    for name in ("cnn", "mlp"):
        got = load_float_tflite(f"golden/data/{name}_float.tflite")
        assert got.name == f"{name}_float"
        x = np.random.default_rng(2).uniform(0, 1, (16, *got.input_shape))
        assert_close(got(x), load(name)(x))


def test_hand_written_model_matches_litert():
    rng = np.random.default_rng(3)
    model = hand_model(rng)
    net = from_float_tflite_bytes(model)
    assert [n.kind for n in net.nodes] == ["conv", "dwconv", "add", "avgpool", "maxpool",
                                           "reshape", "fc"]
    assert net.nodes[0].activation == "RELU6"
    assert net.nodes[2].inputs == [net.nodes[1].name, net.nodes[0].name]
    x = rng.uniform(-2, 2, (40, 12, 12, 3))
    assert_close(net(x), litert_float(model, x))


def test_hand_written_model_quantizes_to_what_litert_runs():
    rng = np.random.default_rng(4)
    net = from_float_tflite_bytes(hand_model(rng))
    calib = rng.uniform(-2, 2, (128, 12, 12, 3))
    network = quantize_model(net, calib, Config("minmax", "channel", 8), stream=None)
    network = network.to_network()
    model = to_tflite_bytes(network)
    x = network.quantize(0, rng.uniform(-2, 2, (32, 12, 12, 3)))
    ref = litert_run(model, {0: x})
    got = network.run(x)
    fc = network.ops[-1].outputs[0]
    for i, v in got.items():
        if network.tensors[i].data is None and i != fc:
            np.testing.assert_array_equal(v, ref[i].reshape(v.shape), err_msg=f"tensor {i}")
    assert np.abs(got[fc].astype(int) - ref[fc].reshape(got[fc].shape)).max() <= 1
    # The int8 network dequantized stays near the float model it came from.
    xf = network.dequantize(0, x)
    err = np.abs(network.dequantize(fc, got[fc]) - net(xf)).max()
    assert err < 0.1 * np.abs(net(xf)).max()


def softmax_tail(h, out):
    return h.op("SOFTMAX", [out], (1, 4), fb.SoftmaxOptionsT(beta=1.0),
                fb.BuiltinOptions.SoftmaxOptions)


def mean_tail(h, out):
    axes = h.tensor((1,), np.array([1]), dtype=fb.TensorType.INT32)
    return h.op("MEAN", [out, axes], (1,), fb.ReducerOptionsT(keepDims=False),
                fb.BuiltinOptions.ReducerOptions)


def test_errors_are_one_clear_message(tmp_path):
    rng = np.random.default_rng(5)
    cases = [
        (hand_model(rng, mean_tail), "only a mean over height and width"),
        (hand_model(rng, softmax_tail), r"unsupported operator SOFTMAX \(op 6\).*final SOFTMAX"),
        (hand_model(rng, dw_multiplier=2), "only depth multiplier 1"),
        (b"\x00" * 16, "TFL3"),
        (hand_model(rng)[:200], "malformed"),
    ]
    int8 = to_tflite_bytes(quantize_model(load("mlp"), np.zeros((4, 64)), Config(),
                                          stream=None).to_network())
    cases.append((int8, "tensor 0 'input' is INT8: golden.ptq and golden.qat take a float32"))
    for data, message in cases:
        with pytest.raises(TFLiteError, match=message):
            from_float_tflite_bytes(data)

    path = tmp_path / "softmax.tflite"
    path.write_bytes(cases[1][0])
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        assert ptq_main(["--model", str(path), "--calib-data", str(path)]) == 2
    assert err.getvalue().count("\n") == 1 and "SOFTMAX" in err.getvalue()


def test_ptq_cli_on_a_float_file(tmp_path):
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(6).uniform(0, 1, (64, 64)))
    out = tmp_path / "mlp_int8.tflite"
    text = io.StringIO()
    with redirect_stdout(text), redirect_stderr(io.StringIO()):
        assert ptq_main(["--model", "golden/data/mlp_float.tflite", "--calib-data", str(calib),
                         "--out", str(out)]) == 0
    assert "mlp_float: float top-1 98.00%" in text.getvalue()
    assert len(load_tflite(out).ops) == 3
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((4, 8, 8, 1)))
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        assert ptq_main(["--model", "golden/data/mlp_float.tflite", "--calib-data",
                         str(bad)]) == 2
    assert "must have shape (N, 64)" in err.getvalue()


def keras_like_model(rng, keep_dims):
    """Conv without fused activation + a standalone RELU6, a residual ADD + a standalone
    RELU, global average pooling as MEAN (as Keras converts GlobalAveragePooling2D), FC."""
    h = Hand()
    act = fb.ActivationFunctionType
    x = h.tensor((1, 6, 6, 2), name="x")
    w = h.tensor((4, 3, 3, 2), rng.normal(0, 0.5, (4, 3, 3, 2)))
    b = h.tensor((4,), rng.normal(0, 0.2, 4))
    c = h.op("CONV_2D", [x, w, b], (1, 6, 6, 4), conv_opts(), fb.BuiltinOptions.Conv2DOptions)
    r6 = h.op("RELU6", [c], (1, 6, 6, 4))
    w2 = h.tensor((4, 1, 1, 4), rng.normal(0, 0.5, (4, 1, 1, 4)))
    b2 = h.tensor((4,), rng.normal(0, 0.2, 4))
    c2 = h.op("CONV_2D", [r6, w2, b2], (1, 6, 6, 4), conv_opts(),
              fb.BuiltinOptions.Conv2DOptions)
    a = h.op("ADD", [r6, c2], (1, 6, 6, 4), fb.AddOptionsT(fusedActivationFunction=act.NONE),
             fb.BuiltinOptions.AddOptions)
    r = h.op("RELU", [a], (1, 6, 6, 4))
    axes = h.tensor((2,), np.array([1, 2]), dtype=fb.TensorType.INT32)
    m = h.op("MEAN", [r, axes], (1, 1, 1, 4) if keep_dims else (1, 4),
             fb.ReducerOptionsT(keepDims=keep_dims), fb.BuiltinOptions.ReducerOptions)
    wf = h.tensor((3, 4), rng.normal(0, 0.5, (3, 4)))
    bf = h.tensor((3,), rng.normal(0, 0.1, 3))
    out = h.op("FULLY_CONNECTED", [m, wf, bf], (1, 3),
               fb.FullyConnectedOptionsT(fusedActivationFunction=act.NONE),
               fb.BuiltinOptions.FullyConnectedOptions)
    return h.bytes([x], [out])


@pytest.mark.parametrize("keep_dims", [False, True])
def test_standalone_activations_and_global_mean(keep_dims):
    rng = np.random.default_rng(8)
    model = keras_like_model(rng, keep_dims)
    net = from_float_tflite_bytes(model)
    assert [(n.kind, n.activation) for n in net.nodes][:4] == [
        ("conv", "RELU6"), ("conv", "NONE"), ("add", "RELU"), ("avgpool", "NONE")]
    x = rng.uniform(-2, 2, (32, 6, 6, 2))
    assert_close(net(x), litert_float(model, x))
    network = quantize_model(net, x, Config(), stream=None).to_network()
    xq = network.quantize(0, x)
    ref = litert_run(to_tflite_bytes(network), {0: xq})
    out = network.outputs[0]
    got = network.run(xq)[out]
    assert np.abs(ref[out].reshape(got.shape) - got.astype(int)).max() <= 1
