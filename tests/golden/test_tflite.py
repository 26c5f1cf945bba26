"""Golden integer inference == LiteRT's reference kernels, every tensor, bit for bit.

Each test builds its own random int8 model, exports it with golden.tflite_io, runs it in
LiteRT's BUILTIN_REF interpreter with all tensors preserved, and compares every tensor
(constants, input, intermediates, outputs) with Network.run.
"""

import zlib

import numpy as np
import pytest

from golden.arith import INT32_MAX, INT32_MIN, AccumulatorOverflowError, quantize_multiplier
from golden.graph import Network, Op, QuantParams, Tensor
from golden.ops import fully_connected, output_multipliers
from golden.tflite_io import TFLiteError, from_tflite_bytes, to_tflite_bytes

from .netbuild import Builder, litert_run, random_batch


def assert_all_tensors_equal(net, x, skip=()):
    """Run ``net`` in golden and LiteRT on batch ``x``; every tensor but ``skip`` equal."""
    model = to_tflite_bytes(net)
    golden = net.run(x)
    ref = litert_run(model, {net.inputs[0]: x})
    assert set(golden) == set(ref) == set(range(len(net.tensors)))
    for i in sorted(golden):
        if i in skip:
            continue
        assert golden[i].dtype == ref[i].dtype, f"tensor {i} {net.tensors[i].name}"
        np.testing.assert_array_equal(golden[i], ref[i],
                                      err_msg=f"tensor {i} {net.tensors[i].name}")
    return golden, ref


CONV_CASES = [
    # (input HWC, N, kernel, stride, padding, dilation, activation, per_channel)
    ((8, 8, 1), 8, 3, 1, "SAME", 1, "NONE", True),
    ((9, 11, 5), 7, (3, 5), (2, 1), "SAME", (2, 1), "RELU6", True),
    ((9, 11, 5), 6, 3, 2, "VALID", 1, "RELU", False),
    ((10, 7, 3), 4, (2, 3), (1, 2), "VALID", (1, 2), "NONE", True),
    ((7, 7, 16), 16, 1, 1, "VALID", 1, "RELU6", True),
    ((12, 12, 4), 5, 5, 3, "SAME", 2, "RELU", False),
    ((6, 6, 3), 4, 6, 1, "VALID", 1, "NONE", True),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[0]}-{c[2]}-{c[4]}")
def test_conv2d_matches_litert(case):
    shape, n, kernel, stride, padding, dilation, act, per_channel = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    b = Builder(rng)
    x = b.input(shape)
    y = b.conv2d(x, n, kernel, stride, padding, dilation, act, per_channel)
    assert_all_tensors_equal(b.build([y]), random_batch(rng, shape))


def test_conv2d_multipliers_span_all_shifts():
    """Multipliers from 2**-40 (M0 = 0) to 2**3 (left shift) in one layer, per channel."""
    rng = np.random.default_rng(7)
    b = Builder(rng)
    x = b.input((6, 6, 8), zp=-77)
    y = b.conv2d(x, 64, 3, 1, "SAME", 1, "NONE", True, log2_mult=(-40, 3))
    net = b.build([y])
    m0, shift = output_multipliers(b.scale(x), net.tensors[1].quant.scale, b.scale(y))
    assert np.any(m0 == 0) and np.any(shift > 0) and np.any(shift < -20)
    golden, _ = assert_all_tensors_equal(net, random_batch(rng, (6, 6, 8)))
    assert len(np.unique(golden[y])) > 100


@pytest.mark.parametrize("zp_in", [-128, 0, 127])
def test_conv2d_padding_uses_input_zero_point(zp_in):
    rng = np.random.default_rng(zp_in + 1000)
    b = Builder(rng)
    x = b.input((5, 5, 3), zp=zp_in)
    y = b.conv2d(x, 4, 3, 1, "SAME")
    assert_all_tensors_equal(b.build([y]), random_batch(rng, (5, 5, 3)))


