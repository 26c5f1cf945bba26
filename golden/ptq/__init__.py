"""Post-training quantization of the float reference networks into golden int8 networks.

See ``docs/ptq.md``. The usual entry point is :func:`quantize_model` with a
:class:`Config`; ``python -m golden.ptq`` is the command line.
"""

from .quantizer import Config, QuantModel, accuracy, prepare, quantize_model

__all__ = ["Config", "QuantModel", "accuracy", "prepare", "quantize_model"]
