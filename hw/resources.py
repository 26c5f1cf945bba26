"""The resource model: which multipliers become DSP blocks and how many block RAMs the buffers take.

A build names a target device (or gives its own DSP / block RAM budget). :func:`plan` then
decides, before any gateware exists, which products are built in DSP blocks and which in
logic, and counts the block RAMs each buffer maps to, by the same rules Yosys applies
(``docs/fpga.md`` gives the formulas). The gateware follows the plan, so the numbers in the
manifest are the numbers in Yosys's report, and a configuration whose buffers exceed the
device is refused before synthesis (:func:`check`).

DSP blocks go first to the requantizer's partial products (four 16 x 16 products per
datapath unit, one unit per column, or per two columns on iCE40: one in logic costs about
four times the LUTs of a PE's 8 x 8 product), then to the PEs in row-major order; whatever
is left over is logic. The controller uses none.
"""

from dataclasses import dataclass
from types import SimpleNamespace

from .mul import LOGIC_IMPLS

__all__ = ["Device", "DEVICES", "ResourceError", "Plan", "plan", "check", "fitting_depths",
           "block_rams", "requant_units"]


@dataclass(frozen=True)
class Device:
    """One FPGA: its family and how many of each resource it has."""

    name: str
    family: str
    luts: int
    dsp: int
    bram: int
    spram: int = 0

    @property
    def dsp_primitive(self):
        return {"ecp5": "MULT18X18D", "ice40": "SB_MAC16"}[self.family]

    @property
    def bram_primitive(self):
        return {"ecp5": "DP16KD", "ice40": "SB_RAM40_4K"}[self.family]


DEVICES = {d.name: d for d in (
    Device("ecp5-85f", "ecp5", luts=83640, dsp=156, bram=208),
    Device("ecp5-45f", "ecp5", luts=43848, dsp=72, bram=108),
    Device("ecp5-25f", "ecp5", luts=24288, dsp=28, bram=56),
    Device("ecp5-12f", "ecp5", luts=12096, dsp=28, bram=32),
    Device("ice40-up5k", "ice40", luts=5280, dsp=8, bram=30, spram=4),
)}

# Block RAM geometries as Yosys's memory_libmap sees them: (data bits, words) per block,
# and the width of a write-enable byte (0: none, the whole word is one enable).
_BRAM_MODES = {
    # DP16KD: 1..18 bits true dual port, 36 bits as PDPW16KD; 9-bit byte enables.
    "ecp5": ([(1, 16384, 0), (2, 8192, 0), (4, 4096, 0), (9, 2048, 9), (18, 1024, 9),
              (36, 512, 9)]),
    # SB_RAM40_4K: bit enables in the 16-bit mode only.
    "ice40": ([(2, 2048, 0), (4, 1024, 0), (8, 512, 0), (16, 256, 1)]),
}

#: Requantizer partial products per datapath unit (see hw.requant).
PRODUCTS_PER_LANE = 4


def requant_units(rows, cols, dsp_budget):
    """Requantizer datapath units of an R x C array with ``dsp_budget`` DSP blocks (None:
    no limit): one per column (full rate) when the budget holds every PE product and four
    blocks per unit; otherwise one for every two columns (half rate: a tile's R rows take
    2R cycles there, within its K cycles for K >= 2R), and the four blocks each unit frees
    go to PEs, whose 8 x 8 product costs 70 to 150 LUTs in logic. On the UP5K (8 blocks)
    that makes a 2x2 array fit, on the ECP5-85F it takes 32 PE products of a 16x16 array
    out of logic."""
    if dsp_budget is None or rows * cols + PRODUCTS_PER_LANE * cols <= dsp_budget:
        return cols
    return _ceil(cols, 2)


class ResourceError(ValueError):
    """A configuration needs more of a resource than its device (or budget) has."""