DW_CASES = [
    # (input HWC, depth multiplier, kernel, stride, padding, dilation, activation, per_ch)
    ((8, 8, 16), 1, 3, 1, "SAME", 1, "RELU6", True),
    ((9, 11, 5), 3, 3, 2, "SAME", 1, "RELU", True),
    ((9, 11, 5), 2, (2, 3), 1, "VALID", 2, "NONE", False),
    ((10, 10, 4), 1, 5, (2, 3), "SAME", (1, 2), "NONE", True),
    ((7, 6, 2), 4, 3, 1, "VALID", 1, "RELU6", True),
]


@pytest.mark.parametrize("case", DW_CASES, ids=lambda c: f"{c[0]}-dm{c[1]}-{c[4]}")
def test_depthwise_matches_litert(case):
    shape, dm, kernel, stride, padding, dilation, act, per_channel = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    b = Builder(rng)
    x = b.input(shape)
    y = b.depthwise(x, dm, kernel, stride, padding, dilation, act, per_channel,
                    log2_mult=(-12, 1))
    assert_all_tensors_equal(b.build([y]), random_batch(rng, shape))


@pytest.mark.parametrize("kind", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
@pytest.mark.parametrize("geometry", [
    (2, 2, "VALID", "NONE"),
    (3, 2, "SAME", "RELU6"),
    ((3, 2), (1, 2), "SAME", "RELU"),
    (4, 3, "VALID", "NONE"),
])
def test_pool_matches_litert(kind, geometry):
    filter_size, stride, padding, act = geometry
    rng = np.random.default_rng(11)
    b = Builder(rng)
    x = b.input((9, 10, 6), scale=0.02)
    y = b.pool(kind, x, filter_size, stride, padding, act)
    assert_all_tensors_equal(b.build([y]), random_batch(rng, (9, 10, 6), 32))


@pytest.mark.parametrize("seed", range(4))
def test_add_matches_litert(seed):
    """Scales in both orders and a decade apart, nonzero zero points, broadcast constant."""
    rng = np.random.default_rng(100 + seed)
    b = Builder(rng)
    x = b.input((6, 7, 5), scale=float(rng.uniform(0.005, 0.2)))
    c = b.conv2d(x, 5, 3, 1, "SAME")
    y = b.add(c, x, ["NONE", "RELU", "RELU6", "NONE"][seed],
              out_scale=float(rng.uniform(0.01, 0.3)))
    k = b.constant((1, 1, 1, 5))
    z = b.add(k, y)
    assert_all_tensors_equal(b.build([z]), random_batch(rng, (6, 7, 5), 64))


def test_digits_cnn_matches_litert_except_fc():
    """conv -> depthwise -> conv -> avg pool -> reshape -> FC: all but the FC output exact."""
    rng = np.random.default_rng(5)
    b = Builder(rng)
    x = b.input((8, 8, 1), scale=1 / 255 * 2, zp=-128)
    h = b.conv2d(x, 16, 3, 1, "SAME", 1, "RELU")
    h = b.depthwise(h, 1, 3, 2, "SAME", 1, "RELU6")
    h = b.conv2d(h, 32, 1, 1, "VALID", 1, "RELU")
    h = b.pool("AVERAGE_POOL_2D", h, 2, 2)
    h = b.pool("MAX_POOL_2D", h, 2, 1, "SAME")
    h = b.reshape(h, (2 * 2 * 32,))
    y = b.fully_connected(h, 10)
    golden, ref = assert_all_tensors_equal(b.build([y]), random_batch(rng, (8, 8, 1), 200),
                                           skip={y})
    assert np.max(np.abs(golden[y].astype(int) - ref[y])) <= 1


# -- accumulators at the int32 limits ----------------------------------------------------
# Overflow is decided per channel from the layer's own weights and folded bias, so layers
# whose worst case touches INT32_MIN / INT32_MAX exactly are valid and must run exactly.


def _gemm_weights(net, op):
    """(K, N) weight matrix of a CONV_2D / DEPTHWISE_CONV_2D."""
    w = net.tensors[op.inputs[1]].data.astype(np.int64)
    if op.kind == "DEPTHWISE_CONV_2D":
        return w.reshape(-1, w.shape[3])
    return w.reshape(w.shape[0], -1).T


def _extremal_inputs(w):
    """Per channel, the codes that maximise and minimise ``x @ w[:, n]``: (2, K, N)."""
    return np.stack([np.where(w > 0, 127, -128), np.where(w > 0, -128, 127)])


def _push_biases_to_limits(net, op):
    """Set the bias so that even channels reach INT32_MAX and odd ones INT32_MIN exactly
    (as near as an int32 bias allows once the input zero point is folded in)."""
    w = _gemm_weights(net, op)
    hi_x, lo_x = _extremal_inputs(w)
    hi = (hi_x * w).sum(axis=0)
    lo = (lo_x * w).sum(axis=0)
    folded = np.where(np.arange(w.shape[1]) % 2 == 0, INT32_MAX - hi, INT32_MIN - lo)
    z_in = int(net.tensors[op.inputs[0]].quant.zero_point[0])
    bias = np.clip(folded + z_in * w.sum(axis=0), INT32_MIN, INT32_MAX)
    net.tensors[op.inputs[2]].data = bias.astype(np.int32)
    # The K-only bound K * 127 * 128 + |bias'| refuses every such layer.
    assert np.all(w.shape[0] * 127 * 128 + np.abs(bias - z_in * w.sum(axis=0)) > INT32_MAX)


def test_large_multipliers_and_biases_at_int32_limits_match_litert():
    """1x1 CONV_2D over 8 channels, per-channel multipliers up to 2**8 (left shifts that wrap
    the int32 product, as C does), biases putting each channel's range at an int32 end; the
    input holds each channel's extremal pattern, so the limits are reached."""
    rng = np.random.default_rng(90)
    b = Builder(rng)
    x = b.input((4, 4, 8), zp=0)
    y = b.conv2d(x, 8, 1, 1, "VALID", 1, "NONE", True, log2_mult=(0, 8))
    net = b.build([y])
    _push_biases_to_limits(net, net.ops[0])
    batch = random_batch(rng, (4, 4, 8), 8)
    ext = _extremal_inputs(_gemm_weights(net, net.ops[0]))    # (2, K=8, N=8)
    batch[2:4] = ext.transpose(0, 2, 1).reshape(2, 8, 8).repeat(2, axis=1).reshape(2, 4, 4, 8)
    assert_all_tensors_equal(net, batch)
    # One more on channel 5's bias and its range leaves int32: refused, by name.
    net.tensors[net.ops[0].inputs[2]].data[5] -= 1
    with pytest.raises(AccumulatorOverflowError,
                       match=r"^op 0 \('conv0'\): CONV_2D: output channel 5: .* int32"):
        net.run(batch)


@pytest.mark.parametrize("case", [
    # (layer, input HWC, per_channel, input zero point, log2 multiplier range)
    ("conv3x3", (5, 5, 16), True, -128, (-4, 8)),
    ("conv3x3", (5, 5, 16), False, 127, (0, 4)),
    ("depthwise", (6, 6, 8), True, 5, (-2, 8)),
    ("depthwise", (6, 6, 8), False, -128, (-8, 2)),
], ids=lambda c: f"{c[0]}-{'channel' if c[2] else 'tensor'}-z{c[3]}")
def test_layers_at_int32_limits_match_litert(case):
    """Unseen random layers (SAME padding, so padded windows too) whose biases put every
    channel's range at an int32 end, with multipliers up to 2**8."""
    kind, shape, per_channel, zp, log2_mult = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    b = Builder(rng)
    x = b.input(shape, zp=zp)
    if kind == "conv3x3":
        y = b.conv2d(x, 8, 3, 1, "SAME", 1, "NONE", per_channel, log2_mult=log2_mult)
    else:
        y = b.depthwise(x, 2, 3, 1, "SAME", 1, "NONE", per_channel, log2_mult=log2_mult)
    net = b.build([y])
    _push_biases_to_limits(net, net.ops[0])
    assert_all_tensors_equal(net, random_batch(rng, shape, 32))


def test_per_tensor_chain_with_biases_near_int32_limits_matches_litert():
    """conv 3x3 -> conv 1x1 -> depthwise 3x3, per-tensor weights, nonzero zero points, every
    bias at the int32 limit of its channel's range."""
    rng = np.random.default_rng(91)
    b = Builder(rng)
    x = b.input((6, 6, 4), zp=-30)
    h = b.conv2d(x, 6, 3, 1, "SAME", 1, "NONE", False, log2_mult=(-27, -24), out_zp=11)
    h = b.conv2d(h, 6, 1, 1, "VALID", 1, "RELU", False, log2_mult=(-27, -24), out_zp=-7)
    y = b.depthwise(h, 1, 3, 1, "SAME", 1, "NONE", False, log2_mult=(-25, -22))
    net = b.build([y])
    for op in net.ops:
        _push_biases_to_limits(net, op)
    assert_all_tensors_equal(net, random_batch(rng, (6, 6, 4), 64))


# -- FULLY_CONNECTED ---------------------------------------------------------------------
# LiteRT's reference FULLY_CONNECTED rescales in double-precision floating point instead of
# MultiplyByQuantizedMultiplier, so it can differ by one code where the fixed-point result
# sits next to a rounding tie. Golden follows the fixed-point path (TFLite Micro, the
# hardware); that path is checked exactly through the 1x1 CONV_2D that computes the same
# layer in LiteRT.


def _fc_case(rng, per_channel, k=256, n=32):
    b = Builder(rng)
    x = b.input((k,))
    y = b.fully_connected(x, n, "NONE", per_channel, log2_mult=(-13, -7))
    return b.build([y]), x, y


@pytest.mark.parametrize("per_channel", [False, True])
def test_fully_connected_differs_from_litert_by_at_most_one(per_channel):
    rng = np.random.default_rng(21 + per_channel)
    net, x, y = _fc_case(rng, per_channel)
    batch = random_batch(rng, (256,), 2000)
    golden, ref = assert_all_tensors_equal(net, batch, skip={y})
    diff = golden[y].astype(int) - ref[y]
    assert np.max(np.abs(diff)) <= 1
    assert np.mean(diff != 0) < 0.005


@pytest.mark.parametrize("per_channel", [False, True])
def test_fully_connected_equals_litert_1x1_conv(per_channel):
    rng = np.random.default_rng(31 + per_channel)
    net, x, y = _fc_case(rng, per_channel)
    t = net.tensors
    w, bias = t[1], t[2]
    n, k = w.data.shape
    conv = Network(
        [Tensor("x", (1, 1, k), "int8", t[x].quant),
         Tensor("w", (n, 1, 1, k), "int8", w.quant, w.data.reshape(n, 1, 1, k)),
         bias,
         Tensor("y", (1, 1, n), "int8", t[y].quant)],
        [Op("CONV_2D", [0, 1, 2], [3], dict(stride=(1, 1), padding="VALID"))], [0], [3])
    batch = random_batch(rng, (k,), 2000)
    ref = litert_run(to_tflite_bytes(conv), {0: batch.reshape(-1, 1, 1, k)})[3]
    np.testing.assert_array_equal(net.run(batch)[y], ref.reshape(-1, n))
    m0, shift = output_multipliers(t[x].quant.scale[0], w.quant.scale, t[y].quant.scale[0])
    direct = fully_connected(batch, w.data, bias.data, m0, shift,
                             z_in=int(t[x].quant.zero_point[0]),
                             z_out=int(t[y].quant.zero_point[0]))
    np.testing.assert_array_equal(direct, ref.reshape(-1, n))


# -- import ------------------------------------------------------------------------------


def test_import_round_trip():
    rng = np.random.default_rng(41)
    b = Builder(rng)
    x = b.input((8, 8, 3))
    h = b.conv2d(x, 4, 3, 2, "SAME", 1, "RELU6", True)
    h = b.depthwise(h, 2, 3, 1, "VALID", 1, "RELU", False)
    h = b.pool("MAX_POOL_2D", h, 2, 1, "VALID")
    h = b.reshape(h, (8,))
    y = b.fully_connected(h, 3, per_channel=True)
    net = b.build([y])
    back = from_tflite_bytes(to_tflite_bytes(net))
    assert back.inputs == net.inputs and back.outputs == net.outputs
    assert [o.kind for o in back.ops] == [o.kind for o in net.ops]
    assert [o.inputs for o in back.ops] == [o.inputs for o in net.ops]
    for a, c in zip(net.tensors, back.tensors, strict=True):
        assert (a.name, tuple(a.shape), a.dtype) == (c.name, tuple(c.shape), c.dtype)
        if a.data is not None:
            np.testing.assert_array_equal(a.data, c.data)
        np.testing.assert_array_equal(np.float32(a.quant.scale), c.quant.scale)
        np.testing.assert_array_equal(a.quant.zero_point, c.quant.zero_point)
        assert a.quant.per_channel == c.quant.per_channel
        if a.quant.per_channel:
            assert a.quant.axis == c.quant.axis
    for o, p in zip(net.ops, back.ops, strict=True):
        for key, value in o.options.items():
            expected = (value, value) if isinstance(value, int) and key != "depth_multiplier" \
                else value
            assert p.options[key] == expected, (o.kind, key)
    batch = random_batch(rng, (8, 8, 3))
    got, want = back.run(batch), net.run(batch)
    assert all(np.array_equal(got[i], want[i]) for i in want)


def test_export_writes_float32_scales_and_quantized_dimension():
    """The exported multipliers are those of the float32 scales golden already uses."""
    rng = np.random.default_rng(43)
    b = Builder(rng)
    x = b.input((4, 4, 2), scale=0.1 + 1e-12)
    y = b.depthwise(x, 2, 3, 1, "SAME")
    net = b.build([y])
    back = from_tflite_bytes(to_tflite_bytes(net))
    wq = back.tensors[1].quant
    assert wq.axis == 3 and wq.scale.size == 4
    m_golden = quantize_multiplier(np.float64(np.float32(b.scale(x)))
                                   * np.float32(net.tensors[1].quant.scale).astype(np.float64)
                                   / np.float64(np.float32(b.scale(y))))
    m_back = output_multipliers(back.tensors[0].quant.scale[0], wq.scale,
                                back.tensors[y].quant.scale[0])
    np.testing.assert_array_equal(m_golden, m_back)


@pytest.mark.parametrize("data, message", [
    (b"", "TFL3"),
    (b"\x00" * 64, "TFL3"),
    (b"\x10\x00\x00\x00TFL3" + b"\xff" * 40, "malformed"),
])
def test_import_rejects_garbage(data, message):
    with pytest.raises(TFLiteError, match=message):
        from_tflite_bytes(data)


def test_import_rejects_truncated_model():
    rng = np.random.default_rng(47)
    b = Builder(rng)
    y = b.conv2d(b.input((8, 8, 3)), 8)
    model = to_tflite_bytes(b.build([y]))
    for cut in (len(model) // 3, len(model) // 2, len(model) - 40):
        with pytest.raises(TFLiteError):
            from_tflite_bytes(model[:cut])


def test_quant_params_are_checked_on_export():
    rng = np.random.default_rng(53)
    b = Builder(rng)
    y = b.conv2d(b.input((4, 4, 2)), 3)
    net = b.build([y])
    net.tensors[1].quant = QuantParams([0.1, 0.2], [0, 0], 0)
    with pytest.raises(ValueError, match="2 scales do not match axis 0"):
        to_tflite_bytes(net)
    net.tensors[1].quant = QuantParams([0.1, 0.2], [0, 0], 3)
    with pytest.raises(ValueError, match="op 0 CONV_2D: weights must have one scale or 3 "):
        to_tflite_bytes(net)
