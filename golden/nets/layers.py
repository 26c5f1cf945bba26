"""Float layers in TFLite layouts, forward and backward, for training and PTQ references.

Activations are NHWC (or (B, K) after a reshape). Convolution weights are OHWI,
depthwise weights 1HWC (channel multiplier 1), fully-connected weights (N, K): the
layouts of ``golden.graph`` so a trained tensor goes into the integer network unchanged.
Every ``*_backward`` takes the upstream gradient and the forward inputs and returns the
gradients of the inputs and parameters; the arithmetic is float64 throughout.
"""

import numpy as np

__all__ = [
    "ACTIVATIONS",
    "same_padding",
    "conv_padding",
    "windows",
    "activate",
    "activate_backward",
    "conv2d",
    "conv2d_backward",
    "depthwise_conv2d",
    "depthwise_conv2d_backward",
    "fully_connected",
    "fully_connected_backward",
    "batch_norm_train",
    "batch_norm_eval",
    "batch_norm_backward",
    "pool",
    "pool_backward",
]

ACTIVATIONS = ("NONE", "RELU", "RELU6")


def same_padding(size, kernel, stride):
    """TFLite SAME padding of one spatial axis.

    Returns
    -------
    (before, after, out) : tuple of int
        Padding before and after (the odd pixel goes after, as in TFLite) and output size.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


def conv_padding(shape, kernel, stride, padding):
    """Padding and output size of a 2-D window op on an NHWC ``shape``.

    Returns
    -------
    pads : ((top, bottom), (left, right))
    out : (OH, OW)
    """
    if padding not in ("SAME", "VALID"):
        raise ValueError(f"padding must be 'SAME' or 'VALID', not {padding!r}")
    pads, out = [], []
    for size, k, s in zip(shape[1:3], kernel, stride, strict=True):
        if padding == "SAME":
            before, after, o = same_padding(size, k, s)
        else:
            before, after, o = 0, 0, (size - k) // s + 1
        if o < 1:
            raise ValueError(f"window {kernel} does not fit input of shape {shape}")
        pads.append((before, after))
        out.append(o)
    return tuple(pads), tuple(out)


def activate(y, activation):
    """Apply a fused activation ("NONE", "RELU" or "RELU6") to ``y``."""
    if activation == "NONE":
        return y
    if activation == "RELU":
        return np.maximum(y, 0.0)
    if activation == "RELU6":
        return np.clip(y, 0.0, 6.0)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, not {activation!r}")


def activate_backward(dy, y, activation):
    """Gradient through a fused activation, given its output ``y``."""
    if activation == "NONE":
        return dy
    if activation == "RELU6":
        return dy * ((y > 0) & (y < 6))
    return dy * (y > 0)


def windows(x, kernel, stride, padding):
    """Convolution windows of NHWC ``x``, zero padded.

    Returns
    -------
    win : ndarray, shape (B, OH, OW, KH, KW, C)
        A strided view; ``win.reshape(B * OH * OW, -1)`` are im2col rows in OHWI order.
    pads : ((top, bottom), (left, right))
    """
    pads, (oh, ow) = conv_padding(x.shape, kernel, stride, padding)
    xp = np.pad(x, ((0, 0), *pads, (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, kernel, axis=(1, 2))
    # sliding_window_view puts the window axes last: (B, H', W', C, KH, KW).
    win = win[:, :: stride[0], :: stride[1]][:, :oh, :ow]
    return win.transpose(0, 1, 2, 4, 5, 3), pads


def _col2im(dwin, x_shape, kernel, stride, pads):
    """Scatter-add window gradients (B, OH, OW, KH, KW, C) back onto the input."""
    b, h, w, c = x_shape
    (pt, pb), (pl, pr) = pads
    dxp = np.zeros((b, h + pt + pb, w + pl + pr, c))
    oh, ow = dwin.shape[1:3]
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows = slice(i, i + stride[0] * (oh - 1) + 1, stride[0])
            cols = slice(j, j + stride[1] * (ow - 1) + 1, stride[1])
            dxp[:, rows, cols, :] += dwin[:, :, :, i, j, :]
    return dxp[:, pt : pt + h, pl : pl + w, :]


def conv2d(x, w, b, stride=(1, 1), padding="SAME"):
    """CONV_2D in float.

    Parameters
    ----------
    x : ndarray, shape (B, H, W, I)
    w : ndarray, shape (O, KH, KW, I)
    b : ndarray, shape (O,)
    stride : (int, int)
    padding : {"SAME", "VALID"}

    Returns
    -------
    ndarray, shape (B, OH, OW, O)
    """
    if x.ndim != 4 or w.ndim != 4 or x.shape[3] != w.shape[3]:
        raise ValueError(f"conv2d needs x (B,H,W,I) and w (O,KH,KW,I), not {x.shape}, {w.shape}")
    win, _ = windows(x, w.shape[1:3], stride, padding)
    bsz, oh, ow = win.shape[:3]
    cols = win.reshape(bsz * oh * ow, -1)
    y = cols @ w.reshape(w.shape[0], -1).T + b
    return y.reshape(bsz, oh, ow, w.shape[0])


def conv2d_backward(dy, x, w, stride=(1, 1), padding="SAME"):
    """Gradients of :func:`conv2d`: returns ``(dx, dw, db)`` shaped like ``x, w, b``."""
    win, pads = windows(x, w.shape[1:3], stride, padding)
    bsz, oh, ow = win.shape[:3]
    cols = win.reshape(bsz * oh * ow, -1)
    dy2 = dy.reshape(-1, w.shape[0])
    dw = (dy2.T @ cols).reshape(w.shape)
    db = dy2.sum(axis=0)
    dcols = (dy2 @ w.reshape(w.shape[0], -1)).reshape(win.shape)
    return _col2im(dcols, x.shape, w.shape[1:3], stride, pads), dw, db


def depthwise_conv2d(x, w, b, stride=(1, 1), padding="SAME"):
    """DEPTHWISE_CONV_2D in float, channel multiplier 1.

    Parameters
    ----------
    x : ndarray, shape (B, H, W, C)
    w : ndarray, shape (1, KH, KW, C)
    b : ndarray, shape (C,)

    Returns
    -------
    ndarray, shape (B, OH, OW, C)
    """
    if x.ndim != 4 or w.ndim != 4 or w.shape[0] != 1 or x.shape[3] != w.shape[3]:
        raise ValueError(f"depthwise needs x (B,H,W,C) and w (1,KH,KW,C), not {x.shape}, {w.shape}")
    win, _ = windows(x, w.shape[1:3], stride, padding)
    return np.einsum("bhwijc,ijc->bhwc", win, w[0]) + b


def depthwise_conv2d_backward(dy, x, w, stride=(1, 1), padding="SAME"):
    """Gradients of :func:`depthwise_conv2d`: ``(dx, dw, db)``."""
    win, pads = windows(x, w.shape[1:3], stride, padding)
    dw = np.einsum("bhwc,bhwijc->ijc", dy, win)[None]
    db = dy.sum(axis=(0, 1, 2))
    dwin = np.einsum("bhwc,ijc->bhwijc", dy, w[0])
    return _col2im(dwin, x.shape, w.shape[1:3], stride, pads), dw, db


def fully_connected(x, w, b):
    """FULLY_CONNECTED in float: x (B, K), w (N, K), b (N,) -> (B, N)."""
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"fully_connected needs x (B,K) and w (N,K), not {x.shape}, {w.shape}")
    return x @ w.T + b


def fully_connected_backward(dy, x, w):
    """Gradients of :func:`fully_connected`: ``(dx, dw, db)``."""
    return dy @ w, dy.T @ x, dy.sum(axis=0)


def batch_norm_train(x, gamma, beta, eps):
    """Batch normalisation over all axes but the last, with batch statistics.

    Returns
    -------
    y : ndarray, shape of ``x``
    mean, var : ndarray, shape (C,)
        Batch statistics (biased variance), for the running averages and the backward.
    """
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes)
    var = x.var(axis=axes)
    return gamma * (x - mean) / np.sqrt(var + eps) + beta, mean, var


def batch_norm_eval(x, gamma, beta, mean, var, eps):
    """Batch normalisation with fixed (running) statistics, shape of ``x``."""
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def batch_norm_backward(dy, x, gamma, mean, var, eps):
    """Gradients of :func:`batch_norm_train`: ``(dx, dgamma, dbeta)``."""
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    inv = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * inv
    dgamma = (dy * xhat).sum(axis=axes)
    dbeta = dy.sum(axis=axes)
    dx = gamma * inv / n * (n * dy - dbeta - xhat * dgamma)
    return dx, dgamma, dbeta


def _pool_view(x, size):
    b, h, w, c = x.shape
    if h % size[0] or w % size[1]:
        raise ValueError(f"pool size {size} must tile the input {x.shape} exactly")
    return x.reshape(b, h // size[0], size[0], w // size[1], size[1], c)


def pool(x, size, kind):
    """Non-overlapping pooling (window = stride, VALID) of NHWC ``x``.

    Parameters
    ----------
    x : ndarray, shape (B, H, W, C); H and W multiples of ``size``
    size : (int, int)
    kind : {"max", "avg"}

    Returns
    -------
    ndarray, shape (B, H // size[0], W // size[1], C)
    """
    v = _pool_view(x, size)
    if kind == "max":
        return v.max(axis=(2, 4))
    if kind == "avg":
        return v.mean(axis=(2, 4))
    raise ValueError(f"kind must be 'max' or 'avg', not {kind!r}")


def pool_backward(dy, x, size, kind):
    """Gradient of :func:`pool` with respect to ``x``; a max-pool tie sends it to every max."""
    v = _pool_view(x, size)
    if kind == "avg":
        g = np.broadcast_to(dy[:, :, None, :, None, :] / (size[0] * size[1]), v.shape)
    else:
        mask = v == v.max(axis=(2, 4), keepdims=True)
        g = mask * dy[:, :, None, :, None, :]
    return np.ascontiguousarray(g).reshape(x.shape)
