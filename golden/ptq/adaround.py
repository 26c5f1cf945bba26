"""AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training
Quantization"): choose, per weight, to round down or up so that the layer's output on
calibration data is reconstructed, instead of rounding to nearest.

For a layer with weights ``W`` and scales ``s``, the soft-quantized weights are
``W~ = s * clip(floor(W / s) + h(V), -qmax, qmax)`` with the rectified sigmoid
``h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)``, ``zeta = 1.1``,
``gamma = -0.1``. ``V`` starts where ``h(V)`` equals the fractional part of ``W / s``
(the soft weights start at the float weights) and minimises

    E / E_nearest  +  lambda * mean (1 - |2 h(V) - 1|^beta),
    E = mean_rows || f(W~ x~ + b) - f(W x + b) ||^2

by Adam, where ``x~`` is the layer's input inside the quantized network (layers before it
already rounded), ``x`` the float network's, ``f`` the layer's activation. The paper
weighs the plain sums, ``E + 0.01 * sum(...)``; their balance then depends on the
layer's activation scale and size (here the logits layer would keep a fifth of its
weights soft), so both terms are normalised: the error by round-to-nearest's
``E_nearest``, the regulariser by the number of weights, with ``lambda = 30``. The regulariser
is off for the first 20 % of the iterations (warm start), then ``beta`` falls linearly
from 20 to 2, which drives every ``h(V)`` to 0 or 1; the final codes are
``floor(W / s) + (h(V) >= 0.5)``. Layers are done one at a time in network order.
"""

import sys

import numpy as np
from threadpoolctl import threadpool_limits

from ..nets import layers as L
from ..nets.train import Adam
from ..quant import qrange, round_half_away
from .progress import Progress

__all__ = ["ZETA", "GAMMA", "rectified_sigmoid", "LayerProblem", "layer_problem",
           "reconstruction_error", "adaround_layer", "adaround"]

ZETA, GAMMA = 1.1, -0.1


def rectified_sigmoid(v):
    """``h(V)`` and ``dh/dV`` (0 where the clip is active)."""
    sig = 1.0 / (1.0 + np.exp(-v))
    raw = sig * (ZETA - GAMMA) + GAMMA
    grad = np.where((raw > 0) & (raw < 1), sig * (1 - sig) * (ZETA - GAMMA), 0.0)
    return np.clip(raw, 0.0, 1.0), grad


class LayerProblem:
    """One layer as a matrix product on its calibration inputs.

    ``W`` is (O, K) for conv / FC (rows of OHWI or (N, K) weights) and (T, C) for a
    depthwise layer (taps by channels); ``X`` is (M, K) or (M, T, C) accordingly; ``s`` is
    the weight scale broadcast against ``W``; ``target`` (M, channels) the float output.
    """

    def __init__(self, kind, w, s, x, bias, target, activation):
        self.kind, self.w, self.s, self.x = kind, w, s, x
        self.bias, self.target, self.activation = bias, target, activation

    def output(self, w, rows=slice(None)):
        x = self.x[rows]
        y = np.einsum("mtc,tc->mc", x, w) if self.kind == "dwconv" else x @ w.T
        return L.activate(y + self.bias, self.activation)

    def weight_grad(self, dy, rows):
        x = self.x[rows]
        return np.einsum("mc,mtc->tc", dy, x) if self.kind == "dwconv" else dy.T @ x


def layer_problem(model, node, x_quant, target):
    """Build the :class:`LayerProblem` of weighted ``node`` of ``model``.

    Parameters
    ----------
    model : golden.ptq.quantizer.QuantModel
    node : golden.nets.Node
    x_quant : ndarray
        The layer's input inside the quantized network, (B, H, W, C) or (B, K).
    target : ndarray
        The float network's output of the layer (after its activation).
    """
    w = node.params["w"]
    s = model.scale[node.name]
    if node.kind == "fc":
        wm, x = w, x_quant.reshape(len(x_quant), -1)
        sm = s.reshape(-1, 1)
    else:
        cols, _ = L.windows(x_quant, w.shape[1:3], node.options["stride"],
                             node.options["padding"])
        m = cols.shape[0] * cols.shape[1] * cols.shape[2]
        if node.kind == "conv":
            wm, x = w.reshape(w.shape[0], -1), cols.reshape(m, -1)
            sm = s.reshape(-1, 1)
        else:
            t = w.shape[1] * w.shape[2]
            wm, x = w.reshape(t, -1), cols.reshape(m, t, -1)
            sm = s.reshape(1, -1)
    target = target.reshape(-1, target.shape[-1])
    return LayerProblem(node.kind, wm, sm, x, model.real_bias(node.name), target,
                        node.activation)


def reconstruction_error(problem, w):
    """Mean over rows of the squared output error with real weights ``w`` (matrix form)."""
    d = problem.output(w) - problem.target
    return float((d * d).sum(axis=1).mean())


