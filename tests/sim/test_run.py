"""``sim.run``: a whole random int8 model, CONV_2D / FULLY_CONNECTED on Verilator, each
rtl(layer) == golden(layer) on the golden model's own input of that layer."""

import subprocess
import sys

import numpy as np
import pytest

from golden.tflite_io import load_tflite, save_tflite
from hw.config import AcceleratorConfig
from sim import bench
from sim import run as simrun
from tests.golden.netbuild import Builder, random_batch

# The "4x4" build of test_accel_rtl.py, so the (cached) Verilator build is shared.
CONFIG = AcceleratorConfig(rows=4, cols=4, act_depth=64, wgt_depth=64, par_depth=2,
                           out_depth=32)
CONFIG_ARGS = ["--pe", "4x4", "--act-depth", "64", "--wgt-depth", "64", "--par-depth", "2",
               "--out-depth", "32"]
SHAPE = (6, 6, 3)
RTL_LAYERS = 4


def random_model(rng):
    """conv 3x3 SAME on an input with a nonzero zero point, depthwise, per-tensor 1x1 conv,
    ADD, max pool, strided conv with ReLU6, RESHAPE, FC; every K fits the 4x4 build."""
    b = Builder(rng)
    x = b.input(SHAPE, zp=-37)
    c1 = b.conv2d(x, 6, kernel=3, padding="SAME", activation="RELU")
    dw = b.depthwise(c1, kernel=3)
    c2 = b.conv2d(dw, 6, kernel=1, padding="VALID", per_channel=False)
    pool = b.pool("MAX_POOL_2D", b.add(c1, c2))
    c3 = b.conv2d(pool, 5, kernel=2, stride=2, padding="SAME", activation="RELU6")
    return b.build([b.fully_connected(b.reshape(c3, (20,)), 10)]).validate()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(model path, input path, network, batch) written once for the module."""
    rng = np.random.default_rng(2024)
    d = tmp_path_factory.mktemp("simrun")
    net = random_model(rng)
    x = random_batch(rng, SHAPE, 4)
    save_tflite(net, d / "model.tflite")
    np.save(d / "x.npy", x)
    return d / "model.tflite", d / "x.npy", load_tflite(d / "model.tflite"), x


def deep_model(rng):
    """K beyond the 4x4 build's 64-word banks: a 3x3 conv over 8 channels (K = 72) and a
    fully connected layer over 80 values, with a pool between them on the host."""
    b = Builder(rng)
    x = b.input((4, 4, 8), zp=11)
    c = b.conv2d(x, 5, kernel=3, padding="SAME", activation="RELU")
    fc = b.fully_connected(b.reshape(c, (80,)), 6)
    return b.build([fc]).validate()


@pytest.fixture(scope="module")
def build_dir():
    return bench.build(CONFIG)


def test_run_model_exact(model, build_dir):
    _, _, net, x = model
    rows = simrun.run_model(net, x, CONFIG, limit=3, build_dir=build_dir)
    assert [r.kind for r in rows] == [op.kind for op in net.ops]
    rtl = [r for r in rows if r.rtl]
    assert [r.kind for r in rtl] == ["CONV_2D"] * 3 + ["FULLY_CONNECTED"]
    for r in rtl:
        assert r.exact, simrun.format_table(CONFIG, rows)
        assert r.mismatches == 0 and r.compute > 0 and r.total > r.compute
    assert (rtl[0].m, rtl[0].k, rtl[0].n) == (3 * 36, 27, 6)   # batch 3 x 6 x 6 pixels


def test_chain_in_chunks_exact(model, build_dir):
    """Chained, two chunks: every tensor (host ops included) equals the golden model's,
    and the chunks add up."""
    _, _, net, x = model
    rows = simrun.run_model(net, x, CONFIG, limit=3, batch=2, chain=True,
                            build_dir=build_dir)
    assert [r.kind for r in rows] == [op.kind for op in net.ops]
    assert all(r.mismatches == 0 and not r.error for r in rows), \
        simrun.format_table(CONFIG, rows, chain=True)
    rtl = [r for r in rows if r.rtl]
    assert all(r.exact for r in rtl) and len(rtl) == RTL_LAYERS
    assert (rtl[0].m, rtl[0].k, rtl[0].n) == (3 * 36, 27, 6)


def test_split_k_model_exact(build_dir):
    """Layers whose K exceeds a bank run as partial COMPUTEs, per layer and chained."""
    rng = np.random.default_rng(77)
    net = deep_model(rng)
    x = random_batch(rng, (4, 4, 8), 2)
    for chain in (False, True):
        rows = simrun.run_model(net, x, CONFIG, limit=2, chain=chain, build_dir=build_dir)
        rtl = [r for r in rows if r.rtl]
        assert [(r.k, r.k_chunks) for r in rtl] == [(72, 2), (80, 2)]
        assert all(r.exact and r.computes > 2 and r.utilization for r in rtl), \
            simrun.format_table(CONFIG, rows, chain=chain)
        assert all(r.mismatches == 0 for r in rows)


def test_cli_exact(model, build_dir):
    path, xpath, _, _ = model
    done = subprocess.run([sys.executable, "-m", "sim.run", str(path), "--input", str(xpath),
                           "--limit", "2", *CONFIG_ARGS], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rtl_lines = [ln for ln in lines if ln.split()[1:2] in (["CONV_2D"], ["FULLY_CONNECTED"])]
    assert len(rtl_lines) == RTL_LAYERS
    assert all(ln.split()[-2:] == ["yes", "0"] for ln in rtl_lines), done.stdout
    assert sum(ln.endswith(" on the host") for ln in lines) == 4
    assert f"{RTL_LAYERS} of {RTL_LAYERS} RTL layers exact" in done.stdout


def test_mismatch_exits_1(model, build_dir, monkeypatch, capsys):
    """A wrong multiplier on the RTL side only must show up as mismatches and exit 1."""
    path, xpath, _, _ = model
    real = simrun.output_multipliers

    def off_by_one(*args, **kwargs):
        m0, shift = real(*args, **kwargs)
        return m0 - (m0 >> 4), shift

    monkeypatch.setattr(simrun, "output_multipliers", off_by_one)
    monkeypatch.setattr(bench, "build", lambda config: build_dir)
    assert simrun.main([str(path), "--input", str(xpath), *CONFIG_ARGS]) == 1
    out, err = capsys.readouterr()
    assert " NO " in out and "MISMATCH" in err
    # Chained, the wrong outputs flow on: the host ops after the first layer differ too.
    assert simrun.main([str(path), "--input", str(xpath), "--chain", *CONFIG_ARGS]) == 1
    out, err = capsys.readouterr()
    host = [ln for ln in out.splitlines() if " on the host " in ln]
    assert host and any(ln.split()[-2:-1] == ["NO"] for ln in host), out
    assert "MISMATCH" in err


def test_cli_garbage_model(tmp_path):
    bad = tmp_path / "garbage.tflite"
    bad.write_bytes(b"\x00not a flatbuffer at all" * 4)
    np.save(tmp_path / "x.npy", np.zeros((1, *SHAPE), np.int8))
    done = subprocess.run([sys.executable, "-m", "sim.run", str(bad), "--input",
                           str(tmp_path / "x.npy")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and "error" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize("extra, message", [
    (["--batch", "0"], "--batch: must be a positive integer"),
    (["--out-depth", "3"], "op 0 CONV_2D: out_depth=3 cannot hold one tile of R=4 rows"),
    (["--pe", "4by4"], "--pe must look like RxC"),
])
def test_cli_refused(model, capsys, extra, message):
    path, xpath, _, _ = model
    with pytest.raises(SystemExit) as exc:
        simrun.main([str(path), "--input", str(xpath), *CONFIG_ARGS, *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1


def test_wrong_input_shape(model, tmp_path, capsys):
    path, _, _, _ = model
    np.save(tmp_path / "x.npy", np.zeros((1, 5, 5, 3), np.int8))
    with pytest.raises(SystemExit) as exc:
        simrun.main([str(path), "--input", str(tmp_path / "x.npy"), *CONFIG_ARGS])
    assert exc.value.code == 2
    assert "needs int8 of shape (N, 6, 6, 3)" in capsys.readouterr().err


def test_sizes_checked_before_allocating(model):
    _, _, net, _ = model
    with pytest.raises(ValueError, match=r"op 0 CONV_2D on 1000000000 sample\(s\): .*needs "
                                         r"about .*lower --batch"):
        simrun._check_sizes(net, 10 ** 9)
