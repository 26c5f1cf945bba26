"""PLL divider search against the toolchain's own calculators (``icepll``, ``ecppll`` from
YoWASP), and the data-sheet ranges."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from boards.pll import ecp5_dividers, ice40_dividers


def _tool(name, *args, cwd=None):
    """Output of a YoWASP tool installed beside this interpreter."""
    exe = Path(sys.executable).parent / f"yowasp-{name}"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300,
                          check=True, cwd=cwd).stdout


@pytest.mark.parametrize("f_in,f_out", [(12, 30), (12, 48), (12, 21.5)])
def test_ice40_matches_icepll(f_in, f_out):
    out = _tool("icepll", "-i", str(f_in), "-o", str(f_out))
    want = {k: int(v) for k, v in re.findall(r"^(DIVR|DIVF|DIVQ|FILTER_RANGE):\s*(\d+)", out,
                                             re.M)}
    achieved = float(re.findall(r"F_PLLOUT:\s*([\d.]+) MHz \(achieved\)", out)[0])
    d = ice40_dividers(f_in, f_out)
    assert (d.input_div - 1, d.feedback_div - 1, d.output_div.bit_length() - 1,
            d.filter_range) == (want["DIVR"], want["DIVF"], want["DIVQ"],
                                want["FILTER_RANGE"])
    assert d.f_out == pytest.approx(achieved, abs=1e-3)


@pytest.mark.parametrize("f_in,f_out", [(25, 50), (25, 62.5), (48, 40)])
def test_ecp5_matches_ecppll(f_in, f_out, tmp_path):
    out = _tool("ecppll", "-i", str(f_in), "-o", str(f_out), "-f", "pll.v", cwd=tmp_path)
    field = dict(re.findall(r"^([\w ]+): ([\d.]+)", out, re.M))
    d = ecp5_dividers(f_in, f_out)
    assert d.f_out == pytest.approx(float(field["clkout0 frequency"]), abs=1e-3)
    assert (d.input_div, d.feedback_div, d.output_div) == (
        int(field["Refclk divisor"]), int(field["Feedback divisor"]),
        int(field["clkout0 divisor"]))
    assert 400 <= d.f_vco <= 800


def test_out_of_range():
    with pytest.raises(ValueError, match="iCE40 PLL output must be in 16..275 MHz"):
        ice40_dividers(12, 300)
    with pytest.raises(ValueError, match="ECP5 PLL input"):
        ecp5_dividers(5, 50)
