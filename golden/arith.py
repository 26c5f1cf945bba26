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
    "accumulator_bounds",
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


def _channel_bias(bias, n):
    """``bias`` as an int64 vector of shape (n,); None is zeros, a scalar is broadcast."""
    if bias is None:
        return np.zeros(n, dtype=np.int64)
    b = np.asarray(bias)
    if b.dtype.kind not in "iu" or b.ndim > 1 or (b.ndim == 1 and b.shape != (n,)):
        raise ValueError(f"bias must be an integer scalar or array of shape ({n},), not "
                         f"{b.dtype} {b.shape}")
    return np.broadcast_to(b.astype(np.int64), (n,))


def accumulator_bounds(w, bias=None):
    """Exact per-channel range of a GEMM accumulator over every int8 input.

    Over all ``x`` in [-128, 127]^K, ``sum_k x[k] * w[k, n]`` takes its largest value at
    ``x[k] = 127`` where ``w[k, n] > 0`` and ``-128`` where ``w[k, n] < 0``, its smallest at
    the opposite codes (``../shared/ARITHMETIC.md``, "Overflow is decided per output
    channel"). Both extremes are attained, so the range is exact, not a bound.

    Parameters
    ----------
    w : array_like of int, shape (K, N)
        Weight codes, one column per output channel (the driver's layout; golden's (N, K)
        matrices pass ``w.T``). Any integer values, -128 included.
    bias : array_like of int, shape (N,) or scalar, optional
        Zero-point-folded bias ``bias'``, added to both ends when given.

    Returns
    -------
    lo, hi : ndarray of int64, shape (N,)
        ``min`` and ``max`` over x of ``sum_k x[k] * w[k, n]`` (``+ bias'[n]``).
    """
    w = np.asarray(w)
    if w.dtype.kind not in "iu" or w.ndim != 2:
        raise ValueError(f"w must be a 2-D integer array of shape (K, N), not "
                         f"{w.dtype} {w.shape}")
    w = w.astype(np.int64)
    pos = np.where(w > 0, w, 0).sum(axis=0)
    neg = np.where(w < 0, w, 0).sum(axis=0)
    b = _channel_bias(bias, w.shape[1])
    return -128 * pos + 127 * neg + b, 127 * pos - 128 * neg + b


def _first_misfit(lo, hi, low, high):
    """Index of the first channel whose [lo, hi] leaves [low, high], and how many do; or None."""
    bad = np.flatnonzero((lo < low) | (hi > high))
    return (int(bad[0]), len(bad)) if len(bad) else None


def check_accumulator(w, bias=None, acc_width=32, *, name="layer"):
    """Refuse a GEMM whose accumulator could overflow, from its own weights and bias.

    Channel ``n`` passes when its exact accumulator range ``[lo, hi]``
    (:func:`accumulator_bounds`) fits a signed ``acc_width``-bit accumulator and
    ``[lo + bias'[n], hi + bias'[n]]`` fits int32. Only the final sum matters: two's-complement
    wrap of partial sums cancels when it fits, so a passing layer is exact at any K.

    Parameters
    ----------
    w : array_like of int, shape (K, N)
        Weight codes, one column per output channel.
    bias : array_like of int, shape (N,) or scalar, optional
        Zero-point-folded int32 bias ``bias'`` (None: zeros).
    acc_width : int
        Accumulator width in bits, in [1, 64].
    name : str
        Names the layer in the error.

    Returns
    -------
    lo, hi : ndarray of int64, shape (N,)
        The accumulator's range without the bias.

    Raises
    ------
    AccumulatorOverflowError
        Naming the layer, the first failing output channel, its range, K and the limits.
    """
    if isinstance(acc_width, bool) or not isinstance(acc_width, (int, np.integer)) \
            or not 1 <= acc_width <= 64:
        raise ValueError(f"acc_width must be an int in [1, 64], not {acc_width!r}")
    lo, hi = accumulator_bounds(w)
    k = np.shape(w)[0]
    b = _channel_bias(bias, lo.shape[0])
    a_min, a_max = -(2 ** (int(acc_width) - 1)), 2 ** (int(acc_width) - 1) - 1
    # Python ints (object arrays) from here: a bias' near the int64 ends must not wrap.
    checks = (
        ("accumulator", lo.astype(object), hi.astype(object), a_min, a_max,
         f"a {acc_width}-bit signed accumulator"),
        ("accumulator + bias'", lo.astype(object) + b.astype(object),
         hi.astype(object) + b.astype(object), INT32_MIN, INT32_MAX, "int32"),
    )
    for kind, low_c, high_c, low, high, limits in checks:
        misfit = _first_misfit(low_c, high_c, low, high)
        if misfit is not None:
            c, count = misfit
            more = f" (and {count - 1} more)" if count > 1 else ""
            raise AccumulatorOverflowError(
                f"{name}: output channel {c}{more}: worst-case {kind} "
                f"[{low_c[c]}, {high_c[c]}] (K={k}, bias' {b[c]}) does not fit {limits} "
                f"[{low}, {high}]"
            )
    return lo, hi
