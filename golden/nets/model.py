"""A float network as a small graph of named layers, with forward, backward and I/O.

The graph mirrors the integer network it becomes: every node is one TFLite operator
after batch-norm folding. Activations are fused into the node that produces them
(``options["activation"]``), as TFLite fuses them, so a ``conv`` followed by a ``bn``
carrying ``activation="RELU"`` folds into one CONV_2D with a fused ReLU.

Node kinds and their parameters (TFLite layouts):

========  ===========================================  ==================================
kind      params                                       options
========  ===========================================  ==================================
conv      w (O, KH, KW, I), b (O,)                     stride, padding, activation
dwconv    w (1, KH, KW, C), b (C,)                     stride, padding, activation
fc        w (N, K), b (N,)                             activation
bn        gamma, beta, mean, var (C,)                  eps, momentum, activation
add       --                                           activation
maxpool   --                                           size
avgpool   --                                           size
reshape   --                                           --   (flattens to (B, K))
========  ===========================================  ==================================
"""

import copy
from dataclasses import dataclass, field

import numpy as np

from . import layers as L

__all__ = ["KINDS", "INPUT", "Node", "FloatNet"]

KINDS = ("conv", "dwconv", "fc", "bn", "add", "maxpool", "avgpool", "reshape")
INPUT = "input"
_ARITY = {"add": 2}


@dataclass
class Node:
    """One layer: its output is named ``name``; ``inputs`` name other nodes or ``INPUT``."""

    name: str
    kind: str
    inputs: list
    params: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        if len(self.inputs) != _ARITY.get(self.kind, 1):
            raise ValueError(f"{self.name}: a {self.kind} node takes "
                             f"{_ARITY.get(self.kind, 1)} inputs, not {self.inputs!r}")
        act = self.options.get("activation", "NONE")
        if act not in L.ACTIVATIONS:
            raise ValueError(f"{self.name}: activation must be one of {L.ACTIVATIONS}, "
                             f"not {act!r}")

    @property
    def activation(self):
        return self.options.get("activation", "NONE")


