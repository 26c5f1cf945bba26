"""hw.resources: DSP allocation, block RAM counts and the refusal of what does not fit.

The block RAM counts are Yosys 0.70's own (``synth_ecp5`` / ``synth_ice40`` on single
memories of these shapes, ``stat``), not re-derived from the formula under test.
"""

import subprocess
import sys
import types

import pytest

from hw.config import AcceleratorConfig
from hw.resources import DEVICES, ResourceError, block_rams, fitting_depths, plan, requant_units
from sim.harness import ROOT

# (family, words, lanes, lane bits, per-lane write enables) -> blocks, measured with Yosys.
YOSYS_BLOCKS = [
    ("ecp5", 8192, 16, 8, True, 64),
    ("ecp5", 8192, 16, 8, False, 60),
    ("ecp5", 8192, 8, 8, True, 32),
    ("ecp5", 8192, 4, 8, True, 16),
    ("ecp5", 8192, 2, 8, True, 8),
    ("ecp5", 4096, 16, 8, True, 32),
    ("ecp5", 2048, 16, 8, False, 15),
    ("ecp5", 128, 16, 70, True, 32),
    ("ecp5", 128, 8, 70, True, 16),
    ("ecp5", 128, 2, 70, True, 4),
    ("ecp5", 4, 1, 70, True, 2),
    ("ecp5", 1000, 3, 8, True, 2),
    ("ecp5", 24, 5, 8, False, 2),
    ("ecp5", 2048, 16, 70, True, 128),
    ("ecp5", 512, 64, 8, False, 15),
    ("ice40", 64, 2, 70, True, 9),
    ("ice40", 1024, 2, 8, True, 4),
    ("ice40", 1024, 2, 8, False, 4),
    ("ice40", 10, 1, 32, False, 2),
    ("ice40", 3000, 4, 8, True, 24),
]


@pytest.mark.parametrize("family,words,lanes,bits,granular,blocks", YOSYS_BLOCKS)
def test_block_rams_match_yosys(family, words, lanes, bits, granular, blocks):
    assert block_rams(family, words, lanes, bits, granular) == blocks


def test_8x8_on_85f_all_dsp():
    p = AcceleratorConfig(rows=8, cols=8, device="ecp5-85f").resources
    assert p.dsp == 8 * 8 + 4 * 8
    assert set(p.pe_multipliers) == set(p.requant_multipliers) == {"ecp5"}
    assert p.buffers == {"act": 32, "wgt": 32, "par": 16, "out": 32} and p.bram == 112


def test_16x16_on_85f_fills_the_dsp_blocks_then_logic():
    depths = fitting_depths(types.SimpleNamespace(
        **{**AcceleratorConfig().to_dict(), "device": "ecp5-85f"}))
    c = AcceleratorConfig(rows=16, cols=16, device="ecp5-85f", **depths)
    p = c.resources
    assert p.dsp == DEVICES["ecp5-85f"].dsp == 156
    # 256 + 4 * 16 products do not fit 156 blocks: one requantizer unit per two columns
    # (8 units of 4 partial products) first, then PEs in row-major order.
    assert p.requant_multipliers == ("ecp5",) * 32
    assert p.to_dict()["requant_units"] == 8
    # On ECP5 the PE products in logic are built in carry chains.
    assert p.pe_multipliers == ("ecp5",) * 124 + ("carry",) * 132
    assert p.to_dict()["dsp"]["logic_multipliers"] == {"pe_8x8": 132, "requantizer_16x16": 0}
    assert p.bram <= 208


@pytest.mark.parametrize("budget", [0, 1, 5, 40, 1000])
def test_explicit_dsp_budget(budget):
    p = AcceleratorConfig(rows=4, cols=4, dsp_budget=budget).resources
    # Four units (16 partial products) only when the budget also holds the 16 PEs.
    requant = 16 if budget >= 16 + 16 else 8
    assert len(p.requant_multipliers) == requant
    assert p.dsp == min(budget, 16 + requant)
    assert p.requant_multipliers.count("dsp") == min(budget, requant)
    assert p.pe_multipliers.count("dsp") == max(0, min(budget - requant, 16))
    assert set(p.pe_multipliers + p.requant_multipliers) <= {"dsp", "logic"}


