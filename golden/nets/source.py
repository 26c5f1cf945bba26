"""Where a float network and its data come from, for the ``golden.ptq`` and ``golden.qat``
command lines: a shipped network by name, or the user's float32 ``.tflite`` file; the
digits split when the network takes 64 values per sample, or the user's ``.npy`` arrays.
"""

import argparse
import os

import numpy as np

from .data import digits, split
from .tflite import load_float_tflite
from .zoo import MODELS, load

__all__ = ["model_argument", "open_model", "load_samples", "labelled_data"]


def model_argument(text):
    """argparse type: a shipped network name or an existing ``.tflite`` file."""
    if text in MODELS:
        return text
    if not text.endswith(".tflite"):
        raise argparse.ArgumentTypeError(
            f"must be one of {', '.join(MODELS)} or a float32 .tflite file, not {text!r}")
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return text


def open_model(spec):
    """The float network ``spec`` names (see :func:`model_argument`)."""
    return load(spec) if spec in MODELS else load_float_tflite(spec)


def load_samples(path, net, what="data"):
    """Float samples for ``net`` from a ``.npy`` file, shape (N, *net.input_shape).

    Raises
    ------
    ValueError
        Unreadable file, non-numeric or non-finite values, a shape that does not fit.
    """
    try:
        x = np.load(os.fspath(path), allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {what} {path!r}: {e}") from None
    if x.dtype.kind not in "fiu" or x.ndim < 1 or len(x) == 0:
        raise ValueError(f"{what} {path!r} must be a non-empty numeric array, not "
                         f"{x.dtype} {x.shape}")
    if x.shape[1:] != net.input_shape:
        raise ValueError(f"{what} {path!r} must have shape (N, "
                         f"{', '.join(map(str, net.input_shape))}) for {net.name}, not "
                         f"{x.shape}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} {path!r} holds inf or nan")
    return x


def labelled_data(net, data=None, labels=None):
    """Training and held-out samples with labels for ``net``.

    Parameters
    ----------
    net : FloatNet
    data, labels : str, optional
        ``.npy`` files of samples (N, *input_shape) and integer labels (N,); split 75 / 25
        by :func:`golden.nets.data.split`. Without them, the digits split, reshaped to the
        network's input (which must hold 64 values).

    Returns
    -------
    dict with ``x_train, y_train, x_test, y_test``

    Raises
    ------
    ValueError
        Only one of ``data`` and ``labels``; bad files; a network that does not take
        64 values and no data.
    """
    if (data is None) != (labels is None):
        raise ValueError("--data and --labels go together")
    if data is None:
        if int(np.prod(net.input_shape)) != 64:
            raise ValueError(f"{net.name} takes input {net.input_shape}, not the 64 pixels "
                             f"of the digits: give --data and --labels")
        d = digits("flat")
        shape = net.input_shape
        return {k: v.reshape(len(v), *shape) if k.startswith("x") else v for k, v in d.items()}
    x = load_samples(data, net)
    try:
        y = np.load(os.fspath(labels), allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read labels {labels!r}: {e}") from None
    if y.shape != (len(x),) or y.dtype.kind not in "iu":
        raise ValueError(f"labels {labels!r} must be {len(x)} integers, not {y.dtype} {y.shape}")
    y = y.astype(np.int64)
    train, held = split(y)
    return {"x_train": x[train], "y_train": y[train], "x_test": x[held], "y_test": y[held]}
