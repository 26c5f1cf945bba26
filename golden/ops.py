"""Integer operators of TFLite's int8 reference kernels, lowered the way the accelerator runs them.

A convolution is three hardware stages, each a public function here or in
:mod:`golden.requant`::

    patches = im2col(x, kernel, stride, padding, dilation, pad_value=z_in)   # (M, K) int8
    acc     = gemm(patches, w.reshape(N, K))                                 # (M, N) int32
    bias_f  = fold_bias(bias, w.reshape(N, K), z_in)                         # (N,) int32
    y       = requantize(acc, bias_f, m0, shift, z_out, act_min, act_max)    # (M, N) int8

``gemm`` is Z = 0 arithmetic on raw int8 codes; the input zero point lives only in the
padding value and in the folded bias. Layout is NHWC with the batch first; convolution
weights are OHWI, depthwise weights 1HW(C*dm), fully-connected weights (N, K), so every
weight matrix the GEMM sees is (N, K) with K in (kh, kw, c) order, the order of
:func:`im2col`'s columns.
"""

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .arith import (
    INT32_MAX,
    INT32_MIN,
    check_accumulator,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
)
from .requant import requantize

__all__ = [
    "PADDINGS",
    "conv_geometry",
    "output_multipliers",
    "im2col",
    "gemm",
    "depthwise_gemm",
    "fold_bias",
    "conv2d",
    "depthwise_conv2d",
    "fully_connected",
    "AddParams",
    "add_params",
    "add",
    "average_pool2d",
    "max_pool2d",
    "reshape",
]

PADDINGS = ("SAME", "VALID")

# float32 holds every integer up to 2**24 and float64 every integer up to 2**53, so a BLAS
# matmul whose partial sums stay below that adds exactly whatever its summation order or FMA
# use, and is several times faster than NumPy's (non-BLAS) integer matmul.
_F32_EXACT = 2**24


def _pair(value, name):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive int or pair of ints, not {value!r}") \
            from None
    if a < 1 or b < 1 or any(isinstance(v, bool) for v in value):
        raise ValueError(f"{name} must be a positive int or pair of ints, not {value!r}")
    return a, b


def _check_int8(x, name, ndim=None):
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise ValueError(f"{name} must be an int8 array, not dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, not shape {x.shape}")
    return x


