"""Network: validation errors, batch handling and the float reference execution."""

import numpy as np
import pytest

from golden.graph import Network, NetworkError, Op, QuantParams, Tensor
from golden.ops import output_multipliers

from .netbuild import Builder, random_batch


def small_net(rng, activation="NONE"):
    b = Builder(rng)
    x = b.input((6, 6, 3), scale=0.05, zp=10)
    y = b.conv2d(x, 4, 3, 1, "SAME", 1, activation, log2_mult=(-9, -7), out_scale=0.2,
                 out_zp=-3)
    return b, b.build([y]), x, y


def test_unsupported_operator_is_named():
    rng = np.random.default_rng(0)
    _, net, x, y = small_net(rng)
    net.ops.append(Op("SOFTMAX", [y], [y]))
    with pytest.raises(NetworkError, match=r"unsupported operator SOFTMAX \(op 1\)"):
        net.validate()


@pytest.mark.parametrize("edit, message", [
    (lambda n: setattr(n.tensors[3], "shape", (6, 6, 5)), r"output shape must be \(6, 6, 4\)"),
    (lambda n: setattr(n.tensors[0], "quant", None), "int8 tensor has no quantization"),
    (lambda n: n.ops[0].options.update(padding="FULL"), "padding must be one of"),
    (lambda n: n.ops[0].options.update(activation="TANH"), "activation must be one of"),
    (lambda n: n.ops[0].options.update(stride=0), "stride must be a pair of positive ints"),
    (lambda n: setattr(n.ops[0], "inputs", [0]), "must have 2 or 3 inputs"),
    (lambda n: setattr(n.ops[0], "inputs", [0, 0, 2]), "weights must be a constant int8"),
    (lambda n: setattr(n, "outputs", [7]), "network output 7 is not a tensor index"),
    (lambda n: setattr(n.tensors[2], "data", np.zeros(4, np.int8)), "data must be int32"),
    (lambda n: setattr(n.tensors[1].quant, "zero_point", np.full(4, 1)),
     "weights must be symmetric"),
    (lambda n: setattr(n.tensors[0], "quant", QuantParams([0.1, 0.2, 0.3], 0, 2)),
     "activations must be quantized per tensor"),
])
def test_validation_errors(edit, message):
    _, net, _, _ = small_net(np.random.default_rng(1))
    edit(net)
    with pytest.raises(NetworkError, match=message):
        net.validate()


def test_ops_must_be_in_execution_order():
    rng = np.random.default_rng(2)
    b = Builder(rng)
    x = b.input((4, 4, 2))
    h = b.conv2d(x, 2)
    y = b.conv2d(h, 2)
    net = b.build([y])
    net.ops.reverse()
    with pytest.raises(NetworkError, match="is not computed before it is used"):
        net.validate()


def test_run_checks_the_batch():
    _, net, _, _ = small_net(np.random.default_rng(3))
    with pytest.raises(ValueError, match="input 0 must be int8"):
        net.run(np.zeros((2, 6, 6, 3), np.float32))
    with pytest.raises(ValueError, match=r"input 0 must have shape \(N, 6, 6, 3\)"):
        net.run(np.zeros((6, 6, 3), np.int8))
    with pytest.raises(ValueError, match=r"input 0 holds no samples \(shape \(0, 6, 6, 3\)\)"):
        net.run(np.zeros((0, 6, 6, 3), np.int8))
    with pytest.raises(ValueError, match="holds no samples"):
        net.run_float(np.zeros((0, 6, 6, 3)))


def test_run_preserve_false_returns_outputs_only():
    rng = np.random.default_rng(4)
    _, net, x, y = small_net(rng)
    batch = random_batch(rng, (6, 6, 3), 3)
    full, outs = net.run(batch), net.run(batch, preserve=False)
    assert list(outs) == [y] and sorted(full) == list(range(len(net.tensors)))
    np.testing.assert_array_equal(full[y], outs[y])
    np.testing.assert_array_equal(full[x], batch)
    np.testing.assert_array_equal(full[1], net.tensors[1].data)


