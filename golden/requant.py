"""The requantize stage: int32 accumulators -> int8 activations.

Golden model of ``hw/requant.py``: bias add, MultiplyByQuantizedMultiplier with
per-output-channel (M0, shift), output zero point, clamp to the activation range.
"""

import numpy as np

from .arith import INT32_MAX, INT32_MIN, multiply_by_quantized_multiplier

__all__ = ["ACTIVATIONS", "activation_range", "requantize"]

ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def activation_range(activation, scale, zero_point):
    """(act_min, act_max) of a fused activation on an int8 output, as TFLite computes it.

    Parameters
    ----------
    activation : {"NONE", "RELU", "RELU6", "RELU_N1_TO_1"}
    scale : float
        Output scale.
    zero_point : int
        Output zero point.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, not {activation!r}")
    z = int(zero_point)

    def q(x):
        # TFLite: zero_point + TfLiteRound(x / scale) with float scale: the division and the
        # rounding (half away from zero) happen in float32.
        v = float(np.float32(x) / np.float32(scale))
        return z + int(np.sign(v) * np.floor(abs(v) + 0.5))  # exact in double

    if activation == "NONE":
        return -128, 127
    if activation == "RELU":
        return max(-128, z), 127
    if activation == "RELU6":
        return max(-128, z), min(127, q(6.0))
    return max(-128, q(-1.0)), min(127, q(1.0))


def requantize(acc, bias, m0, shift, z_out, act_min=-128, act_max=127, *, rounding="double"):
    """int32 accumulators -> int8 codes, one output channel per last axis entry.

    Parameters
    ----------
    acc : array_like of int32, shape (..., N)
        Raw dot products ``sum_k x_q * w_q`` (Z = 0 arithmetic).
    bias : array_like of int32, shape (N,) or scalar
        Zero-point-folded bias ``bias'``.
    m0, shift : array_like of int32, shape (N,) or scalar
        Quantized multipliers from :func:`golden.arith.quantize_multiplier`.
    z_out : int
        Output zero point.
    act_min, act_max : int
        Clamp range (see :func:`activation_range`).
    rounding : {"double", "single"}

    Returns
    -------
    ndarray of int8, shape of ``acc``.
    """
    acc = np.asarray(acc, dtype=np.int64)
    total = acc + np.asarray(bias, dtype=np.int64)
    if np.any((total < INT32_MIN) | (total > INT32_MAX)):
        raise OverflowError("accumulator plus bias does not fit int32")
    if not -128 <= act_min <= act_max <= 127:
        raise ValueError(f"activation range must satisfy -128 <= min <= max <= 127, "
                         f"not [{act_min}, {act_max}]")
    y = multiply_by_quantized_multiplier(total, m0, shift, rounding=rounding).astype(np.int64)
    y = y + int(z_out)
    return np.clip(y, act_min, act_max).astype(np.int8)