def _check_code(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not -128 <= value <= 127:
        raise ValueError(f"{name} must be an int8 code in [-128, 127], not {value!r}")
    return int(value)


def conv_geometry(in_size, kernel, stride=1, padding="VALID", dilation=1):
    """Output size and padding along one spatial axis, as TFLite computes them.

    ``SAME``: ``out = ceil(in / stride)``; ``VALID``: ``out = (in + stride - eff) // stride``
    with ``eff = (kernel - 1) * dilation + 1``; the total padding
    ``max((out - 1) * stride + eff - in, 0)`` is split with the odd element after
    (``ComputePaddingHeightWidth``).

    Returns
    -------
    (out, pad_before, pad_after) : tuple of int
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, not {padding!r}")
    eff = (int(kernel) - 1) * int(dilation) + 1
    if padding == "SAME":
        out = (int(in_size) + stride - 1) // stride
    else:
        out = (int(in_size) + stride - eff) // stride
    if out < 1:
        raise ValueError(f"window of {kernel} (dilation {dilation}) does not fit an input "
                         f"of size {in_size} with {padding} padding")
    total = max((out - 1) * stride + eff - int(in_size), 0)
    return out, total // 2, total - total // 2


def output_multipliers(input_scale, weight_scale, output_scale, *, rounding="double"):
    """(M0, shift) per output channel of a CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED.

    A .tflite file stores scales as float32, so they are rounded to float32 first; then,
    as ``PopulateConvolutionQuantizationParams``, ``M = s_in * s_w[c] / s_out`` in double
    and :func:`golden.arith.quantize_multiplier`.

    Returns
    -------
    m0, shift : ndarray of int32, shape of ``weight_scale`` (at least 1-D).
    """
    s_in = np.float64(np.float32(input_scale))
    s_w = np.atleast_1d(np.asarray(weight_scale, dtype=np.float32).astype(np.float64))
    s_out = np.float64(np.float32(output_scale))
    return quantize_multiplier(s_in * s_w / s_out, rounding=rounding)


def _windows(xp, kernel, stride, dilation, out_hw):
    """View (B, OH, OW, KH, KW, C) of the padded NHWC array ``xp``; no copy."""
    sb, sh, sw, sc = xp.strides
    b, _, _, c = xp.shape
    return as_strided(
        xp,
        shape=(b, out_hw[0], out_hw[1], kernel[0], kernel[1], c),
        strides=(sb, sh * stride[0], sw * stride[1], sh * dilation[0], sw * dilation[1], sc),
        writeable=False,
    )


def _pad_nhwc(x, kernel, stride, padding, dilation, pad_value):
    oh, top, bottom = conv_geometry(x.shape[1], kernel[0], stride[0], padding, dilation[0])
    ow, left, right = conv_geometry(x.shape[2], kernel[1], stride[1], padding, dilation[1])
    if top or bottom or left or right:
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)),
                   constant_values=pad_value)
    return x, (oh, ow), (top, left)


def im2col(x, kernel, stride=(1, 1), padding="VALID", dilation=(1, 1), pad_value=0):
    """Unfold convolution windows into GEMM rows, the accelerator's input stream.

    Parameters
    ----------
    x : ndarray, shape (B, H, W, C)
        NHWC activations, int8 for the integer model (any dtype is unfolded as is).
    kernel, stride, dilation : int or (int, int)
        (height, width).
    padding : {"SAME", "VALID"}
    pad_value : scalar
        Value of padding positions: the input zero point ``z_in`` (the real value 0).

    Returns
    -------
    ndarray, shape (B * OH * OW, KH * KW * C), dtype of ``x``
        Row ``(b * OH + oh) * OW + ow`` is the window of output pixel (b, oh, ow); column
        ``(kh * KW + kw) * C + c``, the order of OHWI weights reshaped to (N, K).
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must have shape (B, H, W, C), not {x.shape}")
    kernel, stride = _pair(kernel, "kernel"), _pair(stride, "stride")
    dilation = _pair(dilation, "dilation")
    if x.dtype == np.int8:
        pad_value = _check_code(pad_value, "pad_value")
    xp, (oh, ow), _ = _pad_nhwc(x, kernel, stride, padding, dilation, pad_value)
    win = _windows(xp, kernel, stride, dilation, (oh, ow))
    return win.reshape(x.shape[0] * oh * ow, kernel[0] * kernel[1] * x.shape[3])


def _exact_float_dtype(w):
    """float32 when every partial sum of ``x @ w.T`` is an integer below 2**24, else float64.

    A partial sum of row n is at most ``128 * sum_k |w[n, k]|`` in magnitude, below 2**32
    for any ``w`` that passes a 32-bit accumulator check, so float64 is always exact.
    """
    reach = 128 * int(np.abs(w.astype(np.int64)).sum(axis=1).max(initial=0))
    return np.float32 if reach <= _F32_EXACT else np.float64


def gemm(a, w, *, acc_width=32):
    """The MAC array: int32 dot products of int8 rows with int8 weight rows, Z = 0.

    Parameters
    ----------
    a : ndarray of int8, shape (M, K)
        Activation rows (``im2col`` patches or flattened FC inputs), raw codes.
    w : ndarray of int8, shape (N, K)
        One weight row per output channel (OHWI / FC weights reshaped to (N, K)).
    acc_width : int
        Accumulator width in bits, at most 32; a GEMM whose worst case could overflow it
        raises :class:`golden.arith.AccumulatorOverflowError` instead of wrapping.

    Returns
    -------
    ndarray of int32, shape (M, N): ``acc[m, n] = sum_k a[m, k] * w[n, k]``.
    """
    a = _check_int8(a, "a", 2)
    w = _check_int8(w, "w", 2)
    if a.shape[1] != w.shape[1]:
        raise ValueError(f"a and w must share K, not a {a.shape} and w {w.shape}")
    if not 1 <= acc_width <= 32:
        raise ValueError(f"acc_width must be in [1, 32], not {acc_width!r}")
    k = a.shape[1]
    check_accumulator(w.T, None, acc_width, name=f"gemm {a.shape[0]}x{k}x{w.shape[0]}")
    return _mac(w)(a)


def _mac(w):
    """The exact matmul ``rows -> rows @ w.T`` (int32) of a checked (N, K) weight matrix."""
    ft = _exact_float_dtype(w)
    wf = w.astype(ft).T
    return lambda rows: (rows.astype(ft) @ wf).astype(np.int32)


def depthwise_gemm(a, w, depth_multiplier=1):
    """Depthwise MACs: each output channel is a K = KH * KW dot product on one input channel.

    Parameters
    ----------
    a : ndarray of int8, shape (M, T, C)
        ``im2col`` rows reshaped to (M, KH * KW, C).
    w : ndarray of int8, shape (T, C * depth_multiplier)
        Depthwise weights 1HW(C*dm) reshaped; output channel ``o`` reads input channel
        ``o // depth_multiplier``.

    Returns
    -------
    ndarray of int32, shape (M, C * depth_multiplier).
    """
    a = _check_int8(a, "a", 3)
    w = _check_int8(w, "w", 2)
    m, t, c = a.shape
    if w.shape != (t, c * depth_multiplier):
        raise ValueError(f"w must have shape {(t, c * depth_multiplier)}, not {w.shape}")
    check_accumulator(w, None, name=f"depthwise gemm {m}x{t}x{c * depth_multiplier}")
    if depth_multiplier > 1:
        a = np.repeat(a, depth_multiplier, axis=2)
    # One tap at a time keeps the temporaries at (M, C*dm). int32 holds every product
    # (|p| <= 2**14); a partial sum may wrap, but int32 addition is exact modulo 2**32 and
    # the accumulator check puts the final sum inside int32, so the result is exact.
    acc = np.zeros((m, w.shape[1]), dtype=np.int32)
    wide = w.astype(np.int32)
    for tap in range(t):
        acc += a[:, tap, :].astype(np.int32) * wide[tap]
    return acc


def fold_bias(bias, w, z_in):
    """Fold the input zero point into the bias: ``bias - z_in * sum_k w[n, k]``.

    Parameters
    ----------
    bias : array_like of int32, shape (N,), or None (zeros)
    w : ndarray of int8, shape (N, K)
    z_in : int
        Input zero point.

    Returns
    -------
    ndarray of int32, shape (N,).
    """
    folded = _fold_bias64(bias, w, z_in)
    if np.any((folded < INT32_MIN) | (folded > INT32_MAX)):
        raise OverflowError("folded bias does not fit int32")
    return folded.astype(np.int32)


def _fold_bias64(bias, w, z_in):
    """:func:`fold_bias` in int64, unchecked, for :func:`_checked_bias`."""
    w = _check_int8(w, "w", 2)
    z_in = _check_code(z_in, "z_in")
    if bias is None:
        bias = np.zeros(w.shape[0], dtype=np.int64)
    b = np.asarray(bias)
    if b.dtype.kind not in "iu" or b.shape != (w.shape[0],):
        raise ValueError(f"bias must be an integer array of shape ({w.shape[0]},), not "
                         f"{b.dtype} {b.shape}")
    return b.astype(np.int64) - z_in * w.astype(np.int64).sum(axis=1)


def _checked_bias(bias, w_kn, z_in, name):
    """The folded bias of a layer whose accumulator cannot overflow, as int32.

    ``w_kn`` is the (K, N) weight matrix. The exact check comes first, so a folded bias
    outside int32 is refused with the layer's name and numbers (it always overflows:
    ``lo <= 0 <= hi``, so ``bias'`` itself is in the checked range).
    """
    folded = _fold_bias64(bias, np.ascontiguousarray(w_kn.T), z_in)
    check_accumulator(w_kn, folded, name=name)
    return folded.astype(np.int32)


# Elements per block of the fused requantizer and of the im2col -> gemm -> requantize
# pipeline: sized so that the int64 / float32 temporaries of one block stay in cache.
_BLOCK_ELEMENTS = 1 << 16
_PIPELINE_ELEMENTS = 1 << 18


def _requantize_rows(acc, bias, m0, shift, z_out, act_min, act_max, rounding):
    """:func:`golden.requant.requantize`, fused and blocked for the common case.

    With double rounding, ``M0 >= 0`` and no left shift (every layer whose multiplier is
    below 1), MultiplyByQuantizedMultiplier reduces to two integer roundings, each
    one add and one arithmetic shift on int64:

    * SRDHM: ``trunc((a*M0 + nudge) / 2**31)`` with ``nudge = 2**30`` for ``a*M0 >= 0``
      and ``1 - 2**30`` below equals ``(a*M0 + 2**30) >> 31`` in both cases (for negative
      products, ``s >> 31`` of ``s + 2**31 - 1`` is C's truncation of ``s``), and the one
      saturating case needs ``M0 == INT32_MIN``, which a non-negative M0 never is;
    * RDBPOT, ties away from zero: ``(x + 2**(n-1) - (x < 0)) >> n`` for ``n >= 1``.

    ``tests/golden/test_ops.py`` checks this against ``requantize`` on random and corner
    accumulators. Other cases (single rounding, left shifts) call ``requantize``.
    """
    z_out = _check_code(z_out, "z_out")
    acc = np.asarray(acc)
    m0 = np.broadcast_to(np.asarray(m0, dtype=np.int64), acc.shape[-1:])
    shift = np.broadcast_to(np.asarray(shift, dtype=np.int64), acc.shape[-1:])
    if rounding != "double" or np.any(shift > 0) or np.any(m0 < 0) or np.any(shift < -31) \
            or acc.ndim != 2 or not -128 <= act_min <= act_max <= 127:
        return requantize(acc, bias, m0, shift, z_out, act_min, act_max, rounding=rounding)
    bias = np.broadcast_to(np.asarray(bias, dtype=np.int64), acc.shape[-1:])
    right = -shift
    half = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), 0)
    all_right = bool(np.all(right > 0))
    out = np.empty(acc.shape, dtype=np.int8)
    rows = max(1, _BLOCK_ELEMENTS // max(acc.shape[1], 1))
    for start in range(0, acc.shape[0], rows):
        t = np.add(acc[start:start + rows], bias, dtype=np.int64)
        if t.size and (t.min() < INT32_MIN or t.max() > INT32_MAX):
            raise OverflowError("accumulator plus bias does not fit int32")
        t *= m0
        t += 1 << 30
        t >>= 31
        neg = t < 0
        if not all_right:
            neg &= right > 0
        t += half
        t -= neg
        t >>= right
        t += z_out
        np.maximum(t, act_min, out=t)
        np.minimum(t, act_max, out=t)
        out[start:start + rows] = t
    return out


def _gemm_requantize(mac, a, n, bias, m0, shift, z_out, act_min, act_max, rounding):
    """``requantize(mac(a))`` one block of rows at a time, as the accelerator streams them;
    blocks small enough that the int32 / int64 intermediates stay in cache."""
    out = np.empty((a.shape[0], n), dtype=np.int8)
    rows = max(1, _PIPELINE_ELEMENTS // max(int(np.prod(a.shape[1:])), n))
    for start in range(0, a.shape[0], rows):
        out[start:start + rows] = _requantize_rows(mac(a[start:start + rows]), bias, m0, shift,
                                                   z_out, act_min, act_max, rounding)
    return out


def conv2d(x, w, bias, m0, shift, *, z_in, z_out, stride=(1, 1), padding="VALID",
           dilation=(1, 1), act_min=-128, act_max=127, rounding="double"):
    """CONV_2D, int8: ``im2col -> gemm -> requantize`` with the input zero point folded.

    Parameters
    ----------
    x : ndarray of int8, shape (B, H, W, C)
    w : ndarray of int8, shape (N, KH, KW, C)
        OHWI weights, zero point 0.
    bias : ndarray of int32, shape (N,), or None
    m0, shift : ndarray of int32, shape (N,) or scalar
        From :func:`output_multipliers`.
    z_in, z_out : int
        Input and output zero points.
    stride, dilation : int or (int, int)
    padding : {"SAME", "VALID"}
    act_min, act_max : int
        Fused activation range (:func:`golden.requant.activation_range`).

    Returns
    -------
    ndarray of int8, shape (B, OH, OW, N).
    """
    x = _check_int8(x, "x", 4)
    w = _check_int8(w, "w", 4)
    if w.shape[3] != x.shape[3]:
        raise ValueError(f"w must have {x.shape[3]} input channels, not shape {w.shape}")
    n, kh, kw, c = w.shape
    patches = im2col(x, (kh, kw), stride, padding, dilation, pad_value=z_in)
    wk = w.reshape(n, kh * kw * c)
    folded = _checked_bias(bias, wk.T, z_in, "CONV_2D")
    y = _gemm_requantize(_mac(wk), patches, n, folded, m0, shift, z_out,
                         act_min, act_max, rounding)
    oh = conv_geometry(x.shape[1], kh, _pair(stride, "stride")[0], padding,
                       _pair(dilation, "dilation")[0])[0]
    return y.reshape(x.shape[0], oh, -1, n)


def depthwise_conv2d(x, w, bias, m0, shift, *, z_in, z_out, depth_multiplier=1,
                     stride=(1, 1), padding="VALID", dilation=(1, 1), act_min=-128,
                     act_max=127, rounding="double"):
    """DEPTHWISE_CONV_2D, int8: ``im2col -> depthwise_gemm -> requantize``.

    Parameters
    ----------
    x : ndarray of int8, shape (B, H, W, C)
    w : ndarray of int8, shape (1, KH, KW, C * depth_multiplier)
    bias : ndarray of int32, shape (C * depth_multiplier,), or None
    Other parameters as :func:`conv2d`.

    Returns
    -------
    ndarray of int8, shape (B, OH, OW, C * depth_multiplier).
    """
    x = _check_int8(x, "x", 4)
    w = _check_int8(w, "w", 4)
    if isinstance(depth_multiplier, bool) or not isinstance(depth_multiplier, (int, np.integer)) \
            or depth_multiplier < 1:
        raise ValueError(f"depth_multiplier must be a positive int, not {depth_multiplier!r}")
    c = x.shape[3]
    if w.shape[0] != 1 or w.shape[3] != c * depth_multiplier:
        raise ValueError(f"w must have shape (1, KH, KW, {c * depth_multiplier}), not {w.shape}")
    _, kh, kw, n = w.shape
    patches = im2col(x, (kh, kw), stride, padding, dilation, pad_value=z_in)
    wt = w.reshape(kh * kw, n)
    folded = _checked_bias(bias, wt, z_in, "DEPTHWISE_CONV_2D")
    y = _gemm_requantize(lambda rows: depthwise_gemm(rows, wt, int(depth_multiplier)),
                         patches.reshape(-1, kh * kw, c), n, folded, m0, shift, z_out,
                         act_min, act_max, rounding)
    oh = conv_geometry(x.shape[1], kh, _pair(stride, "stride")[0], padding,
                       _pair(dilation, "dilation")[0])[0]
    return y.reshape(x.shape[0], oh, -1, n)


def fully_connected(x, w, bias, m0, shift, *, z_in, z_out, act_min=-128, act_max=127,
                    rounding="double"):
    """FULLY_CONNECTED, int8, TFLite Micro's fixed-point path: ``gemm -> requantize``.

    Parameters
    ----------
    x : ndarray of int8, shape (B, ...)
        Flattened to (B, K) per sample.
    w : ndarray of int8, shape (N, K)
    bias : ndarray of int32, shape (N,), or None
    Other parameters as :func:`conv2d`.

    Returns
    -------
    ndarray of int8, shape (B, N).
    """
    x = _check_int8(x, "x")
    w = _check_int8(w, "w", 2)
    a = x.reshape(x.shape[0], -1)
    if a.shape[1] != w.shape[1]:
        raise ValueError(f"x must have {w.shape[1]} elements per sample, not shape {x.shape}")
    folded = _checked_bias(bias, w.T, z_in, "FULLY_CONNECTED")
    return _gemm_requantize(_mac(w), a, w.shape[0], folded, m0, shift,
                            z_out, act_min, act_max, rounding)


class AddParams(NamedTuple):
    """Integer parameters of an int8 ADD (TFLite ``OpData`` of kernels/add.cc)."""

    input1_offset: int
    input2_offset: int
    output_offset: int
    left_shift: int
    input1_multiplier: int
    input1_shift: int
    input2_multiplier: int
    input2_shift: int
    output_multiplier: int
    output_shift: int


def _quantize_multiplier_smaller_than_one(m):
    if not 0.0 < m < 1.0:
        raise ValueError(f"ADD multiplier must be in (0, 1), not {m!r}")
    m0, shift = quantize_multiplier(m)
    return int(m0), int(shift)


def add_params(input1_scale, input1_zero_point, input2_scale, input2_zero_point,
               output_scale, output_zero_point):
    """Integer parameters of an int8 ADD, as TFLite's ``PrepareGeneralSubOp``.

    Inputs are rescaled to a common scale ``2 * max(s1, s2)`` with 20 bits of headroom
    (``left_shift = 20``), each multiplier split by ``QuantizeMultiplierSmallerThanOneExp``.
    Scales are rounded to float32 first (the .tflite storage type); the ``2 * max`` is a
    float32 product and the quotients are computed in double, as in the C++.
    """
    s1, s2, so = (np.float32(s) for s in (input1_scale, input2_scale, output_scale))
    if not all(np.isfinite(s) and s > 0 for s in (s1, s2, so)):
        raise ValueError(f"scales must be finite and positive, not "
                         f"{(input1_scale, input2_scale, output_scale)!r}")
    left_shift = 20
    twice_max = np.float64(np.float32(2) * max(s1, s2))
    m1, sh1 = _quantize_multiplier_smaller_than_one(np.float64(s1) / twice_max)
    m2, sh2 = _quantize_multiplier_smaller_than_one(np.float64(s2) / twice_max)
    mo, sho = _quantize_multiplier_smaller_than_one(
        twice_max / (np.float64(1 << left_shift) * np.float64(so)))
    return AddParams(
        input1_offset=-_check_code(input1_zero_point, "input1_zero_point"),
        input2_offset=-_check_code(input2_zero_point, "input2_zero_point"),
        output_offset=_check_code(output_zero_point, "output_zero_point"),
        left_shift=left_shift,
        input1_multiplier=m1, input1_shift=sh1,
        input2_multiplier=m2, input2_shift=sh2,
        output_multiplier=mo, output_shift=sho,
    )


def add(x1, x2, params, act_min=-128, act_max=127):
    """ADD, int8, as TFLite's reference ``integer_ops::AddElementwise`` (broadcasting).

    Parameters
    ----------
    x1, x2 : ndarray of int8
        Broadcast-compatible shapes (NumPy rules, as ``BroadcastAdd6DSlow``).
    params : AddParams
        From :func:`add_params`.
    act_min, act_max : int
        Fused activation range.

    Returns
    -------
    ndarray of int8, the broadcast shape.
    """
    x1 = _check_int8(x1, "x1")
    x2 = _check_int8(x2, "x2")
    p = params
    # |code - zero point| <= 255, so the shifted values stay below 2**28: no int32 wrap.
    v1 = (x1.astype(np.int64) + p.input1_offset) << p.left_shift
    v2 = (x2.astype(np.int64) + p.input2_offset) << p.left_shift
    s1 = multiply_by_quantized_multiplier(v1, p.input1_multiplier, p.input1_shift)
    s2 = multiply_by_quantized_multiplier(v2, p.input2_multiplier, p.input2_shift)
    total = s1.astype(np.int64) + s2
    out = multiply_by_quantized_multiplier(total, p.output_multiplier, p.output_shift)
    out = out.astype(np.int64)
    return np.clip(out + p.output_offset, act_min, act_max).astype(np.int8)


def _c_div(num, den):
    """C integer division (truncation toward zero): ``|num| < 2**31``, ``0 < den <= 2**20``.

    In float64: a quotient of integers below 2**31 that is not an integer lies at least
    ``1 / den`` from the nearest integer, far beyond the division's rounding error, so
    truncating the correctly rounded quotient is exact (and much faster than ``//``).
    """
    return np.trunc(num / den.astype(np.float64)).astype(np.int64)


def _window_reduce(ufunc, win):
    """Reduce a (B, OH, OW, KH, KW, C) window view over the window, one tap at a time.

    Each tap is a strided (B, OH, OW, C) view, so this is KH * KW vectorized passes;
    NumPy's reduction over the two inner strided axes is several times slower.
    """
    acc = win[:, :, :, 0, 0, :].copy()
    for i in range(win.shape[3]):
        for j in range(win.shape[4]):
            if i or j:
                ufunc(acc, win[:, :, :, i, j, :], out=acc)
    return acc


def average_pool2d(x, filter_size, stride=(1, 1), padding="VALID", act_min=-128, act_max=127):
    """AVERAGE_POOL_2D, int8, as TFLite's reference ``integer_ops::AveragePool``.

    Sums the valid (unpadded) part of each window and divides by its element count,
    rounding half away from zero with C truncating division:
    ``sum > 0 ? (sum + n / 2) / n : (sum - n / 2) / n``. Input and output share scale
    and zero point, so no rescaling.

    Parameters
    ----------
    x : ndarray of int8, shape (B, H, W, C)
    filter_size, stride : int or (int, int)
    padding : {"SAME", "VALID"}

    Returns
    -------
    ndarray of int8, shape (B, OH, OW, C).
    """
    x = _check_int8(x, "x", 4)
    k, s = _pair(filter_size, "filter_size"), _pair(stride, "stride")
    xp, (oh, ow), (top, left) = _pad_nhwc(x.astype(np.int32), k, s, padding, (1, 1), 0)
    total = _window_reduce(np.add, _windows(xp, k, s, (1, 1), (oh, ow)))

    def count(size, n_out, kernel, step, before):
        start = np.arange(n_out) * step - before
        return np.minimum(start + kernel, size) - np.maximum(start, 0)

    n = np.outer(count(x.shape[1], oh, k[0], s[0], top),
                 count(x.shape[2], ow, k[1], s[1], left))[None, :, :, None].astype(np.int64)
    avg = _c_div(total + np.where(total > 0, n // 2, -(n // 2)), n)
    return np.clip(avg, act_min, act_max).astype(np.int8)


def max_pool2d(x, filter_size, stride=(1, 1), padding="VALID", act_min=-128, act_max=127):
    """MAX_POOL_2D, int8: maximum over the valid part of each window, clamped.

    Padding positions hold -128, which never exceeds a valid element (every window keeps
    at least one). Parameters and result as :func:`average_pool2d`.
    """
    x = _check_int8(x, "x", 4)
    k, s = _pair(filter_size, "filter_size"), _pair(stride, "stride")
    xp, (oh, ow), _ = _pad_nhwc(x, k, s, padding, (1, 1), -128)
    out = _window_reduce(np.maximum, _windows(xp, k, s, (1, 1), (oh, ow)))
    return np.clip(out, act_min, act_max).astype(np.int8)


def reshape(x, shape):
    """RESHAPE of a batch: (B, ...) -> (B, *shape); codes and quantization unchanged."""
    x = np.asarray(x)
    shape = tuple(int(d) for d in shape)
    if int(np.prod(shape)) != int(np.prod(x.shape[1:])):
        raise ValueError(f"cannot reshape per-sample shape {x.shape[1:]} to {shape}")
    return x.reshape((x.shape[0],) + shape)
