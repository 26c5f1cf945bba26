"""golden.qat: the quantizers' gradients against finite differences, the training graph's
backward pass against finite differences, the training forward pass against the exported
golden integer network (bit for bit), the export against LiteRT, and the command line."""

import io
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest

import golden.qat.model as qat_model
import golden.qat.quantizers as Q
import golden.qat.report as report
from golden.nets import load
from golden.nets.source import labelled_data
from golden.nets.train import softmax_cross_entropy
from golden.ptq import calibrate as cal
from golden.ptq.quantizer import Config, accuracy, quantize_model
from golden.qat import QATModel
from golden.qat.__main__ import main as qat_main
from golden.qat.__main__ import parse_init
from golden.qat.train import train
from golden.tflite_io import load_tflite, to_tflite_bytes

from .netbuild import litert_run


def central_difference(f, x, h):
    return (f(x + h) - f(x - h)) / (2 * h)


# -- quantizers ------------------------------------------------------------------------
#
# A straight-through gradient is the exact gradient of the quantizer with its rounding
# residual round(u) - u held fixed. The finite differences below differentiate exactly
# that function, so they check the formulas (inside the grid and at both clipped ends).


def frozen_rounding(x, s, z, qmin, qmax, r):
    """``fake_quant`` with the rounding residual ``r`` frozen (and ``z`` not rounded):
    ``u + r`` on the grid, ``clip(u)`` off it."""
    u = x / s + z
    inside = (u >= qmin) & (u <= qmax)
    return s * (np.where(inside, u + r, np.clip(u, qmin, qmax)) - z)


@pytest.mark.parametrize("offset", [False, True])
def test_lsq_gradients_match_finite_differences(offset):
    rng = np.random.default_rng(0)
    qmin, qmax = -128 + 112, 127 - 112  # a 5-bit grid, values clipped at both ends
    x = rng.normal(0, 1.0, 500)
    s, z = 0.11, 0.3
    _, cache = Q.fake_quant(x, s, z, qmin, qmax)
    u, q, s32, zr = cache[:4]
    r = q - u  # the residual at the base point (q is clipped where u is outside)
    inside = (u >= qmin) & (u <= qmax)
    r = np.where(inside, r, 0.0)
    dout = rng.normal(size=x.shape)
    g = 0.37
    grads = Q.lsq_backward(dout, cache, g, offset=offset)

    def loss_s(sv):
        # The residual is frozen in code units; the zero point is the rounded one.
        return float(np.sum(dout * frozen_rounding(x, sv, zr, qmin, qmax, r)))

    h = 1e-7
    np.testing.assert_allclose(grads[1], g * central_difference(loss_s, s32, h), rtol=1e-5)
    dx = central_difference(
        lambda e: dout * frozen_rounding(x + e, s32, zr, qmin, qmax, r), 0.0, h) / 1.0
    np.testing.assert_allclose(grads[0], dx, atol=1e-6)
    if offset:
        def loss_z(zv):
            return float(np.sum(dout * frozen_rounding(x, s32, zv, qmin, qmax, r)))

        np.testing.assert_allclose(grads[2], g * central_difference(loss_z, zr, h), rtol=1e-5)
    assert 0.3 < inside.mean() < 0.95  # both the grid and its clipped ends are exercised


def test_lsq_per_channel_weight_gradients():
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.3, (6, 20))
    s = np.abs(rng.normal(0.1, 0.02, (6, 1)))
    _, cache = Q.fake_quant(w, s, 0.0, -3, 3)
    u, q, s32 = cache[:3]
    r = np.where((u >= -3) & (u <= 3), q - u, 0.0)
    dout = rng.normal(size=w.shape)
    _, ds = Q.lsq_backward(dout, cache, 1.0, axes=(1,))
    for c in range(6):
        def loss(sc, c=c):
            sv = s32.copy()
            sv[c] = sc
            return float(np.sum(dout * frozen_rounding(w, sv, 0.0, -3, 3, r)))

        np.testing.assert_allclose(ds[c, 0], central_difference(loss, s32[c, 0], 1e-7),
                                   rtol=1e-5)


def test_pact_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    x = np.maximum(rng.normal(1.0, 1.5, 400), 0.0)  # a ReLU output
    alpha = 2.0
    dout = rng.normal(size=x.shape)
    dx, dalpha = Q.pact_backward(dout, x, alpha)

    # PACT's estimator: the gradient of the clip y = min(x, alpha) (rounding straight
    # through, the step's dependence on alpha not followed, as in eq. 3 of the paper).
    def loss(a):
        return float(np.sum(dout * np.minimum(x, a)))

    np.testing.assert_allclose(dalpha, central_difference(loss, alpha, 1e-7), rtol=1e-6)
    np.testing.assert_array_equal(dx, dout * (x < alpha))


