"""The quantization-aware training loop: fine-tune a :class:`QATModel` on labelled data.

Softmax cross-entropy on the fake-quantized logits, Adam with a cosine learning-rate
schedule, shuffles from a seeded PCG64 generator, batch norm statistics frozen after the
warm-up. Weights, biases and batch-norm parameters move with the learning rate ``lr``;
a quantizer parameter moves with ``lr`` times its initial magnitude (Adam's steps do not
scale with the parameter, and a step size of 0.01 is not small for a scale of 0.01);
LSQ+ offsets, in code units, with ``lr * OFFSET_LR``.
"""

import sys

import numpy as np

from ..nets.train import Adam, softmax_cross_entropy
from ..ptq.progress import Progress

__all__ = ["LR", "OFFSET_LR", "default_epochs", "train"]

LR = 1e-3
OFFSET_LR = 10.0


def default_epochs(weight_bits):
    """Training epochs the command line and the report use: 10, or 20 at 3-bit and 30 at
    2-bit weights, where the network has the most to relearn."""
    return {2: 30, 3: 20}.get(weight_bits, 10)
_QUANTIZER = ("ws", "s", "alpha")


def train(model, x, y, *, epochs, batch=32, lr=LR, freeze_bn=0, seed=0,
          stream=sys.stderr):
    """Fine-tune ``model`` in place.

    Parameters
    ----------
    model : golden.qat.QATModel
    x, y : ndarray
        Training samples (N, *input_shape) and integer labels (N,).
    epochs : int
    batch : int
    lr : float
        Peak learning rate (cosine decay to 0 over all steps).
    freeze_bn : int
        Epochs of batch-norm warm-up (batch statistics) before the running statistics
        freeze. Default 0: a trained float network's running statistics are already the
        right ones, and batch statistics of a low-bit network move them away (see
        ``docs/qat.md``).
    seed : int
        Seeds the shuffles.
    stream : file or None
        Progress bar.

    Returns
    -------
    list of float
        Mean training loss per epoch.
    """
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, not {epochs!r}")
    if int(batch) < 1:
        raise ValueError(f"batch must be >= 1, not {batch!r}")
    rates = {}
    for k, v in model.params.items():
        if k[1] in _QUANTIZER:
            rates[k] = float(np.mean(np.abs(v)))
        elif k[1] == "z":
            rates[k] = OFFSET_LR
        else:
            rates[k] = 1.0
    opt = Adam(model.params, rates)
    rng = np.random.default_rng(seed)
    steps_per_epoch = -(-len(x) // batch)
    steps = epochs * steps_per_epoch
    losses, t = [], 0
    label = f"qat {model.method} W{model.weight_bits}A{model.act_bits}"
    with Progress(steps, label, stream) as bar:
        for epoch in range(epochs):
            if epoch >= freeze_bn:
                model.freeze_batch_norm()
            order = rng.permutation(len(x))
            total = 0.0
            for i in range(0, len(x), batch):
                idx = order[i : i + batch]
                out = model.forward(x[idx], train=True)
                loss, dout = softmax_cross_entropy(out.reshape(len(idx), -1), y[idx])
                grads = model.backward(dout.reshape(out.shape))
                opt.step(grads, 0.5 * lr * (1.0 + np.cos(np.pi * t / steps)))
                for k in grads:
                    # A scale or clip at or below 0 would divide by zero or flip the grid.
                    if k[1] in _QUANTIZER:
                        np.maximum(model.params[k], 1e-8, out=model.params[k])
                t += 1
                total += loss * len(idx)
                bar.update()
            losses.append(total / len(x))
    model.freeze_batch_norm()
    return losses
