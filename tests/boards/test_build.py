"""``boards.build``: board and array checks before any tool runs, the resource model, and
the report read back from nextpnr's own report and the Yosys log."""

import json
import subprocess
import sys

import pytest

from boards import build
from boards.platforms import BOARDS, board


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "boards.build", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("args,message", [
    (["--board", "nosuch", "--pe", "1x1"], "board must be one of icebreaker, ulx3s-12f"),
    (["--board", "icebreaker", "--pe", "4x4"], "a 4x4 array does not fit icebreaker: block "
                                               "RAM: the buffers need 30 SB_RAM40_4K"),
    # 4800 + 120 per PE + 80 per PE product in logic: the 8 SB_MAC16 go to the requantizer's
    # two datapath units (one per two columns on iCE40), the 9 PE products are logic.
    (["--board", "icebreaker", "--pe", "3x3"], "a 3x3 array needs about 6600 LUTs but the "
                                               "iCE40UP5K of icebreaker has 5280"),
    (["--board", "ulx3s-85f", "--pe", "64x64"], "a 64x64 array needs about"),
    (["--board", "icebreaker", "--pe", "1x1", "--freq", "400"], "iCE40 PLL output must be"),
    (["--board", "ulx3s-85f", "--pe", "2x2", "--freq", "50", "--baud", "3300000"],
     "--baud must be at most 3000000"),
    (["--board", "ulx3s-85f", "--pe", "2x2", "--freq", "40"], "misses 3e+06 baud"),
    (["--board", "icebreaker", "--pe", "3by3"], "--pe must look like RxC"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, message):
    r = run_cli(*args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_model_fits_and_orders_candidates():
    assert build.candidates(board("icebreaker")) == [(1, 1)]
    shapes = build.candidates(board("ulx3s-85f"))
    assert shapes[0][0] * shapes[0][1] >= 256
    assert all(a[0] * a[1] >= b[0] * b[1] for a, b in zip(shapes, shapes[1:], strict=False))
    for name in BOARDS:
        b = board(name)
        for r, c in build.candidates(b)[:3]:
            config = build.board_config(b, r, c)
            assert config.host_width == 8
            need = build.estimate(b, config)
            assert need["bram"] <= b.device.brams and need["dsp"] <= b.device.dsps


YOSYS_TAIL = """
2.59. Printing statistics.

=== design hierarchy ===

        +----------Count including submodules.
        |
       12 cells
        8   SB_MAC16
        4   SB_RAM40_4K
     5607 submodules
      908   SB_CARRY
      141   SB_DFF
      268   SB_DFFE
     2539   SB_LUT4
"""


def test_report_reads_nextpnr_and_yosys(tmp_path):
    b = board("icebreaker")
    config = build.board_config(b, 1, 1)
    nextpnr = {"utilization": {"ICESTORM_LC": {"used": 4090, "available": 5280},
                               "ICESTORM_RAM": {"used": 22, "available": 30},
                               "ICESTORM_DSP": {"used": 8, "available": 8},
                               "ICESTORM_SPRAM": {"used": 0, "available": 4}},
               "fmax": {"$PACKER_GND_NET_$glb_clk": {"achieved": 386.0, "constraint": 12.0},
                        "clk": {"achieved": 24.08, "constraint": 24.0015}}}
    report = build.read_report(b, config, tmp_path, nextpnr, YOSYS_TAIL, target=24.0,
                               baud=3_000_000, divisor=8, seconds=1.0)
    assert report["fmax_mhz"] == 24.08 and report["timing_met"]
    res = report["resources"]
    assert res["LC"] == {"used": 4090, "total": 5280}
    assert res["LUT"] == {"used": 2539, "total": 5280}
    assert res["FF"] == {"used": 409, "total": 5280}
    assert res["DSP"] == {"used": 8, "total": 8}
    assert report["peak_gops"] == pytest.approx(2 * 24e6 / 1e9)
    assert "DSP 8/8" in build.summary(report)
    json.dumps(report)

