"""Fixed-point arithmetic of TFLite's integer-only inference, vectorized.

Every function here is the NumPy twin of a gemmlowp / TFLite routine named in
``../shared/ARITHMETIC.md``. They work on whole arrays (broadcasting per-channel
multipliers and shifts against accumulators), widen to int64 before multiplying and
return fixed dtypes. NumPy's ``>>`` and ``//`` round toward minus infinity, so the C
truncating division is written out where the C code relies on it.
"""

import numpy as np

__all__ = [
    "INT32_MIN",
    "INT32_MAX",
    "ROUNDINGS",
    "AccumulatorOverflowError",
    "quantize_multiplier",
    "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier",
    "accumulator_bound",
    "check_accumulator",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
ROUNDINGS = ("double", "single")


class AccumulatorOverflowError(ValueError):
    """A layer whose worst-case accumulator does not fit the accumulator width."""


def _check_rounding(rounding):
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, not {rounding!r}")


def quantize_multiplier(real_multiplier, *, rounding="double"):
    """Split real multipliers into (M0, shift) as TFLite's ``QuantizeMultiplier``.

    Parameters
    ----------
    real_multiplier : array_like of float
        Non-negative real multipliers, any shape (one per output channel, typically).
    rounding : {"double", "single"}
        ``"single"`` also clamps ``shift > 30`` to ``shift = 30, M0 = 2**31 - 1`` as the
        ``TFLITE_SINGLE_ROUNDING`` build does.

    Returns
    -------
    m0 : ndarray of int32
        Q31 mantissa in [2**30, 2**31 - 1], or 0.
    shift : ndarray of int32
        Power-of-two exponent: ``M ~= M0 * 2**(shift - 31)``.
    """
    _check_rounding(rounding)
    m = np.asarray(real_multiplier, dtype=np.float64)
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError(f"real multipliers must be finite and non-negative, not {m!r}")
    q, e = np.frexp(m)
    # std::round: half away from zero. q * 2**31 is exact in double.
    m0 = np.floor(q * 2.0**31 + 0.5).astype(np.int64)
    e = e.astype(np.int64)
    carry = m0 == 2**31
    m0 = np.where(carry, 2**30, m0)
    e = np.where(carry, e + 1, e)
    tiny = e < -31
    m0 = np.where(tiny, 0, m0)
    e = np.where(tiny, 0, e)
    if rounding == "single":
        big = e > 30
        m0 = np.where(big, INT32_MAX, m0)
        e = np.where(big, 30, e)
    return m0.astype(np.int32), e.astype(np.int32)


def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 arrays (broadcast).

    Returns the high 32 bits of ``2 * a * b`` rounded to nearest with ties toward +inf (the nudge,
    then C truncation: -0.5 -> 0, 0.5 -> 1), saturating
    the single overflow case ``a == b == INT32_MIN`` to ``INT32_MAX``. int32 result.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    s = ab + nudge
    # C's division truncates toward zero; NumPy's >> floors.
    high = np.where(s >= 0, s >> 31, -((-s) >> 31))
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, high).astype(np.int32)


def rounding_divide_by_pot(x, exponent):
    """gemmlowp ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded half away from zero.

    ``x`` int32 array, ``exponent`` in [0, 31] (broadcast). int32 result.
    """
    x = np.asarray(x, dtype=np.int64)
    n = np.asarray(exponent, dtype=np.int64)
    if np.any((n < 0) | (n > 31)):
        raise ValueError(f"exponent must be in [0, 31], not {exponent!r}")
    mask = (np.int64(1) << n) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return ((x >> n) + (remainder > threshold)).astype(np.int32)


def _wrap_int32(x):
    return ((np.asarray(x, dtype=np.int64) + 2**31) % 2**32 - 2**31).astype(np.int64)


def multiply_by_quantized_multiplier(acc, m0, shift, *, rounding="double"):
    """TFLite ``MultiplyByQuantizedMultiplier``: ``acc * M0 * 2**(shift - 31)``, rounded.

    Parameters
    ----------
    acc : array_like of int32
        Accumulators, e.g. shape (M, N).
    m0, shift : array_like of int32
        Per-channel (shape (N,)) or scalar multipliers, broadcast against ``acc``.
    rounding : {"double", "single"}
        ``"double"`` (TFLite's default): SRDHM then RoundingDivideByPOT.
        ``"single"``: ``TFLITE_SINGLE_ROUNDING``, one 64-bit multiply and round.

    Returns
    -------
    ndarray of int32, the broadcast shape.
    """
    _check_rounding(rounding)
    acc = np.asarray(acc, dtype=np.int64)
    m0 = np.asarray(m0, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if rounding == "double":
        if np.any((shift < -31) | (shift > 31)):
            raise ValueError(f"shift must be in [-31, 31], not {shift!r}")
        left = np.maximum(shift, 0)
        right = np.maximum(-shift, 0)
        # C multiplies in int32 and (in practice) wraps; valid models never get here.
        scaled = _wrap_int32(acc << left)
        return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(scaled, m0), right)
    if np.any((shift < -31) | (shift > 30)):
        raise ValueError(f"shift must be in [-31, 30] for single rounding, not {shift!r}")
    total = 31 - shift
    out = (acc * m0 + (np.int64(1) << (total - 1))) >> total
    return _wrap_int32(out).astype(np.int32)


def accumulator_bound(k, bias=0):
    """Worst-case magnitude of an accumulator over ``k`` int8 x int8 products plus bias.

    ``k * 127 * 128 + max|bias|`` (weights in [-127, 127], activations in [-128, 127]),
    as a Python int.
    """
    if int(k) < 0:
        raise ValueError(f"k must be non-negative, not {k!r}")
    b = np.asarray(bias, dtype=np.int64)
    return int(k) * 127 * 128 + (int(np.max(np.abs(b))) if b.size else 0)


def check_accumulator(k, bias=0, acc_width=32, *, what="layer"):
    """Refuse a GEMM whose worst-case accumulator could overflow ``acc_width`` bits.

    Raises
    ------
    AccumulatorOverflowError
        Naming ``what``, the bound and the width, instead of letting the sum wrap.
    """
    bound = accumulator_bound(k, bias)
    limit = 2 ** (int(acc_width) - 1) - 1
    if bound > limit:
        raise AccumulatorOverflowError(
            f"{what}: worst-case accumulator |acc| <= {bound} (K={k}) does not fit a "
            f"{acc_width}-bit signed accumulator (max {limit})"
        )
    return bound