class FloatNet:
    """A float network: nodes in topological order, the last one is the output.

    Parameters
    ----------
    name : str
    input_shape : tuple
        Shape of one sample, e.g. (8, 8, 1) (NHWC without the batch) or (64,).
    nodes : list of Node
        Topologically ordered; every input must name an earlier node or ``INPUT``.
    """

    def __init__(self, name, input_shape, nodes):
        seen = {INPUT}
        for n in nodes:
            if n.name in seen:
                raise ValueError(f"node name {n.name!r} is not unique")
            for i in n.inputs:
                if i not in seen:
                    raise ValueError(f"{n.name}: input {i!r} is not an earlier node")
            seen.add(n.name)
        self.name = name
        self.input_shape = tuple(input_shape)
        self.nodes = list(nodes)
        self._batch = {}

    @property
    def output(self):
        return self.nodes[-1].name

    def node(self, name):
        """The node called ``name``."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def consumers(self, name):
        """Nodes that read the output of ``name``, in order."""
        return [n for n in self.nodes if name in n.inputs]

    def copy(self):
        """A deep copy: transforms work on copies and never touch the trained weights."""
        return copy.deepcopy(self)

    # -- forward / backward ------------------------------------------------------------

    def check_input(self, x):
        """``x`` as float64, refused unless its shape is (B, *input_shape)."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"{self.name}: input must have shape (B, {self.input_shape}), "
                             f"not {x.shape}")
        return x

    def forward(self, x, *, train=False, keep=False):
        """Run the network.

        Parameters
        ----------
        x : ndarray, shape (B, *input_shape)
        train : bool
            Batch-norm nodes use batch statistics and update their running averages.
        keep : bool
            Return every node's output too.

        Returns
        -------
        y : ndarray, the output node's value, e.g. (B, 10) logits
        acts : dict of str -> ndarray
            Only when ``keep`` or ``train``: every node's output, plus ``INPUT``.
        """
        acts = {INPUT: self.check_input(x)}
        # Batch statistics of a training pass, which the backward pass needs.
        self._batch = {}
        for n in self.nodes:
            y = self.pre_activation(n, [acts[i] for i in n.inputs], train, self._batch)
            acts[n.name] = L.activate(y, n.activation)
        if keep or train:
            return acts[self.output], acts
        return acts[self.output]

    def __call__(self, x):
        return self.forward(x)

    @staticmethod
    def pre_activation(n, xs, train=False, batch=None):
        """Output of node ``n`` on inputs ``xs`` (list of arrays) before its activation.

        With ``train``, a batch norm uses and records (in ``batch``) batch statistics
        and updates its running averages.
        """
        p, o = n.params, n.options
        x = xs[0]
        if n.kind == "conv":
            return L.conv2d(x, p["w"], p["b"], o["stride"], o["padding"])
        if n.kind == "dwconv":
            return L.depthwise_conv2d(x, p["w"], p["b"], o["stride"], o["padding"])
        if n.kind == "fc":
            return L.fully_connected(x, p["w"], p["b"])
        if n.kind == "bn":
            if not train:
                return L.batch_norm_eval(x, p["gamma"], p["beta"], p["mean"], p["var"], o["eps"])
            y, mean, var = L.batch_norm_train(x, p["gamma"], p["beta"], o["eps"])
            m = o["momentum"]
            p["mean"] = m * p["mean"] + (1 - m) * mean
            p["var"] = m * p["var"] + (1 - m) * var
            batch[n.name] = (mean, var)
            return y
        if n.kind == "add":
            return xs[0] + xs[1]
        if n.kind in ("maxpool", "avgpool"):
            return L.pool(x, o["size"], n.kind[:3])
        return x.reshape(x.shape[0], -1)

    def backward(self, acts, dout):
        """Back-propagate ``dout`` (gradient of the loss w.r.t. the output) through a
        training forward pass.

        Parameters
        ----------
        acts : dict
            The second result of ``forward(x, train=True)``.
        dout : ndarray, shape of the output

        Returns
        -------
        grads : dict of (node name, param name) -> ndarray
        """
        grads = {}
        dacts = {self.output: dout}
        for n in reversed(self.nodes):
            dy = dacts.pop(n.name, None)
            if dy is None:
                continue
            dy = L.activate_backward(dy, acts[n.name], n.activation)
            xs = [acts[i] for i in n.inputs]
            p, o = n.params, n.options
            if n.kind == "conv":
                dx, grads[n.name, "w"], grads[n.name, "b"] = L.conv2d_backward(
                    dy, xs[0], p["w"], o["stride"], o["padding"])
                dxs = [dx]
            elif n.kind == "dwconv":
                dx, grads[n.name, "w"], grads[n.name, "b"] = L.depthwise_conv2d_backward(
                    dy, xs[0], p["w"], o["stride"], o["padding"])
                dxs = [dx]
            elif n.kind == "fc":
                dx, grads[n.name, "w"], grads[n.name, "b"] = L.fully_connected_backward(
                    dy, xs[0], p["w"])
                dxs = [dx]
            elif n.kind == "bn":
                mean, var = self._batch[n.name]
                dx, grads[n.name, "gamma"], grads[n.name, "beta"] = L.batch_norm_backward(
                    dy, xs[0], p["gamma"], mean, var, o["eps"])
                dxs = [dx]
            elif n.kind == "add":
                dxs = [dy, dy]
            elif n.kind in ("maxpool", "avgpool"):
                dxs = [L.pool_backward(dy, xs[0], o["size"], n.kind[:3])]
            else:
                dxs = [dy.reshape(xs[0].shape)]
            for i, dx in zip(n.inputs, dxs, strict=True):
                if i != INPUT:
                    dacts[i] = dacts[i] + dx if i in dacts else dx
        return grads

    # -- parameters ------------------------------------------------------------------

    def trainable(self):
        """(node, param) keys that the optimiser updates: weights, biases, BN gamma/beta."""
        return [(n.name, k) for n in self.nodes for k in n.params if k not in ("mean", "var")]

    def state(self):
        """Every parameter as a flat dict ``"node.param" -> ndarray`` (what the .npz holds)."""
        return {f"{n.name}.{k}": v for n in self.nodes for k, v in n.params.items()}

    def load_state(self, state):
        """Set every parameter from :meth:`state`-style keys; shapes and key sets must match."""
        mine = self.state()
        if set(state) != set(mine):
            raise ValueError(f"{self.name}: parameter keys differ: "
                             f"missing {sorted(set(mine) - set(state))}, "
                             f"unexpected {sorted(set(state) - set(mine))}")
        for key, v in state.items():
            if np.shape(v) != mine[key].shape:
                raise ValueError(f"{self.name}: {key} must have shape {mine[key].shape}, "
                                 f"not {np.shape(v)}")
            node, param = key.split(".")
            self.node(node).params[param] = np.array(v, dtype=np.float64)

    def save(self, path):
        """Write the parameters to a compressed .npz."""
        np.savez_compressed(path, **self.state())

    def load(self, path):
        """Read parameters written by :meth:`save`; returns ``self``."""
        with np.load(path) as f:
            self.load_state({k: f[k] for k in f.files})
        return self
