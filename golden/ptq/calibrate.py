"""Activation range setting: the real interval each int8 activation tensor covers.

Every estimator maps the values one tensor takes on the calibration batches to a range
``(lo, hi)`` with ``lo <= 0 <= hi`` (int8 activations are asymmetric and must hold real 0
exactly, see :func:`golden.quant.asymmetric_params`):

``minmax``
    Smallest and largest value seen.
``ema``
    Exponential moving average of the per-batch minima and maxima (momentum 0.9), as
    TensorFlow's moving-average quantizers track them.
``percentile``
    The 0.01st and 99.99th percentiles (the lower one only if the tensor goes negative).
``mse``
    The clipped range ``alpha * (min, max)``, alpha on a grid of 100 in (0, 1], whose
    8-bit fake quantization has the least squared error on the data (summed over a
    4096-bin histogram).
``kl``
    TensorRT's entropy calibration (Migacz 2017): a 2048-bin histogram of ``|x|`` on
    ``[0, max |x|]``; for every candidate threshold of ``i >= L`` bins the clipped
    distribution P (outliers folded into the last bin) is compared with its quantization
    Q to ``L`` levels expanded back over P's non-empty bins, and the threshold with the
    least KL(P || Q) wins. ``L = 128`` for signed tensors (TensorRT's symmetric int8:
    the range becomes ``[-T, T]`` intersected with the data range) and ``L = 255`` for
    non-negative tensors such as ReLU outputs, which use all 256 codes. The first bin is
    set to its neighbour's count first, as NVIDIA's calibrator does, so the spike of exact
    zeros that ReLU outputs have does not pull the threshold down.
"""

import numpy as np

from ..nets.model import INPUT
from ..quant import asymmetric_params, dequantize, quantize

__all__ = [
    "METHODS",
    "collect",
    "minmax_range",
    "ema_range",
    "percentile_range",
    "mse_range",
    "kl_range",
    "estimate_range",
    "calibration_set",
]

METHODS = ("minmax", "ema", "percentile", "mse", "kl")
PERCENTILE = 99.99
EMA_MOMENTUM = 0.9
KL_BINS = 2048
MSE_BINS = 4096
_MSE_GRID = np.linspace(0.01, 1.0, 100)


