"""golden.ops against scalar loop transcriptions of TFLite's reference kernels.

The references below index the unpadded input directly (padding positions contribute
``x - z_in = 0``) and rescale with the scalar gemmlowp transcription of test_arith, so
they share no code with the lowered im2col -> gemm -> fold_bias -> requantize path.
"""

import numpy as np
import pytest

from golden.arith import INT32_MAX, INT32_MIN, AccumulatorOverflowError, quantize_multiplier
from golden.ops import (
    _requantize_rows,
    add,
    add_params,
    average_pool2d,
    conv2d,
    conv_geometry,
    depthwise_conv2d,
    depthwise_gemm,
    fold_bias,
    fully_connected,
    gemm,
    im2col,
    max_pool2d,
    output_multipliers,
    reshape,
)
from golden.requant import requantize

from .test_arith import mbqm_ref, rdbpot_ref, srdhm_ref


@pytest.fixture
def rng():
    return np.random.default_rng(2024)


def i8(rng, shape, lo=-128):
    return rng.integers(lo, 128, shape).astype(np.int8)


def geometry_ref(size, k, s, padding, d=1):
    eff = (k - 1) * d + 1
    out = -(-size // s) if padding == "SAME" else -(-(size - eff + 1) // s)
    pad = max((out - 1) * s + eff - size, 0) // 2
    return out, pad


@pytest.mark.parametrize("size, k, s, padding, d", [
    (8, 3, 1, "SAME", 1), (8, 3, 2, "SAME", 1), (9, 3, 2, "VALID", 1), (7, 4, 3, "SAME", 2),
    (5, 5, 1, "VALID", 1), (10, 2, 2, "SAME", 1), (11, 3, 1, "VALID", 3), (1, 3, 1, "SAME", 1),
])
def test_conv_geometry(size, k, s, padding, d):
    out, before, after = conv_geometry(size, k, s, padding, d)
    assert (out, before) == geometry_ref(size, k, s, padding, d)
    assert before <= after <= before + 1


def test_conv_geometry_rejects():
    with pytest.raises(ValueError, match="padding must be one of"):
        conv_geometry(8, 3, 1, "FULL")
    with pytest.raises(ValueError, match="does not fit"):
        conv_geometry(3, 5, 1, "VALID")


def conv_ref(x, w, bias, m0, shift, z_in, z_out, stride, padding, dilation, lo, hi,
             depth_multiplier=None):
    """Scalar CONV_2D / DEPTHWISE_CONV_2D as reference_integer_ops, Python ints."""
    b, h, wd, c = x.shape
    if depth_multiplier is None:
        n, kh, kw, _ = w.shape
    else:
        _, kh, kw, n = w.shape
    oh, pt = geometry_ref(h, kh, stride[0], padding, dilation[0])
    ow, pl = geometry_ref(wd, kw, stride[1], padding, dilation[1])
    out = np.zeros((b, oh, ow, n), dtype=np.int64)
    for bi in range(b):
        for y in range(oh):
            for xx in range(ow):
                for o in range(n):
                    acc = 0
                    for i in range(kh):
                        for j in range(kw):
                            iy = y * stride[0] - pt + i * dilation[0]
                            ix = xx * stride[1] - pl + j * dilation[1]
                            if not (0 <= iy < h and 0 <= ix < wd):
                                continue
                            if depth_multiplier is None:
                                acc += sum((int(x[bi, iy, ix, ci]) - z_in) * int(w[o, i, j, ci])
                                           for ci in range(c))
                            else:
                                ci = o // depth_multiplier
                                acc += (int(x[bi, iy, ix, ci]) - z_in) * int(w[0, i, j, o])
                    acc += int(bias[o])
                    v = mbqm_ref(acc, int(m0[o]), int(shift[o]), "double") + z_out
                    out[bi, y, xx, o] = min(max(v, lo), hi)
    return out


@pytest.mark.parametrize("kernel, stride, padding, dilation", [
    ((3, 3), (1, 1), "SAME", (1, 1)),
    ((2, 3), (2, 1), "VALID", (1, 2)),
    ((3, 3), (2, 2), "SAME", (2, 2)),
])
def test_im2col_against_loops(rng, kernel, stride, padding, dilation):
    x = i8(rng, (2, 7, 6, 3))
    z = -37
    got = im2col(x, kernel, stride, padding, dilation, pad_value=z)
    oh, pt = geometry_ref(7, kernel[0], stride[0], padding, dilation[0])
    ow, pl = geometry_ref(6, kernel[1], stride[1], padding, dilation[1])
    assert got.dtype == np.int8
    assert got.shape == (2 * oh * ow, kernel[0] * kernel[1] * 3)
    for b in range(2):
        for y in range(oh):
            for xx in range(ow):
                row = got[(b * oh + y) * ow + xx]
                for i in range(kernel[0]):
                    for j in range(kernel[1]):
                        for c in range(3):
                            iy = y * stride[0] - pt + i * dilation[0]
                            ix = xx * stride[1] - pl + j * dilation[1]
                            inside = 0 <= iy < 7 and 0 <= ix < 6
                            want = x[b, iy, ix, c] if inside else z
                            assert row[(i * kernel[1] + j) * 3 + c] == want


def test_im2col_rejects(rng):
    with pytest.raises(ValueError, match="x must have shape"):
        im2col(np.zeros((3, 3, 1), np.int8), 3)
    with pytest.raises(ValueError, match="pad_value must be an int8 code"):
        im2col(np.zeros((1, 3, 3, 1), np.int8), 3, padding="SAME", pad_value=200)
    with pytest.raises(ValueError, match="stride must be a positive int"):
        im2col(np.zeros((1, 3, 3, 1), np.int8), 3, stride=0)


@pytest.mark.parametrize("k", [1, 7, 1000, 1024, 1025, 5000])
def test_gemm_exact_across_float_paths(rng, k):
    a = i8(rng, (9, k))
    w = i8(rng, (5, k))
    a[0] = -128
    w[0] = -128
    w[1] = 127
    got = gemm(a, w)
    assert got.dtype == np.int32
    want = a.astype(np.int64) @ w.astype(np.int64).T  # NumPy's integer matmul, no BLAS
    np.testing.assert_array_equal(got, want)
    assert got[0, 0] == k * 128 * 128


def test_gemm_scalar_reference(rng):
    a, w = i8(rng, (4, 6)), i8(rng, (3, 6))
    got = gemm(a, w)
    for m in range(4):
        for n in range(3):
            assert got[m, n] == sum(int(a[m, k]) * int(w[n, k]) for k in range(6))


def test_gemm_refuses_overflowing_weights():
    """The refusal follows the weights: K = 132105 overflows with |w| = 127, not with 1."""
    k = (2**31 - 1) // (127 * 128) + 1
    with pytest.raises(AccumulatorOverflowError, match="32-bit"):
        gemm(np.zeros((1, k), np.int8), np.full((1, k), 127, np.int8))
    x = np.full((2, k), -128, np.int8)
    x[1] = 127
    np.testing.assert_array_equal(gemm(x, np.ones((1, k), np.int8)), [[-128 * k], [127 * k]])
    w = np.full((2, 3), 127, np.int8)
    with pytest.raises(AccumulatorOverflowError, match="output channel 0 .*16-bit"):
        gemm(np.zeros((1, 3), np.int8), w, acc_width=16)
    w[0] = 1
    with pytest.raises(AccumulatorOverflowError, match="output channel 1: .*16-bit"):
        gemm(np.zeros((1, 3), np.int8), w, acc_width=16)


def test_gemm_float_path_is_exact_beyond_float32(rng):
    """Partial sums past 2**24 (float32's exact range) still come out exact."""
    k = 2048
    x = rng.integers(-128, 128, (6, k)).astype(np.int8)
    x[0], x[1] = 127, -128
    w = rng.integers(-127, 128, (3, k)).astype(np.int8)
    w[0] = 127
    want = x.astype(np.int64) @ w.astype(np.int64).T
    assert np.abs(want).max() > 2**24
    np.testing.assert_array_equal(gemm(x, w), want)


def test_gemm_rejects(rng):
    with pytest.raises(ValueError, match="a must be an int8 array"):
        gemm(np.zeros((2, 3), np.int16), i8(rng, (2, 3)))
    with pytest.raises(ValueError, match="must share K"):
        gemm(i8(rng, (2, 3)), i8(rng, (2, 4)))


def test_fold_bias_identity(rng):
    """gemm on raw codes + folded bias == sum (x - z_in) * w + bias, exactly."""
    a, w = i8(rng, (50, 20)), i8(rng, (6, 20), -127)
    bias = rng.integers(-(2**20), 2**20, 6).astype(np.int32)
    for z in (-128, -5, 0, 127):
        folded = fold_bias(bias, w, z)
        assert folded.dtype == np.int32
        want = (a.astype(np.int64) - z) @ w.astype(np.int64).T + bias
        np.testing.assert_array_equal(gemm(a, w).astype(np.int64) + folded, want)
    np.testing.assert_array_equal(fold_bias(None, w, 0), np.zeros(6))
    with pytest.raises(OverflowError):
        fold_bias(np.array([2**31 - 1], np.int64), np.full((1, 4), -127, np.int8), 127)
    with pytest.raises(ValueError, match="bias must be an integer array of shape"):
        fold_bias(np.zeros(3, np.int32), w, 0)


def _params(rng, n, log2=(-12, -4)):
    m0, shift = quantize_multiplier(2.0 ** rng.uniform(*log2, n))
    return m0, shift


@pytest.mark.parametrize("stride, padding, dilation, act", [
    ((1, 1), "SAME", (1, 1), (-128, 127)),
    ((2, 1), "VALID", (1, 2), (-20, 127)),
    ((2, 2), "SAME", (2, 1), (-3, 90)),
])
def test_conv2d_against_scalar_reference(rng, stride, padding, dilation, act):
    x = i8(rng, (2, 6, 7, 3))
    x[0] = -128
    w = i8(rng, (4, 3, 2, 3), -127)
    bias = rng.integers(-5000, 5000, 4).astype(np.int32)
    m0, shift = _params(rng, 4, (-12, 1))
    z_in, z_out = 17, -9
    got = conv2d(x, w, bias, m0, shift, z_in=z_in, z_out=z_out, stride=stride,
                 padding=padding, dilation=dilation, act_min=act[0], act_max=act[1])
    want = conv_ref(x, w, bias, m0, shift, z_in, z_out, stride, padding, dilation, *act)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dm, stride, padding, dilation", [
    (1, (1, 1), "SAME", (1, 1)),
    (3, (2, 1), "VALID", (1, 1)),
    (2, (1, 2), "SAME", (2, 2)),
])
def test_depthwise_against_scalar_reference(rng, dm, stride, padding, dilation):
    x = i8(rng, (2, 6, 5, 3))
    w = i8(rng, (1, 3, 3, 3 * dm), -127)
    bias = rng.integers(-500, 500, 3 * dm).astype(np.int32)
    m0, shift = _params(rng, 3 * dm, (-9, 1))
    got = depthwise_conv2d(x, w, bias, m0, shift, z_in=-100, z_out=5, depth_multiplier=dm,
                           stride=stride, padding=padding, dilation=dilation)
    want = conv_ref(x, w, bias, m0, shift, -100, 5, stride, padding, dilation, -128, 127,
                    depth_multiplier=dm)
    np.testing.assert_array_equal(got, want)