def test_two_input_network_with_list_and_dict():
    rng = np.random.default_rng(5)
    b = Builder(rng)
    a, c = b.input((3, 4)), b.input((3, 4))
    y = b.add(a, c)
    net = b.build([y])
    xa, xc = random_batch(rng, (3, 4), 4), random_batch(rng, (3, 4), 4)
    by_list = net.run([xa, xc])[y]
    np.testing.assert_array_equal(by_list, net.run({a: xa, c: xc})[y])
    with pytest.raises(ValueError, match="pass a list or a dict"):
        net.run(xa)


def one_layer(kind, activation, rng):
    b = Builder(rng)
    x = b.input((7, 6, 4), scale=0.05, zp=10)
    if kind == "CONV_2D":
        y = b.conv2d(x, 5, 3, 2, "SAME", 1, activation, log2_mult=(-11, -10), out_zp=-3)
    elif kind == "DEPTHWISE_CONV_2D":
        y = b.depthwise(x, 2, 3, 1, "SAME", 2, activation, log2_mult=(-8, -7), out_zp=-3)
    elif kind == "FULLY_CONNECTED":
        y = b.fully_connected(b.reshape(x, (168,)), 6, activation, log2_mult=(-12, -11))
    elif kind == "ADD":
        y = b.add(x, b.constant((1, 1, 4), scale=0.02, zp=5), activation, out_scale=0.06)
    else:
        y = b.pool(kind, x, 3, 2, "SAME", activation)
    return b.build([y]), x, y


@pytest.mark.parametrize("activation", ["NONE", "RELU", "RELU6"])
@pytest.mark.parametrize("kind", ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD",
                                  "AVERAGE_POOL_2D", "MAX_POOL_2D"])
def test_run_float_is_what_each_op_approximates(kind, activation):
    """On a dequantized input the int output is the float output rounded to the output
    grid: |error| <= s_out / 2, plus what double rounding adds (half an ulp of the SRDHM
    result, 2**(shift - 1) output steps) and a hair for ADD's 20-bit rescaling."""
    rng = np.random.default_rng(6)
    net, x, y = one_layer(kind, activation, rng)
    batch = random_batch(rng, (7, 6, 4), 20)
    q = net.run(batch)[y]
    f = net.run_float(net.dequantize(x, batch))[y]
    s = net.tensors[y].quant.scale[0]
    unsaturated = (q > -128) & (q < 127)
    assert unsaturated.mean() > 0.3
    err = np.abs(net.dequantize(y, q) - f)[unsaturated]
    extra = 1e-3
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        w = net.ops[-1].inputs[1]
        _, shift = output_multipliers(net.tensors[net.ops[-1].inputs[0]].quant.scale[0],
                                      net.tensors[w].quant.scale, s)
        extra = 2.0 ** shift.max()
    assert err.max() <= s / 2 * (1 + extra)
    if kind == "MAX_POOL_2D":
        assert err.max() == 0


def test_run_float_returns_every_tensor():
    rng = np.random.default_rng(7)
    net, x, y = one_layer("FULLY_CONNECTED", "NONE", rng)
    f = net.run_float(np.zeros((2, 7, 6, 4)))
    assert sorted(f) == list(range(len(net.tensors)))
    assert f[y].shape == (2, 6) and f[y].dtype == np.float64
    np.testing.assert_array_equal(f[2], net.dequantize(2, net.tensors[2].data))


def test_tensor_quantize_dequantize():
    t = [Tensor("x", (3,), "int8", QuantParams(0.5, 2)),
         Tensor("w", (2, 3), "int8", QuantParams([0.5, 0.25], 0, 0),
                np.array([[1, 2, 3], [4, 5, 6]], np.int8))]
    net = Network(t, [], [0], [0])
    np.testing.assert_array_equal(net.quantize(0, [1.0, -1.24, 100.0]), [4, 0, 127])
    np.testing.assert_array_equal(net.dequantize(1, t[1].data), [[0.5, 1, 1.5], [1, 1.25, 1.5]])