def test_no_device_no_limits():
    p = AcceleratorConfig(rows=3, cols=5).resources
    assert p.dsp == 15 + 20 and p.buffers is None
    assert p.to_dict()["dsp"]["controller"] == 0


def test_over_budget_is_refused_with_the_numbers():
    with pytest.raises(ResourceError, match=r"^block RAM: the buffers need 220 DP16KD "
                                            r"\(act 64, wgt 64, par 32, out 60\) but "
                                            r"ecp5-85f has 208; reduce"):
        AcceleratorConfig(rows=16, cols=16, device="ecp5-85f")
    with pytest.raises(ResourceError, match=r"the --bram budget has 100"):
        AcceleratorConfig(rows=8, cols=8, device="ecp5-85f", bram_budget=100)


@pytest.mark.parametrize("size,device", [(16, "ecp5-85f"), (16, "ecp5-45f"), (16, "ecp5-25f"),
                                         (8, "ecp5-25f"), (4, "ecp5-12f"), (2, "ecp5-12f")])
def test_fitting_depths_fit(size, device):
    fields = {**AcceleratorConfig(rows=size, cols=size).to_dict(), "device": device}
    depths = fitting_depths(types.SimpleNamespace(**fields))
    assert plan(types.SimpleNamespace(**{**fields, **depths})).bram <= DEVICES[device].bram
    # Each depth is as the default or halved (the host's tiling stays power-of-two).
    for key, depth in depths.items():
        assert fields[key] % depth == 0 and (fields[key] // depth).bit_count() == 1


def build(*args):
    return subprocess.run([sys.executable, "-m", "hw.build", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_build_refuses_over_budget_in_one_line(tmp_path):
    result = build("--pe", "16x16", "--device", "ecp5-85f", "--act-depth", "4096",
                   "--out", str(tmp_path / "never"))
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "block RAM: the buffers need 220 DP16KD" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["--device", "xc7a35t"], ["--dsp", "-1"],
                                  ["--bram", "10"]])
def test_build_bad_budget_arguments(args, tmp_path):
    result = build("--pe", "2x2", *args, "--out", str(tmp_path / "never"))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


SPRAM = AcceleratorConfig(rows=2, cols=2, device="ice40-up5k", act_depth=16, wgt_depth=16,
                          par_depth=2, out_depth=16)


def test_up5k_puts_activations_and_weights_in_spram():
    p = SPRAM.resources
    assert p.spram == {"act": 2, "wgt": 2}
    assert p.buffers["act"] == p.buffers["wgt"] == 0
    assert [p.buffer_ram(name) for name in ("act", "wgt", "par", "out")] == [
        "spram", "spram", "block", "block"]
    assert p.to_dict()["spram"]["used"] == 4


@pytest.mark.parametrize(("rows", "cols", "budget", "units"), [
    (4, 4, 32, 4), (4, 4, 31, 2), (4, 4, 28, 2), (8, 8, 96, 8), (8, 8, 95, 4),
    (5, 3, None, 3), (1, 1, 0, 1), (2, 7, 0, 4)])
def test_requantizer_units_halve_when_the_pes_would_spill_into_logic(rows, cols, budget, units):
    assert requant_units(rows, cols, budget) == units
    p = AcceleratorConfig(rows=rows, cols=cols, dsp_budget=budget).resources
    assert p.to_dict()["requant_units"] == units


def test_4x4_on_25f_has_no_logic_products():
    p = AcceleratorConfig(rows=4, cols=4, device="ecp5-25f").resources
    assert p.requant_multipliers == ("ecp5",) * 8 and p.pe_multipliers == ("ecp5",) * 16


def test_up5k_requantizer_shares_a_unit_and_gives_the_pes_its_dsp_blocks():
    p = SPRAM.resources
    assert p.requant_multipliers == ("dsp",) * 4 and p.pe_multipliers == ("dsp",) * 4
    assert p.dsp == 8 and p.to_dict()["requant_units"] == 1
    wide = AcceleratorConfig(rows=1, cols=3, device="ice40-up5k", act_depth=16,
                             wgt_depth=16, par_depth=2, out_depth=16).resources
    assert len(wide.requant_multipliers) == 8 and wide.pe_multipliers == ("logic",) * 3
    for device in ("ecp5-85f", None):
        p = AcceleratorConfig(rows=2, cols=3, device=device).resources
        assert len(p.requant_multipliers) == 12 and p.to_dict()["requant_units"] == 3


def test_requantizer_pipeline_follows_the_family():
    assert SPRAM.resources.requant_pipeline == "compact"
    assert SPRAM.resources.to_dict()["requant_pipeline"] == "compact"
    for device in ("ecp5-85f", "ecp5-25f", None):
        p = AcceleratorConfig(rows=2, cols=2, device=device).resources
        assert p.requant_pipeline == "deep"


def test_spram_buffers_compute_the_same(monkeypatch):
    # One single-ported memory per bank: the results, and loads into the other bank while a
    # COMPUTE reads one, are as with the dual-ported block RAM buffers.
    from tests.hw import test_controller

    test_controller.test_compute_matches_golden(SPRAM)
    monkeypatch.setattr(test_controller, "TINY", SPRAM)
    test_controller.test_interlock_and_double_buffering(1, False)
    test_controller.test_interlock_and_double_buffering(1, True)


@pytest.mark.parametrize("device, size, slices", [
    # A second response slice on ECP5 and without a device (simulation), none to spare on
    # the UP5K; a third in the controller on ECP5 with the chain drain (> 64 PEs).
    ("ecp5-85f", 2, 2), ("ecp5-85f", 8, 2), ("ecp5-85f", 9, 3), ("ecp5-85f", 16, 3),
    ("ecp5-25f", 2, 2), ("ecp5-25f", 9, 3), (None, 2, 2), (None, 16, 2),
    ("ice40-up5k", 2, 1)])
def test_response_slices_per_family(device, size, slices):
    p = AcceleratorConfig(rows=size, cols=size, device=device, act_depth=64, wgt_depth=64,
                          out_depth=64).resources
    assert p.response_slices == slices and p.to_dict()["response_slices"] == slices
    assert (p.drain == "chain") == (size * size > 64)


@pytest.mark.parametrize("device, size", [("ecp5-85f", 16), ("ecp5-85f", 8),
                                          ("ice40-up5k", 2), (None, 16)])
def test_host_relay_only_on_request(device, size):
    depths = dict(act_depth=256, wgt_depth=256, out_depth=256) if device else {}
    p = AcceleratorConfig(rows=size, cols=size, device=device, **depths).resources
    assert p.host_relay == 0 and p.to_dict()["host_relay_stages"] == 0
    q = AcceleratorConfig(rows=size, cols=size, device=device, host_relay=2, **depths).resources
    assert q.host_relay == 2 and q.to_dict()["host_relay_stages"] == 2


@pytest.mark.parametrize("bad", [-1, 17, 1.5, True, "4"])
def test_host_relay_refuses_bad_values(bad):
    with pytest.raises(ValueError, match="host_relay must be an integer in 0..16"):
        AcceleratorConfig(rows=2, cols=2, host_relay=bad)


@pytest.mark.parametrize("device, rows, cols, columns", [
    ("ecp5-85f", 16, 16, True), ("ecp5-85f", 9, 8, True), ("ecp5-85f", 8, 8, False),
    ("ecp5-25f", 8, 8, False), ("ice40-up5k", 9, 8, False), (None, 16, 16, False)])
def test_fifo_columns_on_ecp5_with_the_chain_drain(device, rows, cols, columns):
    # plan() of the fields, as fitting_depths does: a 9x8 does not fit the UP5K's block RAM.
    fields = vars(AcceleratorConfig(rows=2, cols=2, device=device, act_depth=64,
                                    wgt_depth=64, out_depth=64))
    p = plan(types.SimpleNamespace(**{**fields, "rows": rows, "cols": cols}))
    assert p.fifo_columns == columns == (p.drain == "chain" and device is not None
                                         and device.startswith("ecp5"))
    assert p.to_dict()["array_fifo_columns"] == columns