def test_depthwise_gemm_scalar(rng):
    a, w = i8(rng, (5, 4, 3)), i8(rng, (4, 6))
    got = depthwise_gemm(a, w, 2)
    for m in range(5):
        for o in range(6):
            assert got[m, o] == sum(int(a[m, t, o // 2]) * int(w[t, o]) for t in range(4))


def test_fully_connected_against_scalar_reference(rng):
    x, w = i8(rng, (7, 2, 5)), i8(rng, (4, 10), -127)
    bias = rng.integers(-3000, 3000, 4).astype(np.int32)
    m0, shift = _params(rng, 4, (-14, -6))
    got = fully_connected(x, w, bias, m0, shift, z_in=3, z_out=-4, act_min=-4)
    flat = x.reshape(7, 10)
    for b in range(7):
        for n in range(4):
            acc = sum((int(flat[b, k]) - 3) * int(w[n, k]) for k in range(10)) + int(bias[n])
            y = mbqm_ref(acc, int(m0[n]), int(shift[n]), "double") - 4
            assert got[b, n] == min(max(y, -4), 127)


def test_output_multipliers_use_float32_scales():
    s_in, s_w, s_out = 0.1, np.array([0.003, 0.25]), 0.07
    m0, shift = output_multipliers(s_in, s_w, s_out)
    want = quantize_multiplier(float(np.float32(s_in)) * np.float32(s_w).astype(float)
                               / float(np.float32(s_out)))
    np.testing.assert_array_equal(m0, want[0])
    np.testing.assert_array_equal(shift, want[1])


def add_ref(a, b, s1, z1, s2, z2, so, zo, lo, hi):
    """Scalar kernels/add.cc PrepareGeneralSubOp + integer_ops::AddElementwise."""
    s1, s2, so = (float(np.float32(v)) for v in (s1, s2, so))
    twice = float(np.float32(2 * max(s1, s2)))

    def qm(m):
        m0, e = (int(v) for v in quantize_multiplier(m))
        assert e <= 0
        return m0, e

    (m1, e1), (m2, e2), (mo, eo) = qm(s1 / twice), qm(s2 / twice), qm(twice / (2**20 * so))

    def mul(v, m, e):
        return rdbpot_ref(srdhm_ref(v, m), -e)

    raw = mul((int(a) - z1) * 2**20, m1, e1) + mul((int(b) - z2) * 2**20, m2, e2)
    return min(max(mul(raw, mo, eo) + zo, lo), hi)


@pytest.mark.parametrize("scales", [(0.02, 0.05, 0.06), (0.1, 0.01, 0.09), (0.03, 0.03, 0.2),
                                    (0.5, 0.001, 0.01)])
def test_add_against_scalar_reference(rng, scales):
    s1, s2, so = scales
    a, b = i8(rng, (3, 4, 5)), i8(rng, (1, 5))
    a[0] = -128
    a[1] = 127
    p = add_params(s1, -7, s2, 100, so, 3)
    got = add(a, b, p, -50, 120)
    assert got.shape == (3, 4, 5) and got.dtype == np.int8
    for idx in np.ndindex(got.shape):
        want = add_ref(a[idx], b[0, idx[2]], s1, -7, s2, 100, so, 3, -50, 120)
        assert got[idx] == want, idx


def test_add_params_rejects():
    with pytest.raises(ValueError, match="scales must be finite and positive"):
        add_params(0.0, 0, 0.1, 0, 0.1, 0)
    with pytest.raises(ValueError, match="ADD multiplier must be in"):
        add_params(1.0, 0, 1.0, 0, 1e-9, 0)


def pool_ref(x, k, s, padding, kind, lo=-128, hi=127):
    b, h, w, c = x.shape
    oh, pt = geometry_ref(h, k[0], s[0], padding)
    ow, pl = geometry_ref(w, k[1], s[1], padding)
    out = np.zeros((b, oh, ow, c), dtype=np.int64)
    for idx in np.ndindex(out.shape):
        bi, y, xx, ci = idx
        vals = [int(x[bi, iy, ix, ci])
                for iy in range(y * s[0] - pt, y * s[0] - pt + k[0])
                for ix in range(xx * s[1] - pl, xx * s[1] - pl + k[1])
                if 0 <= iy < h and 0 <= ix < w]
        if kind == "max":
            v = max(vals)
        else:
            total, n = sum(vals), len(vals)
            num = total + n // 2 if total > 0 else total - n // 2
            v = abs(num) // n * (1 if num >= 0 else -1)  # C: truncate toward zero
        out[idx] = min(max(v, lo), hi)
    return out


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("k, s, padding", [((2, 2), (2, 2), "VALID"), ((3, 3), (2, 2), "SAME"),
                                           ((3, 2), (1, 3), "SAME"), ((4, 4), (1, 1), "VALID")])
def test_pool_against_scalar_reference(rng, kind, k, s, padding):
    x = i8(rng, (2, 7, 8, 3))
    x[0, :, :, 0] = -128
    x[0, :, :, 1] = 127
    fn = average_pool2d if kind == "avg" else max_pool2d
    np.testing.assert_array_equal(fn(x, k, s, padding), pool_ref(x, k, s, padding, kind))
    np.testing.assert_array_equal(fn(x, k, s, padding, -5, 60),
                                  pool_ref(x, k, s, padding, kind, -5, 60))


def test_average_pool_negative_ties_round_away():
    # windows of 2: sums -3, -1, 1, 3, -2 -> -1.5, -0.5, 0.5, 1.5, -1
    x = np.array([-1, -2, 0, -1, 0, 1, 1, 2, -1, -1], np.int8).reshape(1, 1, 10, 1)
    got = average_pool2d(x, (1, 2), (1, 2))
    np.testing.assert_array_equal(got.ravel(), [-2, -1, 1, 2, -1])


def test_reshape():
    x = np.arange(24, dtype=np.int8).reshape(2, 3, 4)
    np.testing.assert_array_equal(reshape(x, (12,)), x.reshape(2, 12))
    with pytest.raises(ValueError, match="cannot reshape"):
        reshape(x, (5,))


def test_layer_overflow_is_refused():
    """Refused by name when the layer's own weights and bias can overflow int32, and only then."""
    k = 130000
    x = np.full((1, 1, 1, k), 127, np.int8)
    w = np.full((2, 1, 1, k), 1, np.int8)
    w[1] = 127                                      # hi = 127 * 127 * K + 2**30 > INT32_MAX
    bias = np.array([2**30, 2**30], np.int32)
    with pytest.raises(AccumulatorOverflowError, match="^CONV_2D: output channel 1: .*int32"):
        conv2d(x, w, bias, [2**30], [-31], z_in=0, z_out=0)
    got = conv2d(x, w[:1], bias[:1], [2**30], [-31], z_in=0, z_out=0)
    assert got.ravel().tolist() == [(127 * k + 2**30 + 2**31) >> 32]
    with pytest.raises(AccumulatorOverflowError, match="^FULLY_CONNECTED: output channel 1: "):
        fully_connected(x.reshape(1, k), w.reshape(2, k), bias, [2**30], [-31], z_in=0, z_out=0)
    dw = np.full((1, 2, 2, 3), 127, np.int8)
    big = np.array([0, INT32_MAX - 4 * 127 * 128 + 1, 0], np.int32)
    with pytest.raises(AccumulatorOverflowError, match="^DEPTHWISE_CONV_2D: output channel 1: "):
        depthwise_conv2d(np.zeros((1, 2, 2, 3), np.int8), dw, big, [2**30], [0], z_in=-128,
                         z_out=0)


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_fused_requantize_equals_golden_requantize(rng, rounding):
    """The layers' fused, blocked requantizer == golden.requant.requantize, bit for bit."""
    n = 64
    shift = np.concatenate([np.arange(-31, 1), rng.integers(-31, 1, n - 34), [1, 3]])
    m0 = np.concatenate([[0, 2**30, 2**31 - 1, 2**30 + 1],
                         rng.integers(2**30, 2**31, n - 4)]).astype(np.int64)
    corners = np.array([INT32_MIN, INT32_MIN + 1, -(2**30) - 1, -3, -2, -1, 0, 1, 2, 3,
                        2**30 + 1, INT32_MAX - 1, INT32_MAX])
    acc = np.concatenate([
        rng.integers(INT32_MIN, INT32_MAX, (3000, n), endpoint=True),
        rng.integers(-(2**16), 2**16, (3000, n)),
        np.repeat(corners[:, None], n, axis=1),
    ]).astype(np.int32)
    bias = np.zeros(n, np.int32)
    for lo, hi, z in [(-128, 127, 0), (-128, 127, -128), (-5, 100, 17), (0, 0, 127)]:
        for s, m in [(shift[:-2], m0[:-2]), (shift, m0)]:  # without / with left shifts
            k = s.size
            want = requantize(acc[:, :k], bias[:k], m, s, z, lo, hi, rounding=rounding)
            got = _requantize_rows(acc[:, :k], bias[:k], m, s, z, lo, hi, rounding)
            np.testing.assert_array_equal(got, want)
    small = rng.integers(-(2**20), 2**20, (500, n)).astype(np.int32)
    b = rng.integers(-(2**20), 2**20, n).astype(np.int32)
    np.testing.assert_array_equal(  # scalar (per-tensor) multiplier, nonzero bias
        _requantize_rows(small, b, 1518500250, -7, 3, -128, 127, rounding),
        requantize(small, b, 1518500250, -7, 3, rounding=rounding))
    with pytest.raises(OverflowError):
        _requantize_rows(np.full((2, 2), INT32_MAX, np.int32), [1, 1], [2**30] * 2, [-1, -1],
                         0, -128, 127, rounding)
