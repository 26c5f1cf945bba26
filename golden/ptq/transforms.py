"""Data-free graph transforms of a float network: batch-norm folding, cross-layer
equalization and high-bias absorption (Nagel et al. 2019, "Data-Free Quantization Through
Weight Equalization and Bias Correction").

Each function returns a transformed copy and leaves its argument alone. Folding and
equalization are exact rewrites (the float outputs only move by rounding); absorption is
exact for every input whose pre-activations stay above the absorbed amount, i.e. nearly
all of them.
"""

import numpy as np

from ..nets.model import FloatNet
from .weights import CHANNEL_AXIS

__all__ = [
    "WEIGHTED",
    "fold_batch_norm",
    "output_shapes",
    "equalization_pairs",
    "equalize",
    "absorb_high_bias",
]

WEIGHTED = ("conv", "dwconv", "fc")
# Per-channel positive scaling and per-channel shifts pass through these unchanged.
_TRANSPARENT = ("maxpool", "avgpool", "reshape")


def fold_batch_norm(net):
    """Fold every batch norm into the conv / depthwise / FC layer that feeds it.

    ``w' = w * g``, ``b' = (b - mean) * g + beta`` with ``g = gamma / sqrt(var + eps)`` per
    output channel; the layer takes over the batch norm's activation and its name is used
    wherever the batch norm's was. The batch norm's ``beta`` and ``|gamma|`` are kept as
    ``options["preact"]``: the mean and spread of the layer's pre-activations, which
    high-bias absorption needs once the batch norm is gone.

    Parameters
    ----------
    net : golden.nets.FloatNet

    Returns
    -------
    FloatNet without ``bn`` nodes.

    Raises
    ------
    ValueError
        A batch norm that does not directly follow a layer it can fold into, alone and
        without an activation in between.
    """
    out = net.copy()
    nodes, rename = [], {}
    for n in out.nodes:
        n.inputs = [rename.get(i, i) for i in n.inputs]
        if n.kind != "bn":
            nodes.append(n)
            continue
        src = next((m for m in nodes if m.name == n.inputs[0]), None)
        if src is None or src.kind not in WEIGHTED or src.activation != "NONE" or \
                len(net.consumers(src.name)) != 1:
            raise ValueError(f"{n.name}: batch norm must follow a conv, depthwise or FC "
                             f"layer with no activation and no other consumer")
        p = n.params
        g = p["gamma"] / np.sqrt(p["var"] + n.options["eps"])
        axis = CHANNEL_AXIS[src.kind]
        shape = [1] * src.params["w"].ndim
        shape[axis] = -1
        src.params["w"] = src.params["w"] * g.reshape(shape)
        src.params["b"] = (src.params["b"] - p["mean"]) * g + p["beta"]
        src.options["activation"] = n.activation
        src.options["preact"] = {"mean": p["beta"].copy(), "std": np.abs(p["gamma"])}
        rename[n.name] = src.name
    return FloatNet(net.name, net.input_shape, nodes)


def output_shapes(net):
    """Per-sample output shape of every node (and ``INPUT``)."""
    _, acts = net.forward(np.zeros((1, *net.input_shape)), keep=True)
    return {k: v.shape[1:] for k, v in acts.items()}


def equalization_pairs(net):
    """Consecutive weighted layers that cross-layer equalization can rescale.

    A pair ``(a, b, via)``: layer ``a`` (activation ReLU or none: a ReLU6 clips at a fixed
    6 that a scale would move) feeds layer ``b`` through
    the nodes ``via`` (pooling, reshape), every one of them read by nothing else, so a
    positive per-channel scale on ``a``'s outputs reaches ``b``'s inputs unchanged.

    Returns
    -------
    list of (str, str, list of str)
    """
    pairs = []
    for a in net.nodes:
        if a.kind not in WEIGHTED or a.activation not in ("NONE", "RELU"):
            continue
        via, cur = [], a
        while True:
            nxt = net.consumers(cur.name)
            if len(nxt) != 1:
                break
            cur = nxt[0]
            if cur.kind in WEIGHTED:
                pairs.append((a.name, cur.name, via))
                break
            if cur.kind not in _TRANSPARENT:
                break
            via.append(cur.name)
    return pairs


def _out_ranges(node):
    w = np.moveaxis(node.params["w"], CHANNEL_AXIS[node.kind], 0)
    return np.abs(w).reshape(w.shape[0], -1).max(axis=1)


