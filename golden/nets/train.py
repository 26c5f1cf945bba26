"""Train the reference networks on digits, deterministically, and write their weights.

``python -m golden.nets.train`` retrains both networks from their fixed seeds and
overwrites ``golden/data/{cnn,mlp}.npz``; ``--check`` instead compares a fresh training
run with the committed weights. Pure NumPy: softmax cross-entropy, Adam, L2 weight decay
on weights, a cosine learning-rate schedule, shuffles from a seeded PCG64 generator.
"""

import argparse
import sys

import numpy as np

from . import zoo
from .data import digits

__all__ = ["CONFIG", "softmax_cross_entropy", "Adam", "train", "accuracy", "main"]

# Per model: epochs, batch size, peak learning rate, L2 on weights (not biases / BN).
CONFIG = {
    "cnn": {"epochs": 60, "batch": 32, "lr": 1e-2, "l2": 1e-4},
    "mlp": {"epochs": 60, "batch": 32, "lr": 3e-3, "l2": 1e-4},
}


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy and its gradient.

    Parameters
    ----------
    logits : ndarray, shape (B, C)
    labels : ndarray of int, shape (B,)

    Returns
    -------
    loss : float
    dlogits : ndarray, shape (B, C)
    """
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    b = logits.shape[0]
    loss = -logp[np.arange(b), labels].mean()
    d = np.exp(logp)
    d[np.arange(b), labels] -= 1.0
    return float(loss), d / b


class Adam:
    """Adam (Kingma & Ba 2015) over a dict of parameter arrays, updated in place.

    ``rates``, optional, maps each key of ``params`` to a multiplier of the learning rate
    (quantization-aware training moves quantizer parameters at their own scale).
    """

    def __init__(self, params, rates=None, beta1=0.9, beta2=0.999, eps=1e-8):
        self.params, self.rates = params, rates
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, grads, lr):
        """One update with learning rate ``lr``; ``grads`` has the keys of ``params``."""
        self.t += 1
        c1 = 1.0 - self.beta1**self.t
        c2 = 1.0 - self.beta2**self.t
        for k, g in grads.items():
            self.m[k] = self.beta1 * self.m[k] + (1.0 - self.beta1) * g
            self.v[k] = self.beta2 * self.v[k] + (1.0 - self.beta2) * g * g
            rate = lr if self.rates is None else lr * self.rates[k]
            self.params[k] -= rate * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)


def accuracy(net, x, y, batch=256):
    """Top-1 accuracy (fraction) of a float network on ``x`` (B, ...) against labels ``y``."""
    hits = 0
    for i in range(0, len(x), batch):
        hits += int((net(x[i : i + batch]).argmax(axis=1) == y[i : i + batch]).sum())
    return hits / len(x)


def train(name, *, epochs=None, seed=0, log=None):
    """Train ``name`` from its seeded initialisation on the digits training split.

    Parameters
    ----------
    name : {"cnn", "mlp"}
    epochs : int, optional
        Overrides the configured epoch count (tests train for one or two).
    seed : int
        Seeds both the initialisation and the shuffles.
    log : callable, optional
        Called with one line of text per epoch.

    Returns
    -------
    FloatNet
    """
    if name not in CONFIG:
        raise ValueError(f"model must be one of {tuple(CONFIG)}, not {name!r}")
    cfg = dict(CONFIG[name])
    if epochs is not None:
        if int(epochs) < 1:
            raise ValueError(f"epochs must be >= 1, not {epochs!r}")
        cfg["epochs"] = int(epochs)
    data = digits("image" if name == "cnn" else "flat")
    x, y = data["x_train"], data["y_train"]
    net = zoo.build(name, seed)
    keys = net.trainable()
    params = {k: net.node(k[0]).params[k[1]] for k in keys}
    decay = {k for k in keys if k[1] == "w"}
    opt = Adam(params)
    rng = np.random.default_rng(seed + 1)
    steps = cfg["epochs"] * -(-len(x) // cfg["batch"])
    t = 0
    for epoch in range(cfg["epochs"]):
        order = rng.permutation(len(x))
        total = 0.0
        for i in range(0, len(x), cfg["batch"]):
            idx = order[i : i + cfg["batch"]]
            out, acts = net.forward(x[idx], train=True)
            loss, dout = softmax_cross_entropy(out, y[idx])
            grads = net.backward(acts, dout)
            for k in decay:
                grads[k] = grads[k] + cfg["l2"] * params[k]
            lr = 0.5 * cfg["lr"] * (1.0 + np.cos(np.pi * t / steps))
            opt.step(grads, lr)
            t += 1
            total += loss * len(idx)
        if log is not None:
            log(f"{name} epoch {epoch + 1:3d}/{cfg['epochs']}  loss {total / len(x):.4f}")
    return net


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m golden.nets.train",
        description="Train the digits reference networks (deterministic, pure NumPy) and "
                    "write their weights to golden/data/<model>.npz.")
    parser.add_argument("--model", choices=(*zoo.MODELS, "all"), default="all",
                        help="which network to train (default: all)")
    parser.add_argument("--check", action="store_true",
                        help="retrain and compare with the committed weights instead of "
                             "writing them; exit 1 if they differ")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    args = parser.parse_args(argv)
    names = zoo.MODELS if args.model == "all" else (args.model,)
    log = None if args.quiet else (lambda s: print(s, file=sys.stderr))
    status = 0
    for name in names:
        net = train(name, log=log)
        data = digits("image" if name == "cnn" else "flat")
        acc_train = accuracy(net, data["x_train"], data["y_train"])
        acc_test = accuracy(net, data["x_test"], data["y_test"])
        print(f"{name}: train {100 * acc_train:.2f}%  held-out {100 * acc_test:.2f}%")
        path = zoo.weights_path(name)
        if args.check:
            committed = zoo.load(name).state()
            same = all(np.array_equal(v, committed[k]) for k, v in net.state().items())
            print(f"{name}: {'matches' if same else 'DIFFERS FROM'} {path}")
            status |= not same
        else:
            net.save(path)
            print(f"{name}: wrote {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