def adaround_layer(problem, bits, iterations=1000, batch=2048, lam=30.0, warmup=0.2,
                   beta=(20.0, 2.0), lr=1e-2, seed=0):
    """Learn the rounding of one layer.

    Parameters
    ----------
    problem : LayerProblem
    bits : int
        Weight width, 2..8.
    iterations : int
        Adam steps.
    batch : int
        Rows drawn (seeded) for each step.
    lam : float
        Weight of the rounding regulariser (mean over the weights) against the
        reconstruction error (relative to round-to-nearest's).
    warmup : float
        Share of the iterations without the regulariser.
    beta : (float, float)
        Start and end of the annealed regulariser exponent.
    lr : float
        Adam learning rate on ``V``.
    seed : int

    Returns
    -------
    codes : ndarray of int64, shape of ``problem.w``
        Integer weights in the ``bits``-bit range.
    h : ndarray
        Final soft rounding ``h(V)``, for checking that it converged to 0 / 1.
    """
    if int(iterations) < 1:
        raise ValueError(f"iterations must be >= 1, not {iterations!r}")
    qmin, qmax = qrange(bits, narrow=True)
    ratio = problem.w / problem.s
    base = np.floor(ratio)
    rest = ratio - base
    # h(V) = rest at the start: invert the rectified sigmoid (rest is in [0, 1)).
    v = -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)
    opt = Adam({"v": v})
    rng = np.random.default_rng(seed)
    # Round-to-nearest error of the layer: the reconstruction term is measured against
    # it, and the regulariser is averaged over the weights, so that one lambda weighs
    # the two alike in every layer whatever its activation scale and size.
    nearest = problem.s * np.clip(round_half_away(ratio), qmin, qmax)
    norm = max(reconstruction_error(problem, nearest), np.finfo(float).tiny)
    rows = problem.x.shape[0]
    start = int(warmup * iterations)
    # The products are small (thousands of rows, at most hundreds of columns): one BLAS
    # thread is faster than several and the result cannot depend on the thread count.
    with threadpool_limits(1, "blas"):
        for it in range(int(iterations)):
            idx = rng.integers(0, rows, min(batch, rows))
            h, dh = rectified_sigmoid(opt.params["v"])
            q = base + h
            inside = (q >= qmin) & (q <= qmax)
            y = problem.output(problem.s * np.clip(q, qmin, qmax), idx)
            dy = 2.0 * (y - problem.target[idx]) / (len(idx) * norm)
            dy = L.activate_backward(dy, y, problem.activation)
            grad_h = problem.weight_grad(dy, idx) * problem.s * inside
            if it >= start:
                left = 1.0 - (it - start) / max(iterations - start, 1)
                b = beta[1] + (beta[0] - beta[1]) * left
                t = 2.0 * h - 1.0
                grad_h = grad_h - lam / h.size * b * np.abs(t) ** (b - 1.0) * np.sign(t) * 2.0
            opt.step({"v": grad_h * dh}, lr)
    h, _ = rectified_sigmoid(opt.params["v"])
    codes = np.clip(base + (h >= 0.5), qmin, qmax).astype(np.int64)
    return codes, h


def adaround(model, x, iterations=1000, seed=0, stream=sys.stderr):
    """AdaRound every weighted layer of ``model`` in place, in network order.

    Parameters
    ----------
    model : golden.ptq.quantizer.QuantModel
    x : ndarray, shape (N, *input_shape)
        Calibration samples.
    iterations : int
        Adam steps per layer.
    seed : int
    stream : file or None
        Progress output.

    Returns
    -------
    dict of str -> (float, float)
        Per layer, the reconstruction error with round-to-nearest codes and with the
        learned ones, on all of ``x``.
    """
    if len(x) == 0:
        raise ValueError("calibration data must not be empty")
    _, facts = model.net.forward(x, keep=True)
    errors = {}
    layers = model.weighted()
    with Progress(len(layers), "adaround", stream) as bar:
        for i, n in enumerate(layers):
            _, qacts = model.simulate(x, keep=True)
            prob = layer_problem(model, n, qacts[n.inputs[0]], facts[n.name])
            before = reconstruction_error(prob, _matrix(model.weight(n.name), n))
            codes, _ = adaround_layer(prob, model.bits, iterations, seed=seed + i)
            model.codes[n.name] = codes.reshape(n.params["w"].shape).astype(np.int8)
            errors[n.name] = (before, reconstruction_error(prob, _matrix(model.weight(n.name),
                                                                         n)))
            bar.update()
    return errors


def _matrix(w, node):
    """Weights of ``node`` in the matrix form of :class:`LayerProblem`."""
    if node.kind == "dwconv":
        return w.reshape(w.shape[1] * w.shape[2], -1)
    return w.reshape(w.shape[0], -1)
