"""The per-board results table of ``docs/boards.md``: ``python -m boards.build --results``.

For each board: the array (``--pe``, or the ``auto`` search), its bitstream report
(Fmax, resources, peak GOPS), and the digits CNN (``golden.ptq``, 8-bit minmax) on one
held-out image two ways:

- **over the UART link**: ``boards.run`` against the simulated board top at the board's
  clock and baud rate; images/s = 1 / (simulated time of the board layers on the link);
- **link ignored**: the same layers on the accelerator alone (``sim.run``), its 8-bit host
  stream fed one byte per clock; images/s = clock / (cycles of the board layers).

Host operators (depthwise, add, pools) and host Python time are not counted in either.
"""

import json
from pathlib import Path

import numpy as np

__all__ = ["RESULT_BOARDS", "digits_model", "measure", "table"]

RESULT_BOARDS = ("icebreaker", "ulx3s-85f", "orangecrab")


def digits_model(out):
    """Write the int8 digits CNN and one held-out image to ``out``: (model, input) paths."""
    from golden.nets.data import digits
    from golden.ptq.__main__ import main as ptq
    from golden.tflite_io import load_tflite

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, data = out / "digits_cnn.tflite", out / "digits_x.npy"
    if not model.exists():
        if ptq(["--model", "cnn", "--calib", "minmax", "--out", str(model)]) not in (0, None):
            raise RuntimeError("golden.ptq failed to write the digits CNN")
    net = load_tflite(model)
    x = net.quantize(net.inputs[0], digits()["x_test"][:1])
    np.save(data, x.astype(np.int8))
    return str(model), str(data)


def measure(board, report, out):
    """Images/s of the digits CNN on ``board``'s build described by ``report``."""
    from golden.tflite_io import load_tflite
    from hw.config import AcceleratorConfig
    from sim.run import run_model

    from . import run

    config = AcceleratorConfig(**report["config"])
    model, data = digits_model(out)
    freq = report["target_mhz"]
    answer = run.simulate(run.Request(model, data, 1, config), config, freq=freq,
                          baud=report["baud"])
    if "error" in answer:
        raise RuntimeError(f"the simulated board failed: {answer['error']}")
    layers = [r for r in answer["result"].layers if r.board]
    if not all(r.exact for r in layers):
        raise RuntimeError("the simulated board did not match the golden model")
    link_s = sum(r.seconds for r in layers)
    rows = run_model(load_tflite(model), np.load(data), run.as_identified(config))
    cycles = sum(r.total for r in rows if r.rtl)
    return {"link_seconds": link_s, "link_images_per_s": 1 / link_s,
            "compute_cycles": cycles, "compute_images_per_s": freq * 1e6 / cycles,
            "bytes": sum(r.bytes_out + r.bytes_in for r in layers)}


def table(entries):
    """Markdown table of (report, measurement) pairs."""
    head = ("| board | device | array | clock MHz | Fmax MHz | peak GOPS | LUT | FF | DSP | "
            "BRAM | digits CNN img/s over UART | img/s link ignored | command |")
    lines = [head, "|" + "---|" * 13]
    for rep, meas in entries:
        r = {k: f"{v['used']}/{v['total']}" for k, v in rep["resources"].items()}
        lines.append(
            f"| {rep['board']} | {rep['device']} | {rep['pe']} | {rep['target_mhz']:g} | "
            f"{rep['fmax_mhz']:.1f} | {rep['peak_gops']:.3g} | {r['LUT']} | {r['FF']} | "
            f"{r['DSP']} | {r['BRAM']} | {meas['link_images_per_s']:.1f} | "
            f"{meas['compute_images_per_s']:.0f} | `{meas['command']}` |")
    return "\n".join(lines)


def save(out, entries):
    out = Path(out)
    (out / "results.json").write_text(json.dumps(
        [{"report": rep, "digits_cnn": meas} for rep, meas in entries], indent=2) + "\n")
    (out / "results.md").write_text(table(entries) + "\n")
