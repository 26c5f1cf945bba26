"""Empirical bias correction (Nagel et al. 2019, section 4.2, the empirical variant).

Quantizing weights (and activations) shifts the mean of a layer's outputs: ``E[W~ x~]``
is not ``E[W x]``. Layer by layer, in network order, the correction runs the calibration
samples through the float network and through the quantized network as corrected so far,
and adds the per-channel mean difference of the pre-activations to the quantized layer's
bias, so each layer sees the errors of the layers before it already corrected.
"""

import sys

from .progress import Progress

__all__ = ["preactivations", "mean_error", "correct_bias"]


def preactivations(model, x):
    """Pre-activation outputs of every weighted layer, float and quantized.

    Parameters
    ----------
    model : golden.ptq.quantizer.QuantModel
    x : ndarray, shape (N, *input_shape)

    Returns
    -------
    float_pre, quant_pre : dict of str -> ndarray
        Per weighted layer, shape (N, ..., channels). The float ones run the prepared
        float network; the quantized ones run the layer's quantized weights and bias on
        its input inside the fake-quantized network.
    """
    _, facts = model.net.forward(x, keep=True)
    _, qacts = model.simulate(x, keep=True)
    float_pre, quant_pre = {}, {}
    for n in model.weighted():
        float_pre[n.name] = model.net.pre_activation(n, [facts[n.inputs[0]]])
        quant_pre[n.name] = model.layer(n, qacts[n.inputs[0]], pre=True)
    return float_pre, quant_pre


def mean_error(model, x):
    """Per weighted layer, the per-channel mean of float minus quantized pre-activations.

    Returns
    -------
    dict of str -> ndarray, shape (channels,)
    """
    float_pre, quant_pre = preactivations(model, x)
    return {k: _channel_mean(float_pre[k] - quant_pre[k]) for k in float_pre}


def _channel_mean(d):
    return d.reshape(-1, d.shape[-1]).mean(axis=0)


def correct_bias(model, x, stream=sys.stderr):
    """Correct the biases of ``model`` in place, in network order, on samples ``x``.

    Parameters
    ----------
    model : golden.ptq.quantizer.QuantModel
    x : ndarray, shape (N, *input_shape)
        Calibration samples.
    stream : file or None
        Progress output.

    Returns
    -------
    model
    """
    if len(x) == 0:
        raise ValueError("calibration data must not be empty")
    layers = model.weighted()
    _, facts = model.net.forward(x, keep=True)
    with Progress(len(layers), "bias correction", stream) as bar:
        for n in layers:
            _, qacts = model.simulate(x, keep=True)
            want = model.net.pre_activation(n, [facts[n.inputs[0]]])
            got = model.layer(n, qacts[n.inputs[0]], pre=True)
            model.bias[n.name] = model.bias[n.name] + _channel_mean(want - got)
            bar.update()
    return model


