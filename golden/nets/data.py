"""The digits data set (sklearn's 8x8 handwritten digits) with a fixed train / held-out split.

Pixels 0..16 are scaled to [0, 1]. The split is stratified: a quarter of every class, chosen
by a NumPy PCG64 generator with a fixed seed, is held out. It is written out here rather
than taken from ``sklearn.model_selection`` so that it cannot move with a library release.
Calibration data for PTQ comes from the training part only; accuracies are measured on
the held-out part.
"""

import numpy as np

__all__ = ["SPLIT_SEED", "HELD_OUT_FRACTION", "digits", "split"]

SPLIT_SEED = 0
HELD_OUT_FRACTION = 0.25


def split(labels, fraction=HELD_OUT_FRACTION, seed=SPLIT_SEED):
    """Stratified split of sample indices.

    Parameters
    ----------
    labels : ndarray of int, shape (N,)
    fraction : float
        Share of every class held out, in (0, 1).
    seed : int

    Returns
    -------
    train, held_out : ndarray of int64
        Sorted, disjoint indices covering ``range(N)``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), not {fraction!r}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        held.append(rng.permutation(idx)[: int(round(fraction * idx.size))])
    held = np.sort(np.concatenate(held))
    train = np.setdiff1d(np.arange(labels.size), held)
    return train, held


def digits(shape="image"):
    """The digits set, split.

    Parameters
    ----------
    shape : {"image", "flat"}
        ``"image"``: samples (8, 8, 1) NHWC; ``"flat"``: samples (64,).

    Returns
    -------
    dict with ``x_train, y_train, x_test, y_test``: float64 samples in [0, 1] and int64
    labels; the test part is the held-out split.
    """
    from sklearn.datasets import load_digits

    if shape not in ("image", "flat"):
        raise ValueError(f"shape must be 'image' or 'flat', not {shape!r}")
    d = load_digits()
    x = d.data.astype(np.float64) / 16.0
    x = x.reshape(-1, 8, 8, 1) if shape == "image" else x.reshape(-1, 64)
    y = d.target.astype(np.int64)
    train, held = split(y)
    return {"x_train": x[train], "y_train": y[train], "x_test": x[held], "y_test": y[held]}