def _in_view(node, channels):
    """``b``'s weights as (..., C) with the input channel last (a view)."""
    w = node.params["w"]
    if node.kind == "fc":
        return w.reshape(w.shape[0], -1, channels)
    return w


def _scale_out(node, s):
    """Divide output channel i of ``node`` by ``s[i]`` (weights, bias, pre-act stats)."""
    shape = [1] * node.params["w"].ndim
    shape[CHANNEL_AXIS[node.kind]] = -1
    node.params["w"] = node.params["w"] / s.reshape(shape)
    node.params["b"] = node.params["b"] / s
    if "preact" in node.options:
        pre = node.options["preact"]
        node.options["preact"] = {"mean": pre["mean"] / s, "std": pre["std"] / s}


def equalize(net, iterations=100, tol=1e-10):
    """Cross-layer equalization of every pair from :func:`equalization_pairs`.

    For a pair (a, b) and channel i, with ``r1[i]`` the range (max magnitude) of ``a``'s
    output channel i and ``r2[i]`` that of ``b``'s input channel i, ``s[i] =
    sqrt(r1[i] * r2[i]) / r2[i]``; ``a``'s channel is divided and ``b``'s multiplied by
    ``s[i]``, leaving both ranges at ``sqrt(r1[i] * r2[i])``. Pairs sharing a layer are
    swept until no scale moves by more than ``tol`` (relative) or ``iterations`` sweeps.

    Parameters
    ----------
    net : FloatNet
        Without batch norms (see :func:`fold_batch_norm`).

    Returns
    -------
    FloatNet
    """
    if any(n.kind == "bn" for n in net.nodes):
        raise ValueError("fold batch norms before equalizing")
    out = net.copy()
    pairs = equalization_pairs(out)
    shapes = output_shapes(out)
    for _ in range(int(iterations)):
        worst = 0.0
        for a_name, b_name, _via in pairs:
            a, b = out.node(a_name), out.node(b_name)
            channels = shapes[a_name][-1]
            r1 = _out_ranges(a)
            view = _in_view(b, channels)
            r2 = np.abs(view).reshape(-1, channels).max(axis=0)
            ok = (r1 > 0) & (r2 > 0)
            s = np.ones(channels)
            s[ok] = np.sqrt(r1[ok] * r2[ok]) / r2[ok]
            _scale_out(a, s)
            b.params["w"] = (_in_view(b, channels) * s).reshape(b.params["w"].shape)
            worst = max(worst, float(np.max(np.abs(s - 1.0))))
        if worst <= tol:
            break
    return out


def absorb_high_bias(net, n_std=3.0):
    """Move the always-positive part of pre-activations from a layer into the next.

    For a pair (a, b) with a ReLU on ``a`` and pre-activation statistics from the folded
    batch norm (mean ``beta``, spread ``gamma``), ``c = max(0, beta - n_std * gamma)`` is
    subtracted from ``a``'s bias and ``W_b c`` added to ``b``'s: ``relu(x - c) = relu(x) - c``
    whenever ``x >= c``, so the network is unchanged except for the rare pre-activation
    below ``c``, and ``a``'s output range shrinks by ``c``. Pairs whose ``b`` pads its input
    (a SAME convolution larger than 1x1) are skipped: the padded zeros would not move.

    Returns
    -------
    FloatNet
    """
    out = net.copy()
    shapes = output_shapes(out)
    for a_name, b_name, _via in equalization_pairs(out):
        a, b = out.node(a_name), out.node(b_name)
        if a.activation != "RELU" or "preact" not in a.options:
            continue
        if b.kind != "fc" and b.options["padding"] == "SAME" and b.params["w"].shape[1:3] != (1, 1):
            continue
        pre = a.options["preact"]
        c = np.maximum(0.0, pre["mean"] - n_std * pre["std"])
        channels = shapes[a_name][-1]
        w = _in_view(b, channels)
        if b.kind == "dwconv":
            shift = w.sum(axis=(0, 1, 2)) * c
        else:
            shift = w.reshape(w.shape[0], -1, channels).sum(axis=1) @ c
        a.params["b"] = a.params["b"] - c
        a.options["preact"] = {"mean": pre["mean"] - c, "std": pre["std"]}
        b.params["b"] = b.params["b"] + shift
    return out


