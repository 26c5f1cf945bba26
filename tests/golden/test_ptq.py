"""golden.ptq: range setting, weight quantization, transforms, AdaRound, bias correction,
the emitted integer network against float accuracy and against LiteRT, and the CLI."""

import io

import numpy as np
import pytest

from golden.nets import INPUT, load
from golden.nets.data import digits
from golden.nets.train import accuracy as float_accuracy
from golden.ptq import calibrate as cal
from golden.ptq.__main__ import main
from golden.ptq.adaround import adaround, adaround_layer, layer_problem, rectified_sigmoid
from golden.ptq.bias_correction import correct_bias, mean_error
from golden.ptq.progress import Progress
from golden.ptq.quantizer import (
    Config,
    QuantModel,
    accuracy,
    calibrate,
    layer_sqnr,
    prepare,
    quantize_model,
)
from golden.ptq.transforms import (
    absorb_high_bias,
    equalization_pairs,
    equalize,
    fold_batch_norm,
)
from golden.ptq.weights import dequantize_weights, quantize_weights, weight_scale
from golden.quant import asymmetric_params, dequantize, quantize
from golden.tflite_io import load_tflite, to_tflite_bytes

from .netbuild import litert_run


@pytest.fixture(scope="module")
def cnn_data():
    d = digits("image")
    return load("cnn"), cal.calibration_set(d["x_train"], 256), d["x_test"], d["y_test"]


@pytest.fixture(scope="module")
def mlp_data():
    d = digits("flat")
    return load("mlp"), cal.calibration_set(d["x_train"], 256), d["x_test"], d["y_test"]


