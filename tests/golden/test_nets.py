"""golden.nets: layer gradients against finite differences, the graph, training, weights."""

import numpy as np
import pytest

from golden.nets import INPUT, FloatNet, Node, layers, load, zoo
from golden.nets.data import digits, split
from golden.nets.train import CONFIG, accuracy, main, softmax_cross_entropy, train


def numeric_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        hi = f()
        x[i] = old - eps
        lo = f()
        x[i] = old
        g[i] = (hi - lo) / (2 * eps)
    return g


def tiny_net(rng):
    """Every node kind, small enough for finite differences."""
    def bn(name, inp, c, act):
        return Node(name, "bn", [inp], {"gamma": rng.uniform(0.5, 1.5, c),
                                        "beta": rng.normal(0, 0.1, c),
                                        "mean": np.zeros(c), "var": np.ones(c)},
                    {"eps": 1e-3, "momentum": 0.9, "activation": act})
    nodes = [
        Node("c1", "conv", [INPUT], {"w": rng.normal(0, 0.5, (3, 3, 3, 2)),
                                     "b": rng.normal(0, 0.1, 3)},
             {"stride": (1, 1), "padding": "SAME"}),
        bn("bn1", "c1", 3, "RELU"),
        Node("dw", "dwconv", ["bn1"], {"w": rng.normal(0, 0.5, (1, 3, 3, 3)),
                                       "b": rng.normal(0, 0.1, 3)},
             {"stride": (2, 2), "padding": "SAME", "activation": "RELU"}),
        Node("c2", "conv", ["bn1"], {"w": rng.normal(0, 0.5, (3, 1, 1, 3)),
                                     "b": rng.normal(0, 0.1, 3)},
             {"stride": (2, 2), "padding": "VALID"}),
        Node("add", "add", ["dw", "c2"], options={"activation": "RELU"}),
        Node("mp", "maxpool", ["add"], options={"size": (1, 1)}),
        Node("ap", "avgpool", ["mp"], options={"size": (3, 3)}),
        Node("flat", "reshape", ["ap"]),
        Node("fc", "fc", ["flat"], {"w": rng.normal(0, 0.5, (4, 3)), "b": rng.normal(0, 0.1, 4)}),
    ]
    return FloatNet("tiny", (5, 5, 2), nodes)


def test_backward_matches_finite_differences():
    rng = np.random.default_rng(1)
    net = tiny_net(rng)
    x = rng.normal(size=(3, 5, 5, 2))
    labels = np.array([0, 1, 3])
    running = {k: v.copy() for k, v in net.state().items() if k.endswith(("mean", "var"))}

    def loss():
        # A training pass moves the running statistics: restore them each time.
        for k, v in running.items():
            node, param = k.split(".")
            net.node(node).params[param] = v.copy()
        return softmax_cross_entropy(net.forward(x, train=True)[0], labels)[0]

    out, acts = net.forward(x, train=True)
    grads = net.backward(acts, softmax_cross_entropy(out, labels)[1])
    assert set(grads) == set(net.trainable())
    for (node, param), g in grads.items():
        num = numeric_grad(loss, net.node(node).params[param])
        np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-7, err_msg=f"{node}.{param}")


def test_maxpool_gradient_and_conv_stride():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 4, 6, 3))
    y = layers.pool(x, (2, 3), "max")
    assert y.shape == (2, 2, 2, 3)
    dy = rng.normal(size=y.shape)
    num = numeric_grad(lambda: float((layers.pool(x, (2, 3), "max") * dy).sum()), x)
    np.testing.assert_allclose(layers.pool_backward(dy, x, (2, 3), "max"), num, atol=1e-7)
    # TFLite SAME padding puts the odd pixel after: 8 wide, kernel 3, stride 2 -> (0, 1).
    assert layers.same_padding(8, 3, 2) == (0, 1, 4)
    assert layers.conv_padding((1, 7, 7, 1), (3, 3), (1, 1), "VALID") == (((0, 0), (0, 0)), (5, 5))


def test_conv_matches_direct_sum():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 5, 4, 3))
    w = rng.normal(size=(4, 3, 3, 3))
    b = rng.normal(size=4)
    y = layers.conv2d(x, w, b, (1, 1), "SAME")
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.empty_like(y)
    for i in range(5):
        for j in range(4):
            ref[:, i, j] = np.einsum("bhwc,ohwc->bo", xp[:, i : i + 3, j : j + 3], w) + b
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    dw = rng.normal(size=(1, 3, 3, 3))
    yd = layers.depthwise_conv2d(x, dw, b[:3], (1, 1), "SAME")
    refd = sum(xp[:, i : i + 5, j : j + 4] * dw[0, i, j] for i in range(3) for j in range(3))
    np.testing.assert_allclose(yd, refd + b[:3], rtol=1e-12)


def test_bad_graphs_and_shapes_are_refused():
    with pytest.raises(ValueError, match="kind must be"):
        Node("x", "relu", [INPUT])
    with pytest.raises(ValueError, match="takes 2 inputs"):
        Node("a", "add", [INPUT])
    with pytest.raises(ValueError, match="activation must be"):
        Node("a", "add", [INPUT, INPUT], options={"activation": "TANH"})
    with pytest.raises(ValueError, match="not an earlier node"):
        FloatNet("n", (4,), [Node("r", "reshape", ["later"])])
    net = zoo.mlp()
    with pytest.raises(ValueError, match="input must have shape"):
        net(np.zeros((2, 8, 8, 1)))
    with pytest.raises(ValueError, match="keys differ"):
        net.load_state({"fc1.w": np.zeros((64, 64))})
    with pytest.raises(ValueError, match="model must be"):
        zoo.build("resnet")


def test_split_is_stratified_and_fixed():
    labels = np.repeat(np.arange(10), 20)
    train_idx, held = split(labels)
    assert np.intersect1d(train_idx, held).size == 0
    assert train_idx.size + held.size == labels.size
    np.testing.assert_array_equal(np.bincount(labels[held]), np.full(10, 5))
    np.testing.assert_array_equal(held, split(labels)[1])
    d = digits()
    assert d["x_train"].shape == (1347, 8, 8, 1) and d["x_test"].shape == (450, 8, 8, 1)
    assert d["x_train"].min() == 0.0 and d["x_train"].max() == 1.0


@pytest.mark.parametrize("name, floor", [("cnn", 0.975), ("mlp", 0.975)])
def test_committed_weights_are_accurate(name, floor):
    data = digits("image" if name == "cnn" else "flat")
    assert accuracy(load(name), data["x_test"], data["y_test"]) >= floor


def test_training_is_deterministic_and_learns():
    a = train("mlp", epochs=2)
    b = train("mlp", epochs=2)
    for k, v in a.state().items():
        np.testing.assert_array_equal(v, b.state()[k])
    data = digits("flat")
    assert accuracy(a, data["x_test"], data["y_test"]) > 0.8
    with pytest.raises(ValueError, match="epochs must be"):
        train("mlp", epochs=0)


@pytest.mark.slow
def test_retraining_reproduces_committed_weights():
    assert main(["--check", "--quiet"]) == 0


def test_config_covers_every_model():
    assert set(CONFIG) == set(zoo.MODELS)
