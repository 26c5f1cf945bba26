"""Quantization-aware training of the float networks into exact golden int8 networks.

See ``docs/qat.md``. :class:`QATModel` is the training graph, ``golden.qat.train.train``
the loop; ``python -m golden.qat`` is the command line.
"""

from .model import METHODS, QATModel

__all__ = ["METHODS", "QATModel"]