def collect(net, x, names, batch_size=32, progress=None):
    """Run the float network on calibration data and keep the values of some tensors.

    Parameters
    ----------
    net : golden.nets.FloatNet
    x : ndarray, shape (N, *net.input_shape)
        Calibration samples.
    names : list of str
        Node names (or ``INPUT``) whose outputs are kept.
    batch_size : int
    progress : golden.ptq.progress.Progress, optional
        Advanced once per batch.

    Returns
    -------
    dict of str -> list of ndarray
        Per name, one array per batch, in batch order.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size!r}")
    if len(x) == 0:
        raise ValueError("calibration data must not be empty")
    out = {n: [] for n in names}
    for i in range(0, len(x), batch_size):
        _, acts = net.forward(x[i : i + batch_size], keep=True)
        for n in names:
            out[n].append(acts[n] if n != INPUT else np.asarray(acts[INPUT]))
        if progress is not None:
            progress.update()
    return out


def _flat(batches):
    v = np.concatenate([np.ravel(b) for b in batches]).astype(np.float64)
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError("calibration values must be finite and non-empty")
    return v


def _with_zero(lo, hi):
    return float(min(lo, 0.0)), float(max(hi, 0.0))


def minmax_range(batches):
    """(min, max) over all batches, widened to include 0."""
    v = _flat(batches)
    return _with_zero(v.min(), v.max())


def ema_range(batches, momentum=EMA_MOMENTUM):
    """Exponential moving average of per-batch (min, max); the first batch initialises it."""
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), not {momentum!r}")
    lo = hi = None
    for b in batches:
        v = _flat([b])
        if lo is None:
            lo, hi = v.min(), v.max()
        else:
            lo = momentum * lo + (1.0 - momentum) * v.min()
            hi = momentum * hi + (1.0 - momentum) * v.max()
    if lo is None:
        raise ValueError("calibration values must be finite and non-empty")
    return _with_zero(lo, hi)


def percentile_range(batches, percentile=PERCENTILE):
    """(lo, hi) at the ``100 - p`` and ``p`` percentiles; lo is 0 for non-negative data."""
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], not {percentile!r}")
    v = _flat(batches)
    hi = np.percentile(v, percentile)
    lo = np.percentile(v, 100.0 - percentile) if v.min() < 0 else 0.0
    return _with_zero(lo, hi)


def mse_range(batches, bits=8):
    """The range ``alpha * (min, max)`` with the least squared fake-quantization error.

    The error is summed over a histogram of ``MSE_BINS`` bins (each bin's count times the
    error at its centre), a sixteenth of an 8-bit step wide at most, which keeps the
    search fast on large tensors. Ties go to the widest range (the largest alpha).
    """
    v = _flat(batches)
    lo, hi = _with_zero(v.min(), v.max())
    if lo == hi == 0.0:
        return lo, hi
    counts, edges = np.histogram(v, bins=MSE_BINS, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])

    def error(a):
        s, z = asymmetric_params(a * lo, a * hi, bits)
        err = dequantize(quantize(centres, s, z, bits), s, z) - centres
        return float(np.dot(counts, err * err))

    errors = [error(a) for a in _MSE_GRID]
    best = _MSE_GRID[len(errors) - 1 - int(np.argmin(errors[::-1]))]
    return float(best * lo), float(best * hi)


def _kl_threshold(hist, levels):
    """Index i (bins kept) minimising KL(P_i || Q_i), TensorRT's entropy calibration."""
    n = hist.size
    best_i, best_kl = n, np.inf
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])
    for i in range(levels, n + 1):
        src = hist[:i]
        p = src.copy()
        p[-1] += tail[i]
        # Merge i bins into `levels` groups of i // levels; the last takes the remainder.
        starts = np.arange(levels) * (i // levels)
        sums = np.add.reduceat(src, starts)
        nonzero = src > 0
        counts = np.add.reduceat(nonzero.astype(np.float64), starts)
        lengths = np.diff(np.append(starts, i))
        q = np.repeat(np.divide(sums, counts, out=np.zeros(levels), where=counts > 0),
                      lengths) * nonzero
        if q.sum() == 0:
            continue
        p = p / p.sum()
        # Q is empty only where the clipped source is, i.e. at P's outlier bin: give it a
        # small mass so that KL stays finite, as TensorRT-style implementations smooth.
        q = np.where(q > 0, q / q.sum(), 1e-4)
        q /= q.sum()
        mask = p > 0
        kl = float(np.sum(p[mask] * np.log(p[mask] / q[mask])))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return best_i


def kl_range(batches, bins=KL_BINS):
    """TensorRT entropy calibration (see the module notes); returns (lo, hi)."""
    if int(bins) < 256:
        raise ValueError(f"bins must be >= 256, not {bins!r}")
    v = _flat(batches)
    lo, hi = _with_zero(v.min(), v.max())
    signed = lo < 0
    amax = max(-lo, hi)
    if amax == 0.0:
        return lo, hi
    hist, _ = np.histogram(np.abs(v), bins=int(bins), range=(0.0, amax))
    hist = hist.astype(np.float64)
    # The first bin holds every exact zero (ReLU outputs, padding): a spike that would
    # decide the threshold alone. Flatten it to its neighbour as NVIDIA's TensorRT
    # calibrator (pytorch-quantization, _compute_amax_entropy) does.
    hist[0] = hist[1]
    i = _kl_threshold(hist, 128 if signed else 255)
    t = min((i + 0.5) * amax / bins, amax)
    return (max(lo, -t) if signed else 0.0), min(hi, t)


def estimate_range(method, batches):
    """Range of one tensor by ``method`` (one of ``METHODS``) from its calibration batches."""
    if method == "minmax":
        return minmax_range(batches)
    if method == "ema":
        return ema_range(batches)
    if method == "percentile":
        return percentile_range(batches)
    if method == "mse":
        return mse_range(batches)
    if method == "kl":
        return kl_range(batches)
    raise ValueError(f"method must be one of {METHODS}, not {method!r}")


def calibration_set(x_train, n=512, seed=0):
    """The first ``n`` training samples of a seeded permutation (all if fewer).

    Parameters
    ----------
    x_train : ndarray, shape (N, ...)
    n : int
    seed : int

    Returns
    -------
    ndarray, shape (min(n, N), ...)
    """
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, not {n!r}")
    order = np.random.default_rng(seed).permutation(len(x_train))
    return x_train[np.sort(order[: int(n)])]
