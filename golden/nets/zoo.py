"""The reference networks: a digits CNN with batch norm, a depthwise block and a residual
add, and an MLP with batch norm. Definitions, initialisation and the committed weights.

CNN on (8, 8, 1)::

    c1   conv 3x3  1->16  + bn1 + ReLU        (8, 8, 16) --+
    dw1  depthwise 3x3 16 + bn2 + ReLU        (8, 8, 16)   |
    pw1  conv 1x1 16->16  + bn3               (8, 8, 16)   |
    add  pw1 + c1 (residual)    + ReLU        (8, 8, 16) <-+
    pool max 2x2                              (4, 4, 16)
    c2   conv 3x3 16->32  + bn4 + ReLU        (4, 4, 32)
    gap  average 4x4                          (1, 1, 32)
    flat reshape                              (32,)
    fc   fully connected 32->10               (10,) logits

MLP on (64,)::

    fc1 64->64 + bn1 + ReLU,  fc2 64->32 + bn2 + ReLU,  fc3 32->10 logits
"""

from pathlib import Path

import numpy as np

from .model import INPUT, FloatNet, Node

__all__ = ["MODELS", "WEIGHTS_DIR", "cnn", "mlp", "build", "weights_path", "load"]

MODELS = ("cnn", "mlp")
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "data"
_BN = {"eps": 1e-3, "momentum": 0.9}


def _he(rng, shape, fan_in):
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)


def _bn(name, inp, c, activation):
    params = {"gamma": np.ones(c), "beta": np.zeros(c), "mean": np.zeros(c), "var": np.ones(c)}
    return Node(name, "bn", [inp], params, {**_BN, "activation": activation})


def _conv(rng, name, inp, cin, cout, k):
    w = _he(rng, (cout, k, k, cin), k * k * cin)
    return Node(name, "conv", [inp], {"w": w, "b": np.zeros(cout)},
                {"stride": (1, 1), "padding": "SAME"})


def _fc(rng, name, inp, k, n, activation="NONE"):
    return Node(name, "fc", [inp], {"w": _he(rng, (n, k), k), "b": np.zeros(n)},
                {"activation": activation})


def cnn(seed=0):
    """The digits CNN, randomly initialised (He normal, seeded)."""
    rng = np.random.default_rng(seed)
    nodes = [
        _conv(rng, "c1", INPUT, 1, 16, 3),
        _bn("bn1", "c1", 16, "RELU"),
        Node("dw1", "dwconv", ["bn1"], {"w": _he(rng, (1, 3, 3, 16), 9), "b": np.zeros(16)},
             {"stride": (1, 1), "padding": "SAME"}),
        _bn("bn2", "dw1", 16, "RELU"),
        _conv(rng, "pw1", "bn2", 16, 16, 1),
        _bn("bn3", "pw1", 16, "NONE"),
        Node("add", "add", ["bn3", "bn1"], options={"activation": "RELU"}),
        Node("pool", "maxpool", ["add"], options={"size": (2, 2)}),
        _conv(rng, "c2", "pool", 16, 32, 3),
        _bn("bn4", "c2", 32, "RELU"),
        Node("gap", "avgpool", ["bn4"], options={"size": (4, 4)}),
        Node("flat", "reshape", ["gap"]),
        _fc(rng, "fc", "flat", 32, 10),
    ]
    return FloatNet("cnn", (8, 8, 1), nodes)


def mlp(seed=0):
    """The digits MLP, randomly initialised (He normal, seeded)."""
    rng = np.random.default_rng(seed)
    nodes = [
        _fc(rng, "fc1", INPUT, 64, 64),
        _bn("bn1", "fc1", 64, "RELU"),
        _fc(rng, "fc2", "bn1", 64, 32),
        _bn("bn2", "fc2", 32, "RELU"),
        _fc(rng, "fc3", "bn2", 32, 10),
    ]
    return FloatNet("mlp", (64,), nodes)


def build(name, seed=0):
    """A freshly initialised network by name (one of ``MODELS``)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, not {name!r}")
    return cnn(seed) if name == "cnn" else mlp(seed)


def weights_path(name):
    """Where the committed trained weights of ``name`` live."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, not {name!r}")
    return WEIGHTS_DIR / f"{name}.npz"


def load(name):
    """The trained network ``name`` with the committed weights."""
    path = weights_path(name)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `python -m golden.nets.train`")
    return build(name).load(path)