def _ceil(a, b):
    return -(-a // b)


def block_rams(family, words, lanes, lane_bits, granular):
    """Blocks of ``family``'s block RAM for a memory of ``words`` x ``lanes * lane_bits``.

    ``granular``: each lane has its own write enable. The cheapest geometry wins, as in
    Yosys; a write-enabled lane occupies whole enable bytes (9 bits on ECP5), or whole
    columns in a geometry without byte enables.
    """
    best = None
    for bits, depth, byte in _BRAM_MODES[family]:
        if not granular:
            cols = _ceil(lanes * lane_bits, bits)
        elif byte:
            cols = _ceil(lanes * _ceil(lane_bits, byte) * byte, bits)
        else:
            cols = lanes * _ceil(lane_bits, bits)
        blocks = cols * _ceil(words, depth)
        best = blocks if best is None else min(best, blocks)
    return best


def lane_groups(family, words, lanes, lane_bits, granular):
    """Lanes per memory of a buffer built a memory per lane group (read latency 2), and its
    blocks: the smallest groups (the most copies of the input registers) that take no more
    blocks than one memory for all lanes."""
    whole = block_rams(family, words, lanes, lane_bits, granular)
    for group in range(1, lanes + 1):
        full, rest = divmod(lanes, group)
        blocks = full * block_rams(family, words, group, lane_bits, granular)
        if rest:
            blocks += block_rams(family, words, rest, lane_bits, granular)
        if blocks <= whole:
            return group, blocks
    raise AssertionError("one group of all lanes is one memory")


def buffer_geometry(config):
    """Per buffer: (words of the memory, lanes, bits per lane, per-lane write enables)."""
    c = config
    return {
        "act": (2 * c.act_depth, c.rows, 8, True),
        "wgt": (2 * c.wgt_depth, c.cols, 8, True),
        "par": (2 * c.par_depth, c.cols, 70, True),
        "out": (2 * c.out_depth, c.cols, 8, False),
    }


@dataclass(frozen=True)
class Plan:
    """What a configuration asks of its device.

    Attributes
    ----------
    device : Device or None
    dsp_budget, bram_budget : int or None
        The limits in force (None: unlimited).
    pe_multipliers : tuple of str
        ``impl`` of each PE's product, row-major (:class:`hw.mul.Multiplier`).
    requant_multipliers : tuple of str
        ``impl`` of each requantizer partial product, ``PRODUCTS_PER_LANE`` per datapath
        unit (:attr:`hw.requant.Requantizer.units`), unit-major.
    buffers : dict
        Block RAMs per memory: the four buffers and, on iCE40 (no distributed RAM), the
        array's output FIFO (None without a device family: Yosys's generic flow).
    fifo_ram : str or None
        ``ram_style`` of the array's output FIFO.
    spram : dict
        SPRAM blocks per buffer held in SPRAM (one bank per block set, ``BankedBuffer(...,
        ram="spram")``); those buffers take no block RAM.
    buffer_latency : {1, 2}
        Read latency of the block-RAM buffers (2: a memory per lane with its own input
        registers, ``hw.buffers.BankedBuffer``).
    output_register : bool
        Whether every buffer's read data is registered once more
        (``BankedBuffer(output_register=...)``).
    replica : {None, "ecp5"}
        How the buffers' per-lane register copies are built (``BankedBuffer(replica=...)``).
    flag_replica : {None, "ecp5"}
        How the PEs' flag registers are built (``PE(replica=...)``): kept ``TRELLIS_FF``
        on ECP5, so each PE keeps its own.
    groups : dict
        Lanes per memory of each latency-2 buffer (:func:`lane_groups`).
    response_slices : {1, 2, 3}
        Register slices on the response stream between the controller and the host side
        (:class:`hw.top.Accelerator`): 2 (the second one can sit by the pins, so the
        controller's response logic stays by the decoder), 1 on iCE40, whose UP5K has no
        logic cells to spare, 3 on ECP5 for the chain drain (arrays of more than 64 PEs):
        on the ECP5-85F's 16x16 nextpnr placed the controller's own slice by the pins too,
        and the route from the response multiplexers to it, with three LUTs after it, was
        the worst path (docs/fpga.md), so the controller takes the multiplexers' result
        into a slice of its own first (``hw.controller.Controller``).
    host_relay : int
        Register stages each way of the :class:`hw.skid.Relay` between each host port and
        the adapters (:class:`hw.top.Accelerator`), 0 for none (the response stream's
        second slice then sits there). Only on request (``AcceleratorConfig.host_relay``):
        out of any board the ports sit on pins along the die's edges, and on the
        ECP5-85F's 16x16 the skid buffers between them and the controller were stretched
        into one route of up to 17.6 ns, but the relay's placements tried did not route
        (docs/fpga.md, "Ninth session").
    product_register : bool
        Whether every PE registers its product once more before its accumulator
        (:class:`hw.pe.PE`): not on iCE40, whose DSP blocks lie beside the logic and whose
        logic cells are few.
    requant_pipeline : {"deep", "compact"}
        ``pipeline`` of :class:`hw.requant.Requantizer`: ``"compact"`` on iCE40, whose
        logic cells hold one flip-flop each and whose clock is slow enough for merged
        steps; ``"deep"`` elsewhere.
    fifo_columns : bool
        Whether the array's output FIFO is one memory per column, each with its own
        pointer registers (``SystolicArray(fifo_columns=...)``): on ECP5 for the chain
        drain (arrays of more than 64 PEs), where one read pointer addressing the
        distributed RAM of all columns was the ECP5-85F 16x16's worst path.
    drain : {"select", "chain"}
        ``drain`` of :class:`hw.array.SystolicArray`: ``"chain"`` for arrays of more than 64
        PEs, ``"select"`` for the others. Measured on the ECP5-85F (``docs/fpga.md``): the
        16x16's select gathered each column's 16 sums across the die and was a fifth of
        router2's congestion, while the 8x8 routed at 101.3 MHz with the select and at
        88.4 to 93.3 MHz over four seeds with the chain, whose latency is R - 1 cycles
        longer and whose FIFO R - 1 rows deeper.
    """

    device: Device | None
    dsp_budget: int | None
    bram_budget: int | None
    pe_multipliers: tuple
    requant_multipliers: tuple
    buffers: dict | None
    fifo_ram: str | None = None
    spram: dict | None = None
    requant_pipeline: str = "deep"
    response_slices: int = 2
    host_relay: int = 0
    fifo_columns: bool = False
    product_register: bool = True
    buffer_latency: int = 1
    output_register: bool = False
    replica: str | None = None
    flag_replica: str | None = None
    groups: dict | None = None
    drain: str = "select"

    def buffer_ram(self, name):
        """``ram`` of :class:`hw.buffers.BankedBuffer` for buffer ``name``."""
        return "spram" if self.spram and name in self.spram else "block"

    @property
    def dsp(self):
        """DSP blocks used: every product that is not logic."""
        return sum(impl not in LOGIC_IMPLS
                   for impl in self.pe_multipliers + self.requant_multipliers)

    @property
    def bram(self):
        return None if self.buffers is None else sum(self.buffers.values())

    def to_dict(self):
        d = self.device
        return {
            "device": None if d is None else d.name,
            "dsp": {
                "primitive": None if d is None else d.dsp_primitive,
                "used": self.dsp,
                "available": self.dsp_budget,
                "pe": sum(impl not in LOGIC_IMPLS for impl in self.pe_multipliers),
                "requantizer": sum(impl not in LOGIC_IMPLS for impl in self.requant_multipliers),
                "controller": 0,
                "logic_multipliers": {
                    "pe_8x8": sum(impl in LOGIC_IMPLS for impl in self.pe_multipliers),
                    "requantizer_16x16": sum(impl in LOGIC_IMPLS
                                             for impl in self.requant_multipliers),
                },
            },
            "block_ram": {
                "primitive": None if d is None else d.bram_primitive,
                "used": self.bram,
                "available": self.bram_budget,
                "buffers": self.buffers,
                "lanes_per_memory": self.groups or None,
            },
            "spram": {
                "primitive": "SB_SPRAM256KA" if d is not None and d.spram else None,
                "used": sum((self.spram or {}).values()),
                "available": 0 if d is None else d.spram,
                "buffers": self.spram or {},
            },
            "requant_pipeline": self.requant_pipeline,
            "response_slices": self.response_slices,
            "host_relay_stages": self.host_relay,
            "pe_product_register": self.product_register,
            "buffer_latency": self.buffer_latency,
            "buffer_output_register": self.output_register,
            "requant_units": len(self.requant_multipliers) // PRODUCTS_PER_LANE,
            "array_drain": self.drain,
            "array_fifo_columns": self.fifo_columns,
        }


# SB_SPRAM256KA: 16384 words of 16 bits, write enables per 4-bit nibble, one port.
_SPRAM_WORDS, _SPRAM_BITS = 16384, 16


def _spram_buffers(device, geometry):
    """SPRAM blocks per buffer: the activation, weight and output buffers, largest first,
    each bank in its own set of blocks, while the device's blocks last."""
    left = device.spram
    chosen = {}
    for name in sorted(("act", "wgt", "out"), key=lambda n: -geometry[n][0] * geometry[n][1]):
        words, lanes, bits, _ = geometry[name]
        blocks = 2 * _ceil(lanes * bits, _SPRAM_BITS)
        if words // 2 <= _SPRAM_WORDS and blocks <= left:
            chosen[name] = blocks
            left -= blocks
    return chosen


def plan(config):
    """The :class:`Plan` of an :class:`~hw.config.AcceleratorConfig`."""
    c = config
    device = DEVICES[c.device] if c.device is not None else None
    dsp_budget = c.dsp_budget if c.dsp_budget is not None else (device and device.dsp)
    bram_budget = c.bram_budget if c.bram_budget is not None else (device and device.bram)
    dsp_impl = "ecp5" if device is not None and device.family == "ecp5" else "dsp"
    # On ECP5 a PE's 8 x 8 product in logic is built in carry chains (about 70 LUT4 in 36
    # CCU2C instead of 150): hw.mul.
    pe_logic = "carry" if dsp_impl == "ecp5" else "logic"
    family = device.family if device is not None else None
    units = requant_units(c.rows, c.cols, dsp_budget)
    n_requant = PRODUCTS_PER_LANE * units
    n_pe = c.rows * c.cols
    if dsp_budget is None:
        requant_dsp, pe_dsp = n_requant, n_pe
    else:
        requant_dsp = min(dsp_budget, n_requant)
        pe_dsp = min(dsp_budget - requant_dsp, n_pe)
    buffers = None
    fifo_ram = {"ecp5": "distributed", "ice40": "block"}.get(family)
    spram = {}
    # Latency 2 by default on ECP5: a register per lane group, not one for a whole buffer,
    # drives the address pins of block RAMs spread over the die (docs/fpga.md).
    latency = getattr(c, "buffer_latency", None) or (2 if family == "ecp5" else 1)
    output_register = getattr(c, "buffer_output_register", None)
    if output_register is None:
        output_register = family == "ecp5"
    if family is not None:
        geometry = buffer_geometry(c)
        spram = _spram_buffers(device, geometry)
        buffers = {name: 0 if name in spram else block_rams(family, *g)
                   for name, g in geometry.items()}
    # Not on iCE40, whose DSP blocks lie beside the logic and whose logic cells are few.
    product_register = family != "ice40"
    drain = "chain" if c.rows * c.cols > 64 else "select"
    # ECP5 arrays of more than 64 PEs: a FIFO memory per column, a third response slice.
    large_ecp5 = family == "ecp5" and drain == "chain"
    groups = {}
    if latency == 2:
        for name, (words, lanes, bits, granular) in buffer_geometry(c).items():
            if family is None:
                groups[name] = 1
            elif name not in spram:
                groups[name], buffers[name] = lane_groups(family, words, lanes, bits, granular)
    if family is not None:
        if fifo_ram == "block":
            from .array import fifo_depth
            from .buffers import BankedBuffer

            # The compute engine takes the FIFO's credits its read latency ahead.
            lead = max(BankedBuffer.read_latency(latency=latency, output_register=output_register,
                                                 ram="spram" if name in spram else "block")
                       for name in ("act", "wgt"))
            rows = fifo_depth(c.rows, c.cols, product_register, lead, drain) - 1
            buffers["array_fifo"] = block_rams(family, rows, 1, c.cols * c.acc_width, False)
    return Plan(
        device=device, dsp_budget=dsp_budget, bram_budget=bram_budget,
        pe_multipliers=tuple([dsp_impl] * pe_dsp + [pe_logic] * (n_pe - pe_dsp)),
        requant_multipliers=tuple([dsp_impl] * requant_dsp
                                  + ["logic"] * (n_requant - requant_dsp)),
        buffers=buffers, fifo_ram=fifo_ram, spram=spram,
        requant_pipeline="compact" if family == "ice40" else "deep",
        response_slices=1 if family == "ice40" else 3 if large_ecp5 else 2,
        host_relay=getattr(c, "host_relay", None) or 0,
        product_register=product_register, drain=drain,
        fifo_columns=large_ecp5,
        buffer_latency=latency, output_register=output_register,
        replica="ecp5" if family == "ecp5" and latency == 2 else None,
        flag_replica="ecp5" if family == "ecp5" else None,
        groups=groups)


def check(config):
    """Raise :class:`ResourceError` naming the resource and the numbers if it does not fit."""
    p = plan(config)
    if p.buffers is None or p.bram_budget is None or p.bram <= p.bram_budget:
        return p
    where = p.device.name if config.bram_budget is None else "the --bram budget"
    detail = ", ".join(f"{name} {n}" for name, n in p.buffers.items())
    raise ResourceError(
        f"block RAM: the buffers need {p.bram} {p.device.bram_primitive} ({detail}) but "
        f"{where} has {p.bram_budget}; reduce --act-depth, --wgt-depth, --par-depth or "
        f"--out-depth")


def fitting_depths(config):
    """Depths for ``config``'s device: its own, halved, largest buffer first, until they fit.

    ``config`` needs the fields of :class:`~hw.config.AcceleratorConfig` (it may be one
    that does not fit). Returns a dict of ``act_depth``, ``wgt_depth``, ``par_depth``,
    ``out_depth``.
    """
    fields = dict(vars(config))
    p = plan(SimpleNamespace(**fields))
    while p.buffers is not None and p.bram_budget is not None and p.bram > p.bram_budget:
        # Halve the buffer with the most blocks whose halving saves any.
        buffers = [n for n in p.buffers if n in ("act", "wgt", "par", "out")]
        for name in sorted(buffers, key=lambda n: (-p.buffers[n], n != "out")):
            key = f"{name}_depth"
            if fields[key] == 1:
                continue
            trial = plan(SimpleNamespace(**{**fields, key: fields[key] // 2}))
            if trial.bram < p.bram:
                fields[key] //= 2
                p = trial
                break
        else:
            break
    return {key: fields[key] for key in ("act_depth", "wgt_depth", "par_depth", "out_depth")}
