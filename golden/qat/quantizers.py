"""Fake quantizers for training: forward on the integer grid, backward by the
straight-through estimator, with the learned-parameter gradients of LSQ, LSQ+ and PACT.

Every quantizer here puts real values on the grid of an int8 tensor of the exported
network, ``real = s * (q - z)`` with integer codes ``q`` in ``[qmin, qmax]``, so what the
training graph computes is what the integer network computes up to the integer kernels'
own rounding:

``fake_quant``
    ``u = x / s + z``, ``q = clamp(round(u), qmin, qmax)``, ``out = s * (q - z)``; ``z``
    is rounded to an integer in the forward pass (a zero point is an integer).
``ste_backward``
    The straight-through estimator (Bengio et al. 2013; Jacob et al. 2018): the gradient
    passes where ``qmin <= u <= qmax`` and is 0 where the value was clipped.
``lsq_backward``
    LSQ (Esser et al. 2020, eq. 3) and LSQ+ (Bhalgat et al. 2020): besides the STE
    gradient of ``x``, ``d out / d s = round(u) - u`` inside the grid and ``q - z`` at a
    clipped end (``-Q_N`` / ``Q_P`` in the papers' notation), and, for LSQ+'s learned
    offset, ``d out / d z = 0`` inside and ``-s`` at a clipped end (``d out / d beta = 1``
    for ``beta = -s z``). Both are multiplied by ``g = 1 / sqrt(N * Q_P)``, ``N`` the
    number of values sharing the parameter.
``pact_backward``
    PACT (Choi et al. 2018) on a ReLU output ``y = clamp(x, 0, alpha)`` quantized with
    ``s = alpha / (2^b - 1)``: ``d out / d x = 1`` for ``x < alpha`` and
    ``d out / d alpha = 1`` for ``x >= alpha`` (eq. 3 of the paper).

Scales are rounded to float32 before use, as a ``.tflite`` file stores them.
"""

import numpy as np

from ..quant import round_half_away

__all__ = ["as_float32", "fake_quant", "ste_backward", "lsq_backward", "pact_backward",
           "lsq_grad_scale"]


def as_float32(s):
    """``s`` rounded to float32 (what the exported file keeps), as float64."""
    return np.asarray(s, dtype=np.float64).astype(np.float32).astype(np.float64)


def fake_quant(x, s, z, qmin, qmax):
    """Real values on an integer grid.

    Parameters
    ----------
    x : ndarray
    s, z : ndarray or float
        Scale (> 0) and zero point, broadcast against ``x``; ``z`` is rounded half away
        from zero.
    qmin, qmax : int

    Returns
    -------
    out : ndarray, shape of ``x``
    cache : tuple
        ``(u, q, s, zr)`` for the backward functions.
    """
    s = as_float32(s)
    zr = round_half_away(z)
    u = x / s + zr
    q = np.clip(round_half_away(u), qmin, qmax)
    return s * (q - zr), (u, q, s, zr, qmin, qmax)


def _inside(cache):
    u, _, _, _, qmin, qmax = cache
    return (u >= qmin) & (u <= qmax)


def ste_backward(dout, cache):
    """Gradient of ``x``: ``dout`` where the value was on the grid, 0 where clipped."""
    return dout * _inside(cache)


def _reduce(g, axes, keep):
    return g.sum(axis=axes, keepdims=keep) if axes else g


def lsq_backward(dout, cache, grad_scale, axes=None, offset=False):
    """Gradients of LSQ / LSQ+.

    Parameters
    ----------
    dout : ndarray
    cache : tuple from :func:`fake_quant`
    grad_scale : float
        ``g``, see :func:`lsq_grad_scale`.
    axes : tuple of int, optional
        Axes summed over for the scale (all axes for a per-tensor scale; all but the
        channel axis for per-channel scales, which keep their dimension).
    offset : bool
        Also return the gradient of ``z`` (LSQ+).

    Returns
    -------
    dx, ds[, dz]
    """
    u, q, s, zr, _, _ = cache
    inside = _inside(cache)
    keep = axes is not None
    axes = tuple(range(u.ndim)) if axes is None else tuple(axes)
    dx = dout * inside
    ds = grad_scale * _reduce(dout * np.where(inside, q - u, q - zr), axes, keep)
    if not offset:
        return dx, ds
    dz = grad_scale * _reduce(dout * np.where(inside, 0.0, -s), axes, keep)
    return dx, ds, dz


def pact_backward(dout, x, alpha):
    """Gradients of PACT: ``(dx, dalpha)`` for ``x`` (already through the ReLU)."""
    clipped = x >= alpha
    return dout * ~clipped, float(np.sum(dout * clipped))


def lsq_grad_scale(n, qp):
    """LSQ's gradient scale ``1 / sqrt(n * Q_P)`` for a parameter shared by ``n`` values."""
    return 1.0 / np.sqrt(float(n) * float(qp))