def rel_diff(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


# -- range setting ---------------------------------------------------------------------


def fq_error(v, lo, hi):
    s, z = asymmetric_params(lo, hi)
    return float(((dequantize(quantize(v, s, z), s, z) - v) ** 2).sum())


def test_minmax_ema_percentile_ranges():
    rng = np.random.default_rng(0)
    batches = [rng.normal(1.0, 1.0, 1000) for _ in range(4)]
    lo, hi = cal.minmax_range(batches)
    assert lo == min(b.min() for b in batches) and hi == max(b.max() for b in batches)
    # Widened to hold 0.
    assert cal.minmax_range([np.array([2.0, 3.0])]) == (0.0, 3.0)
    ema_lo, ema_hi = batches[0].min(), batches[0].max()
    for b in batches[1:]:
        ema_lo = 0.9 * ema_lo + 0.1 * b.min()
        ema_hi = 0.9 * ema_hi + 0.1 * b.max()
    np.testing.assert_allclose(cal.ema_range(batches), (ema_lo, ema_hi), rtol=1e-12)
    v = np.concatenate(batches)
    np.testing.assert_allclose(cal.percentile_range(batches, 99.0),
                               (np.percentile(v, 1.0), np.percentile(v, 99.0)))
    relu = [np.maximum(b, 0) for b in batches]
    assert cal.percentile_range(relu)[0] == 0.0


def test_mse_and_kl_clip_heavy_tails():
    rng = np.random.default_rng(1)
    v = np.concatenate([rng.laplace(0, 1, 20000), [60.0, -55.0]])
    lo, hi = cal.mse_range([v])
    assert -55.0 < lo < 0 < hi < 60.0
    assert fq_error(v, lo, hi) < fq_error(v, -55.0, 60.0)
    # Non-negative (ReLU-like) data: KL uses 255 levels on [0, T], T well below the outlier.
    relu = np.concatenate([np.maximum(rng.normal(0, 1, 50000), 0), [40.0]])
    klo, khi = cal.kl_range([relu])
    assert klo == 0.0 and 2.0 < khi < 10.0
    # Signed data: a symmetric threshold, intersected with the data range.
    slo, shi = cal.kl_range([np.concatenate([rng.normal(0, 1, 50000), [-30.0, 25.0]])])
    assert slo == -shi and 2.0 < shi < 10.0


def test_range_estimators_reject_bad_input():
    with pytest.raises(ValueError, match="method must be"):
        cal.estimate_range("entropy", [np.ones(3)])
    with pytest.raises(ValueError, match="finite"):
        cal.minmax_range([np.array([np.nan])])
    with pytest.raises(ValueError, match="momentum"):
        cal.ema_range([np.ones(3)], momentum=1.0)
    with pytest.raises(ValueError, match="calibration data"):
        cal.collect(load("mlp"), np.zeros((0, 64)), [INPUT])


def test_calibration_set_is_fixed_and_from_training_data():
    x = np.arange(100)[:, None]
    a = cal.calibration_set(x, 10)
    np.testing.assert_array_equal(a, cal.calibration_set(x, 10))
    assert len(np.unique(a)) == 10
    assert len(cal.calibration_set(x, 1000)) == 100


# -- weights -----------------------------------------------------------------------


@pytest.mark.parametrize("bits", [8, 6, 4, 3])
def test_weight_scales_and_codes(bits):
    rng = np.random.default_rng(bits)
    w = rng.normal(0, 1, (6, 3, 3, 5)) * rng.uniform(0.1, 2, (6, 1, 1, 1))
    qmax = 2 ** (bits - 1) - 1
    s = weight_scale(w, 0, bits, "channel")
    np.testing.assert_allclose(s, np.abs(w).reshape(6, -1).max(axis=1) / qmax, rtol=1e-6)
    assert s.dtype == np.float64 and np.all(s == s.astype(np.float32))
    codes = quantize_weights(w, s, 0, bits)
    assert codes.dtype == np.int8 and codes.max() == qmax and codes.min() >= -qmax
    st = weight_scale(w, 0, bits, "tensor")
    assert st.shape == (1,)
    # Per-channel never does worse than per-tensor; MSE never worse than min-max.
    err = {k: ((dequantize_weights(quantize_weights(w, sc, 0, bits), sc, 0) - w) ** 2).sum()
           for k, sc in (("c", s), ("t", st),
                         ("mse", weight_scale(w, 0, bits, "channel", "mse")))}
    assert err["c"] <= err["t"] and err["mse"] <= err["c"]
    # Depthwise weights carry their channels on axis 3.
    assert weight_scale(w, 3, bits, "channel").shape == (5,)


def test_weight_options_are_checked():
    w = np.ones((2, 3))
    with pytest.raises(ValueError, match="bits must be"):
        weight_scale(w, 0, 9)
    with pytest.raises(ValueError, match="granularity"):
        weight_scale(w, 0, 8, "group")
    with pytest.raises(ValueError, match="method"):
        weight_scale(w, 0, 8, "tensor", "kl")


# -- transforms --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_bn_fold_and_cle_keep_float_outputs(name):
    net = load(name)
    x = digits("image" if name == "cnn" else "flat")["x_test"]
    folded = fold_batch_norm(net)
    assert not any(n.kind == "bn" for n in folded.nodes)
    assert rel_diff(folded(x), net(x)) < 1e-5
    eq = equalize(folded)
    assert rel_diff(eq(x), net(x)) < 1e-5
    pairs = equalization_pairs(folded)
    assert pairs
    moved = 0.0
    for a, b, _ in pairs:
        wa, wb = eq.node(a).params["w"], eq.node(b).params["w"]
        c = wa.shape[3] if eq.node(a).kind == "dwconv" else wa.shape[0]
        r1 = np.abs(np.moveaxis(wa, 3 if eq.node(a).kind == "dwconv" else 0, 0)).reshape(
            c, -1).max(axis=1)
        wb = wb.reshape(wb.shape[0], -1, c) if eq.node(b).kind == "fc" else wb
        r2 = np.abs(wb).reshape(-1, c).max(axis=0)
        np.testing.assert_allclose(r1, r2, rtol=1e-6, err_msg=f"{a} -> {b}")
        moved = max(moved, rel_diff(wa, folded.node(a).params["w"]))
    assert moved > 0.1


def test_fold_refuses_a_lone_batch_norm():
    net = load("mlp")
    bn = net.node("bn1")
    bn.inputs = [INPUT]
    net.nodes = [bn]
    with pytest.raises(ValueError, match="batch norm must follow"):
        fold_batch_norm(net)


def test_high_bias_absorption():
    net = load("mlp")
    # Shift the first batch norm so that its pre-activations sit well above 0.
    net.node("bn1").params["beta"] = net.node("bn1").params["beta"] + 4.0
    x = digits("flat")["x_test"]
    folded = fold_batch_norm(net)
    absorbed = absorb_high_bias(folded)
    drop = folded.node("fc1").params["b"] - absorbed.node("fc1").params["b"]
    assert np.all(drop >= 0) and drop.max() > 1.0
    # relu(x - c) = relu(x) - c wherever x >= c, which is nearly always: the outputs
    # move only for the few samples with a pre-activation below c.
    y0, y1 = folded(x), absorbed(x)
    assert np.abs(y1 - y0).mean() < 1e-3 * np.abs(y0).mean()
    assert np.mean(y1.argmax(axis=1) == y0.argmax(axis=1)) >= 0.995
    assert absorbed.node("fc1").options["preact"]["mean"].max() < \
        folded.node("fc1").options["preact"]["mean"].max()


# -- bias correction and AdaRound ------------------------------------------------------


def test_bias_correction_reduces_mean_error(cnn_data):
    net, calib_x, x, _ = cnn_data
    prepared = prepare(net)
    model = QuantModel(prepared, calibrate(prepared, calib_x, "minmax", stream=None), 4,
                       "tensor")
    before = mean_error(model, x)
    correct_bias(model, calib_x, stream=None)
    after = mean_error(model, x)
    for layer in before:
        assert np.abs(after[layer]).mean() < 0.5 * np.abs(before[layer]).mean(), layer


def test_adaround_reduces_reconstruction_error(cnn_data):
    net, calib_x, _, _ = cnn_data
    prepared = prepare(net)
    ranges = calibrate(prepared, calib_x[:128], "minmax", stream=None)
    model = QuantModel(prepared, ranges, 4, "channel")
    nearest = {k: v.copy() for k, v in model.codes.items()}
    errors = adaround(model, calib_x[:128], iterations=150, stream=None)
    for layer, (before, after) in errors.items():
        assert after < before, layer
        codes = model.codes[layer]
        assert codes.dtype == np.int8 and np.abs(codes).max() <= 7
        # Learned rounding stays within one step of nearest rounding.
        assert np.abs(codes.astype(int) - nearest[layer]).max() <= 1
    assert any(np.any(model.codes[k] != nearest[k]) for k in nearest)


def test_adaround_soft_rounding_converges(cnn_data):
    net, calib_x, _, _ = cnn_data
    prepared = prepare(net)
    model = QuantModel(prepared, calibrate(prepared, calib_x[:128], "minmax", stream=None),
                       4, "channel")
    node = prepared.node("c2")
    _, qacts = model.simulate(calib_x[:128], keep=True)
    _, facts = prepared.forward(calib_x[:128], keep=True)
    prob = layer_problem(model, node, qacts[node.inputs[0]], facts["c2"])
    _, h = adaround_layer(prob, 4)
    assert np.mean((h > 0.01) & (h < 0.99)) < 0.05
    h, dh = rectified_sigmoid(np.array([-10.0, 0.0, 10.0]))
    np.testing.assert_allclose(h, [0.0, 0.5, 1.0])
    assert dh[0] == dh[2] == 0.0 and dh[1] > 0


# -- the integer network -----------------------------------------------------------------


def test_emitted_network_layout(cnn_data):
    net, calib_x, _, _ = cnn_data
    model = quantize_model(net, calib_x, Config("minmax", "channel", 5), stream=None)
    network = model.to_network()
    t = {tt.name: tt for tt in network.tensors}
    assert [op.kind for op in network.ops] == [
        "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD", "MAX_POOL_2D", "CONV_2D",
        "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED"]
    dw = t["dw1/weights"]
    assert dw.data.dtype == np.int8 and dw.quant.axis == 3 and dw.quant.scale.size == 16
    for name in ("c1", "dw1", "pw1", "c2", "fc"):
        w, b = t[f"{name}/weights"], t[f"{name}/bias"]
        assert np.abs(w.data).max() <= 15 and np.all(w.quant.zero_point == 0)
        assert b.data.dtype == np.int32
        s_in = t[network.tensors[next(op.inputs[0] for op in network.ops
                                      if network.tensors[op.outputs[0]].name == name)].name]
        np.testing.assert_allclose(b.quant.scale, s_in.quant.scale[0] * w.quant.scale)
    # Pooling and reshape share their input's parameters; activations are int8 per tensor.
    assert t["pool"].quant.scale[0] == t["add"].quant.scale[0]
    assert t["flat"].quant.zero_point[0] == t["gap"].quant.zero_point[0]


@pytest.mark.parametrize("method", cal.METHODS)
def test_int8_per_channel_within_half_a_percent_of_float(cnn_data, method):
    net, _, x, y = cnn_data
    calib_x = cal.calibration_set(digits("image")["x_train"], 512)
    network = quantize_model(net, calib_x, Config(method, "channel", 8),
                             stream=None).to_network()
    assert accuracy(network, x, y) >= float_accuracy(net, x, y) - 0.005


def test_low_bit_transforms_beat_naive_per_tensor(mlp_data):
    net, calib_x, x, y = mlp_data
    naive = quantize_model(net, calib_x, Config("minmax", "tensor", 3), stream=None)
    best = quantize_model(net, calib_x, Config("minmax", "channel", 3, cle=True,
                                               bias_correction=True, adaround=True,
                                               adaround_iterations=300), stream=None)
    a_naive = accuracy(naive.to_network(), x, y)
    a_best = accuracy(best.to_network(), x, y)
    assert a_best > a_naive + 0.03
    sqnr_naive = layer_sqnr(naive, naive.to_network(), x)
    sqnr_best = layer_sqnr(best, best.to_network(), x)
    assert all(sqnr_best[k] > sqnr_naive[k] for k in sqnr_naive)


def compare_with_litert(network, x):
    """Every activation of the exported model in LiteRT against Network.run."""
    model = to_tflite_bytes(network)
    xq = network.quantize(network.inputs[0], x)
    golden = network.run(xq)
    ref = litert_run(model, {network.inputs[0]: xq})
    kinds = {op.outputs[0]: op.kind for op in network.ops}
    fc = {}
    for i, kind in kinds.items():
        diff = np.abs(golden[i].astype(int) - ref[i].astype(int))
        if kind == "FULLY_CONNECTED":
            fc[network.tensors[i].name] = diff
        else:
            np.testing.assert_array_equal(golden[i], ref[i], err_msg=network.tensors[i].name)
    return fc, model


@pytest.mark.parametrize("cfg", [Config("kl", "channel", 8),
                                 Config("minmax", "tensor", 4, cle=True, bias_correction=True)],
                         ids=["w8-channel-kl", "w4-tensor-cle-bc"])
def test_cnn_export_matches_litert(cnn_data, cfg, tmp_path):
    net, calib_x, x, _ = cnn_data
    network = quantize_model(net, calib_x, cfg, stream=None).to_network()
    fc, model = compare_with_litert(network, x)
    # LiteRT's reference FULLY_CONNECTED rescales in double floating point (ARITHMETIC.md).
    assert fc["fc"].max() <= 1
    if cfg.bits == 8:
        assert fc["fc"].mean() < 0.01
    # The file round-trips through the importer to the same network.
    path = tmp_path / "cnn.tflite"
    path.write_bytes(model)
    back = load_tflite(path)
    xq = network.quantize(0, x[:32])
    np.testing.assert_array_equal(back.run(xq, preserve=False)[back.outputs[0]],
                                  network.run(xq, preserve=False)[network.outputs[0]])


def test_mlp_export_matches_litert(mlp_data):
    net, calib_x, x, _ = mlp_data
    network = quantize_model(net, calib_x, Config("mse", "channel", 8),
                             stream=None).to_network()
    fc, _ = compare_with_litert(network, x)
    # Only the first layer sees identical inputs; later ones inherit earlier +-1s.
    assert fc["fc1"].max() <= 1 and fc["fc1"].mean() < 0.01
    assert all(d.mean() < 0.02 for d in fc.values())


# -- configuration and command line -----------------------------------------------------


def test_config_is_checked():
    with pytest.raises(ValueError, match="calib must be"):
        Config("entropy")
    with pytest.raises(ValueError, match="bits must be"):
        Config(bits=1)
    with pytest.raises(ValueError, match="bits must be"):
        Config(bits=True)
    with pytest.raises(ValueError, match="granularity"):
        Config(granularity="layer")


@pytest.mark.parametrize("argv, message", [
    (["--bits", "9"], "--bits: must be an integer from 2 to 8, not '9'"),
    (["--bits", "four"], "--bits: must be an integer from 2 to 8"),
    (["--calib", "entropy"], "--calib: invalid choice"),
    (["--model", "resnet"], "--model: must be one of cnn, mlp or a float32 .tflite file"),
    (["--weights", "group"], "--weights: invalid choice"),
])
def test_cli_bad_options_are_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_cli_quantizes_and_exports(capsys, tmp_path):
    out = tmp_path / "mlp.tflite"
    assert main(["--model", "mlp", "--calib", "ema", "--weights", "tensor", "--bits", "6",
                 "--calib-samples", "128", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "float top-1 98.00%" in text and "int top-1" in text
    net = load_tflite(out)
    assert np.abs(net.tensors[1].data).max() <= 31


@pytest.mark.parametrize("argv, message", [
    (["--out", "{tmp}/missing/m.tflite"], "--out: directory '{tmp}/missing' does not exist"),
    (["--out", ""], "--out: must be a file path, not ''"),
    (["--out", "/proc/x"], "--out: cannot write in '/proc'"),
    (["--out", "{tmp}"], "--out: '{tmp}' is a directory"),
    (["--out", "{tmp}/mine.tflite"], "--out: '{tmp}/mine.tflite' exists; pass --force"),
    (["--save-input", "{tmp}/mine.tflite"], "--save-input: '{tmp}/mine.tflite' exists"),
    (["--out", "{tmp}/a", "--save-input", "{tmp}/a"], "--save-input: must differ from --out"),
    (["--save-input-samples", "0"], "--save-input-samples: must be a positive integer"),
    (["--report", "--report-path", "/proc/x"], "--report-path: cannot write in '/proc'"),
])
def test_cli_outputs_are_checked_before_work(capsys, tmp_path, argv, message):
    """Refused at once (one line, exit 2), before any calibration or report run."""
    (tmp_path / "mine.tflite").write_text("mine")
    argv = [a.format(tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as e:
        main(["--model", "mlp", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(tmp=tmp_path) in err
    assert (tmp_path / "mine.tflite").read_text() == "mine"


def test_cli_saves_a_sample_input_golden_runs(capsys, tmp_path):
    """--save-input: int8 held-out digits in the model's input shape; golden.run takes them
    and the model classifies them as the labels say (mostly); --force overwrites."""
    from golden.nets.data import digits
    from golden.run import main as run_main

    out, x_path = tmp_path / "mlp.tflite", tmp_path / "x.npy"
    argv = ["--model", "mlp", "--calib-samples", "128", "--out", str(out),
            "--save-input", str(x_path), "--save-input-samples", "20"]
    assert main(argv) == 0
    x = np.load(x_path)
    net = load_tflite(out)
    assert x.dtype == np.int8 and x.shape == (20, *net.tensors[net.inputs[0]].shape)
    assert run_main([str(out), "--input", str(x_path), "--out-dir", str(tmp_path / "o")]) == 0
    y = np.load(tmp_path / "o" / f"{net.outputs[0]}.npy")
    labels = digits("flat")["y_test"][:20]
    assert np.mean(y.reshape(20, -1).argmax(axis=1) == labels) >= 0.9
    with pytest.raises(SystemExit):
        main(argv)
    assert main([*argv, "--force"]) == 0


def test_progress_bar_writes_one_line_off_a_terminal():
    s = io.StringIO()
    with Progress(4, "task", s) as bar:
        for _ in range(4):
            bar.update()
    assert s.getvalue().count("\n") == 1 and "4/4" in s.getvalue()
    with pytest.raises(ValueError, match="total"):
        Progress(0, "task")


@pytest.mark.slow
def test_report_reproduces_committed_file(tmp_path):
    from pathlib import Path

    path = tmp_path / "ptq-results.md"
    assert main(["--report", "--report-path", str(path)]) == 0
    committed = Path(__file__).resolve().parents[2] / "docs" / "ptq-results.md"
    assert path.read_text() == committed.read_text()
