"""Float reference networks for the PTQ flow: layers, graph, definitions, training."""

from .model import INPUT, FloatNet, Node
from .zoo import MODELS, build, load

__all__ = ["INPUT", "FloatNet", "Node", "MODELS", "build", "load"]
