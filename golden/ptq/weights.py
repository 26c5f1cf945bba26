"""Weight quantization: symmetric, restricted range, per tensor or per output channel.

A ``bits``-bit weight code lies in ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]`` (``[-127, 127]``
at 8 bits, ``[-7, 7]`` at 4) with zero point 0, stored as int8 whatever ``bits`` is, so a
sub-8-bit network is still an ordinary int8 network. The scale comes from the largest
magnitude (``minmax``) or from the clipping ``alpha * max|w|`` with the least squared
rounding error (``mse``, alpha on a grid of 100 in (0, 1]).

Output-channel axes in TFLite layouts: 0 for CONV_2D (OHWI) and FULLY_CONNECTED (N, K),
3 for DEPTHWISE_CONV_2D (1HWC).
"""

import numpy as np

from ..quant import dequantize, qrange, quantize, symmetric_scale

__all__ = [
    "RANGES",
    "GRANULARITIES",
    "CHANNEL_AXIS",
    "weight_scale",
    "quantize_weights",
    "dequantize_weights",
]

RANGES = ("minmax", "mse")
GRANULARITIES = ("tensor", "channel")
CHANNEL_AXIS = {"conv": 0, "dwconv": 3, "fc": 0}
_MSE_GRID = np.linspace(0.01, 1.0, 100)


def _channels_first(w, axis):
    """``w`` as (C, K): one row per output channel."""
    return np.moveaxis(np.asarray(w, dtype=np.float64), axis, 0).reshape(w.shape[axis], -1)


def weight_scale(w, axis, bits=8, granularity="channel", method="minmax"):
    """Scales for symmetric ``bits``-bit weights.

    Parameters
    ----------
    w : ndarray of float
        Weights in a TFLite layout.
    axis : int
        Output-channel axis of ``w`` (see ``CHANNEL_AXIS``).
    bits : int
        2..8.
    granularity : {"tensor", "channel"}
    method : {"minmax", "mse"}

    Returns
    -------
    ndarray of float64, shape (1,) per tensor or (w.shape[axis],) per channel.
        Rounded to float32, the precision a .tflite file keeps, so every later use of the
        scale (codes, bias scale, multipliers) sees the same number.
    """
    qrange(bits, narrow=True)
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
    if method not in RANGES:
        raise ValueError(f"method must be one of {RANGES}, not {method!r}")
    rows = _channels_first(w, axis)
    if granularity == "tensor":
        rows = rows.reshape(1, -1)
    amax = np.abs(rows).max(axis=1)
    if method == "mse":
        # (A, C) errors of every candidate clip per row; ties go to the widest clip.
        errs = []
        for a in _MSE_GRID:
            s = symmetric_scale(a * amax, bits)
            deq = dequantize(quantize(rows, s, 0, bits, narrow=True, axis=0), s, 0, axis=0)
            errs.append(((deq - rows) ** 2).sum(axis=1))
        errs = np.array(errs)
        best = len(_MSE_GRID) - 1 - np.argmin(errs[::-1], axis=0)
        amax = _MSE_GRID[best] * amax
    return symmetric_scale(amax, bits).astype(np.float32).astype(np.float64)


def _param_axis(scale, axis):
    return None if np.size(scale) == 1 else axis


def quantize_weights(w, scale, axis, bits=8):
    """Round-to-nearest codes of ``w``: int8 array of ``w.shape`` in the ``bits``-bit range."""
    s = np.asarray(scale, dtype=np.float64)
    return quantize(w, s.reshape(()) if s.size == 1 else s, 0, bits, narrow=True,
                    axis=_param_axis(s, axis))


def dequantize_weights(codes, scale, axis):
    """Real weights of ``codes`` (any layout) with per-tensor or per-channel ``scale``."""
    s = np.asarray(scale, dtype=np.float64)
    return dequantize(codes, s.reshape(()) if s.size == 1 else s, 0, axis=_param_axis(s, axis))