def test_fake_quant_rounds_zero_point_and_scale_like_the_file():
    out, cache = Q.fake_quant(np.array([0.0, 1.0, 100.0]), 0.1, 2.6, -8, 7)
    assert cache[3] == 3.0  # zero point rounded
    assert cache[2] == np.float64(np.float32(0.1))
    np.testing.assert_allclose(out, [0.0, cache[2] * 4, cache[2] * 4])


# -- the training graph ----------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_setup():
    net = load("mlp")
    d = labelled_data(net)
    return net, d, cal.calibration_set(d["x_train"], 128)


@pytest.fixture(scope="module")
def cnn_setup():
    net = load("cnn")
    d = labelled_data(net)
    return net, d, cal.calibration_set(d["x_train"], 128)


@pytest.mark.parametrize("method", ["lsq+", "pact"])
def test_backward_matches_finite_differences(monkeypatch, mlp_setup, method):
    """Every parameter's gradient (weights, biases, batch norm gamma / beta, scales,
    offsets, clips) with the rounding made the identity, where the straight-through
    gradients are exact derivatives (LSQ's divided by its gradient scale)."""
    net, d, calib = mlp_setup
    model = QATModel(net, method, 3, 3, calib)
    for k in model.params:  # narrow the ranges so that clipping happens
        if k[1] in ("ws", "s", "alpha"):
            model.params[k] *= 0.5
    model.freeze_batch_norm()
    identity = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
    monkeypatch.setattr(Q, "round_half_away", identity)
    monkeypatch.setattr(qat_model, "round_half_away", identity)
    # Scales rounded to float32 would make the differences steps of 1e-8.
    monkeypatch.setattr(Q, "as_float32", identity)
    monkeypatch.setattr(qat_model, "as_float32", identity)
    monkeypatch.setattr(QATModel, "_requantize", lambda *args: None)
    monkeypatch.setattr(qat_model, "PACT_L2", 0.0)
    x, y = d["x_train"][:24], d["y_train"][:24]

    def loss():
        return softmax_cross_entropy(model.forward(x), y)[0]

    out = model.forward(x, train=True)
    grads = model.backward(softmax_cross_entropy(out, y)[1])
    assert set(grads) == set(model.params)
    rng = np.random.default_rng(3)
    for key, p in model.params.items():
        scale = 1.0
        if key[1] in ("s", "z"):
            scale = model.act[key[0]]["grad_scale"]
        elif key[1] == "ws":
            scale = Q.lsq_grad_scale(model.params[key[0], "w"].size // p.size, model.wmax)
        for _ in range(3):
            i = tuple(int(rng.integers(0, n)) for n in p.shape)
            old = float(p[i])
            h = 1e-6 * max(1.0, abs(old))

            def at(v, i=i, p=p):
                p[i] = v
                return loss()

            fd = central_difference(at, old, h)
            p[i] = old
            assert grads[key][i] == pytest.approx(scale * fd, rel=1e-3, abs=1e-7), key


@pytest.mark.parametrize("method", ["ste", "lsq", "lsq+", "pact"])
def test_training_forward_is_the_exported_integer_network(cnn_setup, method):
    """After (short) training, the fake-quantized forward pass and the exported golden
    integer network give the same codes on every tensor, and LiteRT's reference kernels
    run the export with the same results (FULLY_CONNECTED +-1)."""
    net, d, calib = cnn_setup
    model = QATModel(net, method, 4, 3, calib)
    # One epoch of batch-norm warm-up on batch statistics, one frozen.
    train(model, d["x_train"][:96], d["y_train"][:96], epochs=2, freeze_bn=1, stream=None)
    assert model.frozen
    qm = model.export()
    network = qm.to_network()
    x = d["x_test"][:64]
    _, acts = model.forward(x, keep=True)
    xq = network.quantize(0, x)
    got = network.run(xq)
    names = {t.name: i for i, t in enumerate(network.tensors)}
    for la in model.layers:
        i = names[la.name]
        np.testing.assert_array_equal(network.dequantize(i, got[i]), acts[la.name],
                                      err_msg=la.name)
    # Weights within the 4-bit range, ReLU outputs on the 3-bit grid [120, 127].
    for la in model.layers:
        if la.kind in ("conv", "dwconv", "fc"):
            assert np.abs(qm.codes[la.name]).max() <= 7
        if la.activation == "RELU":
            assert got[names[la.name]].min() >= 120
            assert qm.act[la.name][1] == 120
    ref = litert_run(to_tflite_bytes(network), {0: xq})
    fc = names["fc"]
    for i, v in got.items():
        if network.tensors[i].data is None and i != fc:
            np.testing.assert_array_equal(v, ref[i].reshape(v.shape), err_msg=str(i))
    assert np.abs(got[fc].astype(int) - ref[fc].reshape(got[fc].shape)).max() <= 1


def test_batch_norm_statistics_freeze(cnn_setup):
    net, d, calib = cnn_setup
    model = QATModel(net, "ste", 8, 8, calib)
    before = model.stats["c1"]["mean"].copy()
    model.forward(d["x_train"][:32], train=True)
    moved = model.stats["c1"]["mean"].copy()
    assert not np.array_equal(before, moved)
    model.freeze_batch_norm()
    model.forward(d["x_train"][32:64], train=True)
    np.testing.assert_array_equal(model.stats["c1"]["mean"], moved)


def test_starts_from_a_ptq_result(mlp_setup):
    net, d, calib = mlp_setup
    ptq = quantize_model(net, calib, Config("mse", "channel", 4), stream=None)
    model = QATModel(net, "lsq", 4, 8, calib, init=ptq)
    # Nothing trained yet: the export is the PTQ network.
    a = accuracy(model.export().to_network(), d["x_test"], d["y_test"])
    assert a == accuracy(ptq.to_network(), d["x_test"], d["y_test"])


def test_model_options_are_checked(mlp_setup):
    net, _, calib = mlp_setup
    with pytest.raises(ValueError, match="method must be one of"):
        QATModel(net, "dorefa", 4, 4, calib)
    with pytest.raises(ValueError, match="bits must be an integer in"):
        QATModel(net, "lsq", 1, 4, calib)
    with pytest.raises(ValueError, match="bits must be an integer in"):
        QATModel(net, "lsq", 4, 9, calib)


def test_mlp_w4a4_trains_close_to_float(mlp_setup):
    net, d, calib = mlp_setup
    model = QATModel(net, "lsq+", 4, 4, calib)
    train(model, d["x_train"], d["y_train"], epochs=2, stream=None)
    acc = accuracy(model.export().to_network(), d["x_test"], d["y_test"])
    assert acc >= 0.95



# -- command line and report -----------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--weight-bits", "9"], "--weight-bits: must be an integer from 2 to 8, not '9'"),
    (["--act-bits", "1"], "--act-bits: must be an integer from 2 to 8, not '1'"),
    (["--method", "dorefa"], "--method: invalid choice"),
    (["--model", "resnet"], "--model: must be one of cnn, mlp or a float32 .tflite file"),
    (["--model", "missing.tflite"], "--model: no such file"),
    (["--epochs", "0"], "--epochs: must be a positive integer"),
    (["--lr", "2"], "--lr: must be a number in (0, 1)"),
    (["--init", "calib=magic"], "--init: calib must be one of"),
    (["--init", "cle,fast"], "--init: unknown item 'fast'"),
    (["--freeze-bn", "-1"], "--freeze-bn: must be a non-negative integer"),
])
def test_cli_bad_options_are_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        qat_main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_cli_refuses_outputs_and_data_before_training(capsys, tmp_path):
    existing = tmp_path / "m.tflite"
    existing.write_bytes(b"keep")
    for argv, message in [
        (["--out", str(tmp_path / "no" / "m.tflite")], "--out: directory"),
        (["--out", str(existing)], "exists; pass --force to overwrite it"),
        (["--out", str(existing), "--save-input", str(existing), "--force"],
         "--save-input: must differ from --out"),
        (["--report", "--report-path", str(tmp_path / "no" / "r.md")], "--report-path"),
    ]:
        with pytest.raises(SystemExit) as e:
            qat_main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
    assert qat_main(["--data", str(existing)]) == 2
    err = capsys.readouterr().err
    assert err == "golden.qat: error: --data and --labels go together\n"
    assert existing.read_bytes() == b"keep"


