"""Quantization primitives: real <-> integer codes, and the choice of scale and zero point.

``real = scale * (q - zero_point)``. Scales may be one per tensor, one per channel along
any axis, or one per group of ``group_size`` consecutive elements along an axis (the
PTQ toolkit's low-bit weights). Codes are signed ``bits``-bit integers, 2 <= bits <= 8,
stored as int8; ``narrow=True`` gives the restricted symmetric range
``[-(2**(bits-1) - 1), 2**(bits-1) - 1]`` that weights use (never -128 at 8 bits).
Rounding is half away from zero, as TFLite's ``TfLiteRound`` (``std::round``).
"""

import numpy as np

__all__ = [
    "qrange",
    "round_half_away",
    "expand_params",
    "quantize",
    "dequantize",
    "reduce_range",
    "symmetric_scale",
    "asymmetric_params",
    "quantize_bias",
]


def qrange(bits=8, narrow=False):
    """(qmin, qmax) of signed ``bits``-bit codes; ``narrow`` drops the most negative code.

    Examples: ``qrange(8) == (-128, 127)``, ``qrange(8, narrow=True) == (-127, 127)``,
    ``qrange(4, narrow=True) == (-7, 7)``.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer in [2, 8], not {bits!r}")
    if not isinstance(narrow, (bool, np.bool_)):
        raise ValueError(f"narrow must be a bool, not {narrow!r}")
    qmax = 2 ** (int(bits) - 1) - 1
    return (-qmax if narrow else -qmax - 1), qmax


def round_half_away(x):
    """Round to the nearest integer, ties away from zero (C ``std::round``), float64 out.

    Unlike ``floor(|x| + 0.5)`` this is exact for every double, including
    0.49999999999999994, because ``x - trunc(x)`` is computed without rounding.
    """
    x = np.asarray(x, dtype=np.float64)
    whole = np.trunc(x)
    return whole + np.where(np.abs(x - whole) >= 0.5, np.sign(x), 0.0)


def _check_axis(axis, ndim):
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) \
            or not -ndim <= axis < ndim:
        raise ValueError(f"axis must be an integer in [{-ndim}, {ndim - 1}], not {axis!r}")
    return int(axis) % ndim


def expand_params(shape, scale, zero_point=0, axis=None, group_size=None):
    """Broadcast per-tensor, per-channel or per-group parameters to arrays of ``shape``.

    Parameters
    ----------
    shape : tuple of int
        Shape of the tensor being (de)quantized.
    scale : array_like of float
        Per-tensor: a scalar or size-1 array (``axis`` None). Per-channel: shape
        ``(shape[axis],)``. Per-group: ``(shape[axis] // group_size,)``, the same groups
        in every slice, or ``shape`` with ``shape[axis]`` replaced by the number of groups
        (one scale per group per other index, e.g. ``(N, K // G)`` for (N, K) weights).
    zero_point : array_like of int
        Same layout as ``scale`` (or a scalar, broadcast).
    axis : int or None
        Channel / group axis.
    group_size : int or None
        Number of consecutive elements along ``axis`` sharing one scale; must divide
        ``shape[axis]``.

    Returns
    -------
    scale : ndarray of float64, zero_point : ndarray of int64
        Both broadcastable to ``shape``.
    """
    shape = tuple(int(d) for d in shape)
    scale = np.asarray(scale, dtype=np.float64)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError(f"scale must be finite and positive, not {scale!r}")
    zp = np.asarray(zero_point)
    if zp.dtype.kind not in "iub" and not np.all(zp == np.round(zp)):
        raise ValueError(f"zero_point must be integer, not {zero_point!r}")
    zp = np.broadcast_to(zp.astype(np.int64), scale.shape)
    if axis is None:
        if group_size is not None:
            raise ValueError(f"group_size needs an axis, not axis=None with "
                             f"group_size={group_size!r}")
        if scale.size != 1:
            raise ValueError(f"scale must be a scalar when axis is None, not shape "
                             f"{scale.shape}")
        return scale.reshape(()), zp.reshape(())
    ax = _check_axis(axis, len(shape))
    n = shape[ax]
    if group_size is None:
        groups, g = n, 1
    else:
        if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) \
                or group_size < 1 or n % group_size:
            raise ValueError(f"group_size must be a positive divisor of shape[{ax}] = {n}, "
                             f"not {group_size!r}")
        groups, g = n // int(group_size), int(group_size)
    if scale.ndim <= 1 and scale.size == groups:
        view = [1] * len(shape)
        view[ax] = groups
        scale, zp = scale.reshape(view), zp.reshape(view)
    elif scale.shape != shape[:ax] + (groups,) + shape[ax + 1:]:
        raise ValueError(f"scale must have shape ({groups},) or "
                         f"{shape[:ax] + (groups,) + shape[ax + 1:]}, not {scale.shape}")
    if g > 1:
        scale, zp = np.repeat(scale, g, axis=ax), np.repeat(zp, g, axis=ax)
    return scale, zp


def quantize(x, scale, zero_point=0, bits=8, narrow=False, axis=None, group_size=None):
    """Real values -> integer codes: ``clamp(round_half_away(x / scale) + zero_point)``.

    Parameters
    ----------
    x : array_like of float, any shape
    scale, zero_point, axis, group_size
        Per-tensor / per-channel / per-group parameters, see :func:`expand_params`.
    bits : int
        Code width, 2..8.
    narrow : bool
        Clamp to ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]`` (symmetric weights).

    Returns
    -------
    ndarray of int8, the shape of ``x``.
    """
    qmin, qmax = qrange(bits, narrow)
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("x must be finite, not containing inf or nan")
    s, z = expand_params(x.shape, scale, zero_point, axis, group_size)
    if np.any((z < qmin) | (z > qmax)):
        raise ValueError(f"zero_point must be in [{qmin}, {qmax}], not {zero_point!r}")
    q = round_half_away(x / s) + z
    return np.clip(q, qmin, qmax).astype(np.int8)


def dequantize(q, scale, zero_point=0, axis=None, group_size=None):
    """Integer codes -> real values ``scale * (q - zero_point)``, float64, shape of ``q``."""
    q = np.asarray(q)
    if q.dtype.kind not in "iu":
        raise ValueError(f"q must be an integer array, not dtype {q.dtype}")
    s, z = expand_params(q.shape, scale, zero_point, axis, group_size)
    return s * (q.astype(np.int64) - z).astype(np.float64)


def reduce_range(x, axis=None, group_size=None):
    """(min, max) of ``x`` per tensor, per channel or per group, shaped for :func:`quantize`.

    With ``axis`` None: two scalars. With ``axis``: reduced over every other axis, shape
    ``(x.shape[axis],)``; with ``group_size`` too: one pair per group per other index,
    shape ``x.shape`` with ``x.shape[axis]`` replaced by the number of groups.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        raise ValueError("x must not be empty")
    if axis is None:
        if group_size is not None:
            raise ValueError(f"group_size needs an axis, not axis=None with "
                             f"group_size={group_size!r}")
        return np.min(x), np.max(x)
    ax = _check_axis(axis, x.ndim)
    if group_size is None:
        others = tuple(i for i in range(x.ndim) if i != ax)
        return np.min(x, axis=others), np.max(x, axis=others)
    n = x.shape[ax]
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) \
            or group_size < 1 or n % group_size:
        raise ValueError(f"group_size must be a positive divisor of shape[{ax}] = {n}, "
                         f"not {group_size!r}")
    split = x.shape[:ax] + (n // group_size, int(group_size)) + x.shape[ax + 1:]
    return np.min(x.reshape(split), axis=ax + 1), np.max(x.reshape(split), axis=ax + 1)


def symmetric_scale(absmax, bits=8):
    """Scale mapping ``[-absmax, absmax]`` onto ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``.

    ``absmax / (2**(bits-1) - 1)``, elementwise (per-tensor, per-channel or per-group
    maxima all work). A zero ``absmax`` (an all-zero channel) gets scale 1.0: any positive
    scale represents it exactly, and scales must be positive. float64 out.
    """
    _, qmax = qrange(bits, narrow=True)
    a = np.asarray(absmax, dtype=np.float64)
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"absmax must be finite and non-negative, not {absmax!r}")
    return np.where(a > 0, a / qmax, 1.0)


def asymmetric_params(min_value, max_value, bits=8):
    """(scale, zero_point) for a real range ``[min_value, max_value]`` on full-range codes.

    The range is first widened to include 0, then ``scale = (max - min) / (qmax - qmin)``
    and the zero point is ``qmin - min / scale`` rounded half away from zero and clamped to
    [qmin, qmax] (TensorFlow's nudged FakeQuant parameters), so real 0 is exactly
    representable. A zero-width range gets scale 1.0. Elementwise over arrays.

    Returns
    -------
    scale : ndarray of float64, zero_point : ndarray of int64
    """
    qmin, qmax = qrange(bits, narrow=False)
    lo = np.asarray(min_value, dtype=np.float64)
    hi = np.asarray(max_value, dtype=np.float64)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError(f"min_value and max_value must be finite, not "
                         f"{min_value!r}, {max_value!r}")
    if np.any(lo > hi):
        raise ValueError(f"min_value must be <= max_value, not {min_value!r} > {max_value!r}")
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    width = hi - lo
    scale = np.where(width > 0, width / (qmax - qmin), 1.0)
    zp = np.clip(round_half_away(qmin - lo / scale), qmin, qmax).astype(np.int64)
    return scale, zp


def quantize_bias(bias, input_scale, weight_scale):
    """Real biases -> int32 codes with ``scale = input_scale * weight_scale``, zero point 0.

    Parameters
    ----------
    bias : array_like of float, shape (N,)
    input_scale : float
    weight_scale : array_like of float, shape (N,) or scalar

    Returns
    -------
    ndarray of int32, shape (N,).
    """
    b = np.asarray(bias, dtype=np.float64)
    s = np.float64(input_scale) * np.asarray(weight_scale, dtype=np.float64)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"input_scale * weight_scale must be finite and positive, not {s!r}")
    q = round_half_away(b / s)
    if np.any(np.abs(q) > 2**31 - 1):
        raise ValueError("bias does not fit int32 at scale input_scale * weight_scale")
    return q.astype(np.int32)
