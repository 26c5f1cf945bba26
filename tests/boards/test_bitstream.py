"""One real bitstream: the iCEBreaker with a 1x1 array, built by ``python -m boards.build``
with the YoWASP tools, and its report.json checked against the nextpnr log beside it."""

import json
import re
import subprocess
import sys


def test_icebreaker_bitstream_and_report_agree_with_nextpnr(tmp_path):
    out = tmp_path / "ice"
    r = subprocess.run([sys.executable, "-m", "boards.build", "--board", "icebreaker",
                        "--pe", "1x1", "--out", str(out)], capture_output=True, text=True,
                       timeout=3600)
    report = json.loads((out / "report.json").read_text())
    assert r.returncode == (0 if report["timing_met"] else 1), r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("icebreaker (iCE40UP5K) 1x1: ")
    assert (out / "qmac_board.bin").stat().st_size > 100_000
    assert report["bitstream"] == str(out / "qmac_board.bin")
    log = (out / "qmac_board.tim").read_text()
    fmax = {name: float(mhz) for name, mhz in
            re.findall(r"Max frequency for clock\s+'([^']+)': ([\d.]+) MHz", log)}
    assert report["fmax_mhz"] == round(fmax["clk"], 2)
    assert "Derived frequency constraint of 24.0 MHz for net clk" in log
    used = {name: (int(u), int(t)) for name, u, t in
            re.findall(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)", log, re.M)}
    res = report["resources"]
    for ours, theirs in (("LC", "ICESTORM_LC"), ("DSP", "ICESTORM_DSP"),
                         ("BRAM", "ICESTORM_RAM")):
        assert (res[ours]["used"], res[ours]["total"]) == used[theirs]
    assert report["peak_gops"] == 0.048