def test_cli_trains_and_exports(capsys, tmp_path):
    out = tmp_path / "mlp_w4a4.tflite"
    assert qat_main(["--model", "mlp", "--method", "pact", "--weight-bits", "4",
                     "--act-bits", "4", "--epochs", "1", "--calib-samples", "64",
                     "--out", str(out), "--save-input", str(tmp_path / "x.npy")]) == 0
    text = capsys.readouterr().out
    assert "mlp: float top-1 98.00%  int top-1" in text
    network = load_tflite(out)
    assert all(np.abs(network.tensors[op.inputs[1]].data).max() <= 7 for op in network.ops)
    # The printed accuracy is the exported file's.
    d = labelled_data(load("mlp"))
    printed = float(text.split("int top-1 ")[1].split("%")[0])
    assert printed == pytest.approx(100 * accuracy(network, d["x_test"], d["y_test"]),
                                    abs=0.005)
    xq = np.load(tmp_path / "x.npy")
    np.testing.assert_array_equal(xq, network.quantize(0, d["x_test"][:16]))


def test_cli_trains_an_imported_float_model_from_ptq(capsys, tmp_path):
    out = tmp_path / "cnn_w3a8.tflite"
    assert qat_main(["--model", "golden/data/cnn_float.tflite", "--method", "lsq",
                     "--weight-bits", "3", "--act-bits", "8", "--epochs", "1",
                     "--init", "calib=mse,weight-range=mse", "--calib-samples", "64",
                     "--out", str(out)]) == 0
    assert "cnn_float: float top-1 98.44%" in capsys.readouterr().out
    assert load_tflite(out).ops[0].kind == "CONV_2D"


