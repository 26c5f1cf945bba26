"""``python -m hw.build``: files and manifest on success, one line and exit 2 on bad input."""

import json
import re
import subprocess
import sys

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.build import convert
from hw.isa import ISA_VERSION
from sim.harness import ROOT, toolchain_env

SMALL = ["--pe", "2x3", "--act-depth", "8", "--wgt-depth", "8", "--par-depth", "2",
         "--out-depth", "12", "--host-width", "16", "--rounding", "single", "--acc-width", "24"]


def build(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "hw.build", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    result = build(*SMALL, "--out", str(out))
    return result, out


def test_success_writes_verilog_and_manifest(small):
    result, out = small
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "2x3" in result.stdout
    verilog = (out / "qmac_2x3.v").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["top_module"] == "qmac_top"
    assert manifest["verilog"] == "qmac_2x3.v"
    assert manifest["isa_version"] == ISA_VERSION
    assert manifest["config"] == {"rows": 2, "cols": 3, "acc_width": 24, "rounding": "single",
                                  "host_width": 16, "act_depth": 8, "wgt_depth": 8,
                                  "par_depth": 2, "out_depth": 12,
                                  "device": None, "dsp_budget": None, "bram_budget": None,
                                  "buffer_latency": None, "buffer_output_register": None,
                                  "host_relay": None}
    assert manifest["peak_macs_per_cycle"] == 6
    assert manifest["buffers"]["act"] == {"banks": 2, "words_per_bank": 8, "bits_per_word": 16,
                                          "host_words_per_word": 1, "total_bits": 256}
    assert manifest["buffers"]["par"]["bits_per_word"] == 3 * 70
    assert manifest["buffers"]["out"]["words_per_bank"] == 12
    assert manifest["latency"]["array"] > 0 and manifest["latency"]["requantizer"] > 0
    assert manifest["generated"]["seconds"] >= 0
    ports = {p["name"]: (p["direction"], p["width"]) for p in manifest["ports"]}
    assert ports == {
        "clk": ("input", 1), "rst": ("input", 1),
        "i__payload": ("input", 16), "i__valid": ("input", 1), "i__ready": ("output", 1),
        "o__payload": ("output", 16), "o__valid": ("output", 1), "o__ready": ("input", 1),
    }
    header = re.search(r"^module qmac_top\((.*?)\);", verilog, re.M)
    assert header and set(header[1].replace(" ", "").split(",")) == set(ports)
    for name, (direction, width) in ports.items():
        decl = f"{direction} [{width - 1}:0] {name};" if width > 1 else f"{direction} {name};"
        assert decl in verilog


def test_generated_verilog_lints(small):
    _, out = small
    env = toolchain_env()
    result = subprocess.run(["verilator", "--lint-only", str(out / "qmac_2x3.v")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "%Error" not in result.stderr and "%Warning" not in result.stderr


def test_memories_have_no_zero_initialisers(small):
    _, out = small
    verilog = (out / "qmac_2x3.v").read_text()
    # the four double-banked buffers are there, as memories, but nothing sets their contents
    memories = re.findall(r"^\s*reg \[(\d+):0\] \w+ \[(\d+):0\];", verilog, re.M)
    assert {(int(w) + 1, int(d) + 1) for w, d in memories} >= {(16, 16), (24, 16), (24, 24),
                                                                (3 * 70, 4)}
    assert "initial" not in verilog


class _Rom(wiring.Component):
    addr: In(2)
    data: Out(8)

    def __init__(self, init):
        self._init = init
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=8, depth=4, init=self._init)
        port = mem.read_port(domain="comb")
        m.d.comb += [port.addr.eq(self.addr), self.data.eq(port.data)]
        return m


@pytest.mark.parametrize("fmt", ["verilog", "rtlil"])
def test_convert_keeps_nonzero_initialisers(fmt):
    zero = convert(_Rom([0, 0, 0, 0]), fmt)
    rom = convert(_Rom([0x11, 0x5A, 0, 0xC3]), fmt)
    assert "$meminit" not in zero and "initial" not in zero
    if fmt == "rtlil":
        assert "$meminit_v2" in rom and "01011010" in rom
    else:
        assert "8'h5a" in rom and "8'hc3" in rom


def test_convert_bad_format():
    with pytest.raises(ValueError, match="Format must be one of verilog, rtlil, not 'edif'"):
        convert(None, "edif")


def test_largest_depth_generates_small_verilog(tmp_path):
    result = build("--pe", "2x2", "--act-depth", str(1 << 20), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "qmac_2x2.v").stat().st_size < 1 << 20
    assert "reg [15:0] memory [2097151:0];" in (tmp_path / "qmac_2x2.v").read_text()


@pytest.mark.parametrize("out", ["/proc/qmac-build", "/dev/null", "/dev/null/sub"])
def test_bad_out_is_refused_before_work(out):
    result = build("--pe", "16x16", "--out", out)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "--out" in lines[0], result.stderr


@pytest.mark.parametrize("args", [
    ["--pe", "0x4"],
    ["--pe", "16"],
    ["--pe", "100x100"],
    ["--pe", "4x4", "--rounding", "nearest"],
    ["--pe", "4x4", "--act-depth", "0"],
    ["--pe", "4x4", "--out-depth", "many"],
    ["--pe", "4x4", "--par-depth", str((1 << 20) + 1)],
    ["--pe", "4x4", "--host-width", "24"],
    ["--pe", "4x4", "--acc-width", "40"],
    ["--pe", "4x4", "--host-relay", "17"],
    ["--pe", "4x4", "--host-relay", "-1"],
    ["--pe", "4x4", "--frobnicate"],
    [],
])
def test_bad_argument_is_one_line_and_exit_2(args, tmp_path):
    result = build(*args, "--out", str(tmp_path / "never"))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "error" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "never").exists()


def test_host_relay_reaches_the_manifest_and_the_verilog(tmp_path):
    assert build(*SMALL, "--host-relay", "3", "--out", str(tmp_path)).returncode == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"]["host_relay"] == 3
    assert manifest["resources"]["host_relay_stages"] == 3
    verilog = (tmp_path / "qmac_2x3.v").read_text()
    assert "in_relay" in verilog and "out_relay" in verilog


def test_no_host_relay_by_default(small):
    _, out = small
    assert json.loads((out / "manifest.json").read_text())["resources"]["host_relay_stages"] == 0
    assert "relay" not in (out / "qmac_2x3.v").read_text()


def test_help():
    result = build("--help")
    assert result.returncode == 0
    assert "--pe" in result.stdout and "--host-width" in result.stdout