def test_parse_init():
    cfg = parse_init("calib=kl, weight-range=mse,cle,bias-correction,adaround,"
                     "adaround-iterations=50", 3)
    assert cfg == Config("kl", "channel", 3, "mse", True, True, True, 50)
    with pytest.raises(ValueError, match="adaround-iterations must be an integer"):
        parse_init("adaround-iterations=x", 4)


def test_report_writes_tables_and_plots(monkeypatch, tmp_path):
    monkeypatch.setattr(report, "NETWORKS", ("mlp",))
    monkeypatch.setattr(report, "SETTINGS", ((4, 4),))
    monkeypatch.setattr(report, "METHODS", ("lsq",))
    monkeypatch.setattr(report, "PTQ_RECIPES", report.PTQ_RECIPES[:1])
    monkeypatch.setattr(report, "CALIB_SAMPLES", 64)
    monkeypatch.setattr(report, "EPOCHS", 1)
    path = tmp_path / "qat.md"
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        assert qat_main(["--report", "--report-path", str(path)]) == 0
    text = path.read_text()
    assert "| W4A4 |" in text and "![mlp: accuracy against bits](qat-mlp.png)" in text
    assert (tmp_path / "qat-mlp.png").read_bytes()[:4] == b"\x89PNG"


def test_imported_model_with_relu6_trains_exactly():
    """QAT on a float model written by hand (stride-2 VALID conv with ReLU6, depthwise,
    ADD, 1x1 average and 5x5 max pooling, FC on a 4-D tensor): the training forward pass
    is still the exported integer network, which LiteRT runs."""
    from golden.nets.tflite import from_float_tflite_bytes

    from .test_float_import import hand_model

    rng = np.random.default_rng(7)
    net = from_float_tflite_bytes(hand_model(rng))
    x = rng.uniform(-2, 2, (64, 12, 12, 3))
    y = net(x).argmax(axis=1)
    for method in ("lsq+", "pact"):
        model = QATModel(net, method, 3, 4, x[:32])
        train(model, x, y, epochs=1, batch=16, stream=None)
        network = model.export().to_network()
        _, acts = model.forward(x, keep=True)
        got = network.run(network.quantize(0, x))
        names = {t.name: i for i, t in enumerate(network.tensors)}
        for la in model.layers:
            i = names[la.name]
            np.testing.assert_array_equal(network.dequantize(i, got[i]), acts[la.name],
                                          err_msg=f"{method} {la.name}")
        relu6 = names[model.layers[0].name]
        s, z = network.tensors[relu6].quant.scale[0], network.tensors[relu6].quant.zero_point[0]
        assert z == 128 - 16 and got[relu6].min() >= z
        assert got[relu6].max() <= min(127, z + round(6 / s))
        ref = litert_run(to_tflite_bytes(network), {0: network.quantize(0, x)})
        out = network.outputs[0]
        assert np.abs(ref[out].reshape(got[out].shape) - got[out].astype(int)).max() <= 1
