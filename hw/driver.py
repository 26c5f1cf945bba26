"""Host driver: lowers GEMMs and convolutions to the command stream of ISA v2 and back.

The contract is ``docs/isa.md``; the numbers are in :mod:`hw.isa`. A layer becomes a
:class:`Program`: the input words (``Program.words``), the number of response words to
expect, and :meth:`Program.decode`, which turns the response words back into the int8
result. A :class:`Driver` runs programs on any *transport* (see :class:`Driver`;
:class:`sim.model.IsaModel` is one, the cocotb testbench and a UART link are others)::

    program = compile_gemm(config, x, w, bias, m0, shift, z_out, act_min, act_max)
    sizes = [n for _, n in program.responses]
    y = program.decode(transport(program.words, sizes))   # int8 (M, N)

Lowering. ``X[M, K]`` is cut into R-row tiles and ``W[K, N]`` into C-column tiles, both
padded with zeros to whole tiles; padded outputs are never stored. Tiles are grouped into
COMPUTE commands whose blocks fit the activation, weight, parameter and output banks.
Consecutive COMPUTEs alternate banks, so the loads of the next group and the STORE of the
previous one overlap the running COMPUTE (the controller's interlocks order them); operands
already resident in a bank are not loaded again. When K words do not fit a bank, K is split
into balanced chunks: every tile is a run of partial COMPUTEs (one chunk each, the array
keeps the sums) and a final one that ends the tile, chunks alternating banks; the chunk
order runs back and forth so that consecutive tiles find up to two of their operand chunks
still resident.

A program starts and ends with STATUS (unless asked not to): the differences of the
cumulative COMPUTE counters are its own busy cycles and COMPUTEs (:meth:`Program.usage`),
and an error pending from before it still shows. :attr:`Program.commands` lists every
command it emitted, which is what a runner derives its time budget from.
"""

from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from golden.arith import INT32_MAX, INT32_MIN, check_accumulator, quantize_multiplier

from .config import AcceleratorConfig
from .isa import ARGS, ID_WORDS, ISA_VERSION, MAGIC, PARTIAL, STATUS_WORDS, Error, Op, header

__all__ = [
    "AcceleratorError", "DeviceId", "Status", "Step", "Plan", "Command", "Program", "Driver",
    "pack_lanes", "unpack_lanes", "words_per_beat", "pad_to_beats", "split_responses",
    "response_length", "command_spans", "command",
    "cmd_nop", "cmd_id", "cmd_status", "cmd_clear", "cmd_load_act", "cmd_load_wgt",
    "cmd_load_par", "cmd_compute", "cmd_store", "layer_word",
    "reported", "parse_id", "parse_status", "multipliers", "layer_multipliers",
    "STRATEGIES", "plan_gemm", "compile_gemm", "compile_conv2d", "compile_fully_connected",
]

_U32 = 1 << 32


class AcceleratorError(RuntimeError):
    """The accelerator reported an error, or answered something a program did not expect."""


# --- words and beats -----------------------------------------------------------------------

def pack_lanes(values):
    """int8 lanes (..., L) -> uint32 words (..., ceil(L / 4)), lane 0 in the lowest byte."""
    v = np.asarray(values)
    if v.dtype != np.int8:
        raise ValueError(f"lanes must be int8, not {v.dtype}")
    lanes = v.shape[-1]
    padded = np.zeros(v.shape[:-1] + (4 * ((lanes + 3) // 4),), dtype=np.uint8)
    padded[..., :lanes] = v.view(np.uint8)
    return padded.view("<u4").astype(np.uint32)


def unpack_lanes(words, lanes):
    """uint32 words (..., W) -> int8 lanes (..., lanes), inverse of :func:`pack_lanes`."""
    w = np.ascontiguousarray(np.asarray(words, dtype=np.uint32).astype("<u4"))
    return w.view(np.uint8).reshape(w.shape[:-1] + (4 * w.shape[-1],))[..., :lanes] \
        .view(np.int8)


def words_per_beat(host_width):
    """Words per host-stream beat: ``host_width / 32`` for wide streams, else 1."""
    return max(1, int(host_width) // 32)


def pad_to_beats(words, host_width):
    """Pad an input word stream with zero words (NOPs) to a whole number of beats."""
    words = np.asarray(words, dtype=np.uint32)
    extra = -len(words) % words_per_beat(host_width)
    return np.concatenate([words, np.zeros(extra, np.uint32)]) if extra else words


def split_responses(words, sizes, host_width):
    """Cut a response word stream into responses of ``sizes`` words, dropping beat padding.

    Raises
    ------
    AcceleratorError
        If the stream is shorter or longer than the responses (with their padding).
    """
    words = np.asarray(words, dtype=np.uint32)
    wpb = words_per_beat(host_width)
    out, pos = [], 0
    for size in sizes:
        if pos + size > len(words):
            raise AcceleratorError(f"response stream ends after {len(words)} words; expected "
                                   f"{response_length(sizes, host_width)}")
        out.append(words[pos:pos + size])
        pos += size + (-size % wpb)
    if pos != len(words):
        raise AcceleratorError(f"response stream has {len(words)} words; expected {pos}")
    return out


def command_spans(words, config):
    """Commands of an input word stream: list of (Op or None, first word, number of words).

    Illegal opcodes give (None, i, 1); a LOAD's span includes its data words.
    """
    words = np.asarray(words, dtype=np.uint32)
    per_item = {Op.LOAD_ACT: -(-config.rows // 4), Op.LOAD_WGT: -(-config.cols // 4),
                Op.LOAD_PAR: 3 * config.cols}
    spans, pos = [], 0
    while pos < len(words):
        try:
            op = Op(int(words[pos]) >> 24)
        except ValueError:
            spans.append((None, pos, 1))
            pos += 1
            continue
        size = 1 + ARGS[op]
        if op in per_item and pos + 2 < len(words):
            size += int(words[pos + 2]) * per_item[op]
        spans.append((op, pos, min(size, len(words) - pos)))
        pos += size
    return spans


def response_length(sizes, host_width):
    """Words of a response stream of responses of ``sizes`` words, beat padding included."""
    wpb = words_per_beat(host_width)
    return sum(s + (-s % wpb) for s in sizes)


# --- commands ------------------------------------------------------------------------------

def command(op, flags=0, *args):
    """Any command, arguments unchecked beyond 32 bits (e.g. to provoke range errors)."""
    if len(args) != ARGS[op]:
        raise ValueError(f"{Op(op).name} takes {ARGS[op]} arguments, not {len(args)}")
    for a in args:
        if not 0 <= int(a) < _U32:
            raise ValueError(f"{Op(op).name} arguments must be 32-bit unsigned, not {a!r}")
    return np.array([header(op, flags), *(int(a) for a in args)], dtype=np.uint32)


def _bank(bank):
    if bank not in (0, 1):
        raise ValueError(f"bank must be 0 or 1, not {bank!r}")
    return int(bank)


def cmd_nop():
    return command(Op.NOP)


def cmd_id():
    """ID; response: ``len(ID_WORDS)`` words, see :func:`parse_id`."""
    return command(Op.ID)


def cmd_status():
    """STATUS; response: ``len(STATUS_WORDS)`` words, see :func:`parse_status`."""
    return command(Op.STATUS)


def cmd_clear():
    return command(Op.CLEAR)


def cmd_load_act(bank, addr, columns):
    """LOAD_ACT of ``columns`` (count, R) int8: item n is activation word ``addr + n``."""
    columns = np.asarray(columns)
    data = pack_lanes(columns).ravel()
    return np.concatenate([command(Op.LOAD_ACT, _bank(bank), addr, len(columns)), data])


def cmd_load_wgt(bank, addr, rows):
    """LOAD_WGT of ``rows`` (count, C) int8: item n is weight word ``addr + n``."""
    rows = np.asarray(rows)
    data = pack_lanes(rows).ravel()
    return np.concatenate([command(Op.LOAD_WGT, _bank(bank), addr, len(rows)), data])


def cmd_load_par(bank, addr, bias, m0, shift):
    """LOAD_PAR of ``count`` groups; ``bias``, ``m0``, ``shift`` int arrays (count, C)."""
    fields = [np.asarray(f, dtype=np.int64) for f in (bias, m0, shift)]
    if len({f.shape for f in fields}) != 1 or fields[0].ndim != 2:
        raise ValueError(f"bias, m0 and shift must share a shape (count, C), not "
                         f"{[f.shape for f in fields]}")
    for name, f in zip(("bias", "m0", "shift"), fields, strict=True):
        if np.any((f < INT32_MIN) | (f > INT32_MAX)):
            raise ValueError(f"{name} must fit int32")
    data = (np.stack(fields, axis=-1) % _U32).astype(np.uint32).ravel()
    return np.concatenate([command(Op.LOAD_PAR, _bank(bank), addr, len(fields[0])), data])


def layer_word(z_out, act_min, act_max):
    """COMPUTE's ``layer`` argument: ``z_out | act_min << 8 | act_max << 16``, int8 each."""
    for name, v in (("z_out", z_out), ("act_min", act_min), ("act_max", act_max)):
        if not -128 <= int(v) <= 127:
            raise ValueError(f"{name} must be an int8 code in [-128, 127], not {v!r}")
    return (int(z_out) & 0xFF) | (int(act_min) & 0xFF) << 8 | (int(act_max) & 0xFF) << 16


def cmd_compute(k, m_tiles, n_tiles, *, act_addr=0, wgt_addr=0, par_addr=0, out_addr=0,
                layer=0, banks=(0, 0, 0, 0), partial=False):
    """COMPUTE; ``banks`` = (act, wgt, par, out), ``layer`` from :func:`layer_word`;
    ``partial``: accumulate only, the next COMPUTE continues the tile (one tile)."""
    flags = sum(_bank(b) << i for i, b in enumerate(banks)) | (PARTIAL if partial else 0)
    return command(Op.COMPUTE, flags, k, m_tiles, n_tiles, act_addr, wgt_addr, par_addr,
                    out_addr, layer)


def cmd_store(bank, addr, count):
    """STORE; response: ``count`` output words of ``ceil(C / 4)`` words each."""
    return command(Op.STORE, _bank(bank), addr, count)


# --- responses -----------------------------------------------------------------------------

class DeviceId(NamedTuple):
    """The ID response, field by field (``hw.isa.ID_WORDS``)."""

    magic: int
    version: int
    rows: int
    cols: int
    acc_width: int
    act_depth: int
    wgt_depth: int
    par_depth: int
    out_depth: int
    rounding: str

    def to_config(self, host_width):
        """The :class:`AcceleratorConfig` this device was built from (plus the host width,
        which ID does not report)."""
        return AcceleratorConfig(rows=self.rows, cols=self.cols, acc_width=self.acc_width,
                                 rounding=self.rounding, host_width=host_width,
                                 act_depth=self.act_depth, wgt_depth=self.wgt_depth,
                                 par_depth=self.par_depth, out_depth=self.out_depth)


def reported(config):
    """``config`` with only what ID reports: no target device, budgets, buffer latencies or
    host relay, which change how the same accelerator is built, not what it computes."""
    return replace(config, device=None, dsp_budget=None, bram_budget=None,
                   buffer_latency=None, buffer_output_register=None, host_relay=None)


def parse_id(words):
    """ID response words -> :class:`DeviceId`; AcceleratorError on a wrong magic/version."""
    w = [int(x) for x in np.asarray(words, dtype=np.uint32)[:len(ID_WORDS)]]
    if len(w) != len(ID_WORDS):
        raise AcceleratorError(f"ID response must have {len(ID_WORDS)} words, not {len(w)}")
    if w[0] != MAGIC:
        raise AcceleratorError(f"ID magic must be {MAGIC:#010x}, not {w[0]:#010x}")
    if w[1] != ISA_VERSION:
        raise AcceleratorError(f"ISA version {w[1]} is not supported (driver: {ISA_VERSION})")
    if w[9] not in (0, 1):
        raise AcceleratorError(f"ID rounding must be 0 or 1, not {w[9]}")
    return DeviceId(*w[:9], ("double", "single")[w[9]])


class Status(NamedTuple):
    """The STATUS response (``hw.isa.STATUS_WORDS``), with the status bits split out.
    ``compute_total``, ``compute_count``: busy cycles and number of the COMPUTEs since reset
    or CLEAR."""

    busy: bool
    error_pending: bool
    error: int
    compute_cycles: int
    error_count: int
    compute_total: int = 0
    compute_count: int = 0

    @property
    def error_name(self):
        try:
            return Error(self.error).name
        except ValueError:
            return f"unknown error {self.error}"


def parse_status(words):
    """STATUS response words -> :class:`Status`."""
    w = [int(x) for x in np.asarray(words, dtype=np.uint32)[:len(STATUS_WORDS)]]
    if len(w) != len(STATUS_WORDS):
        raise AcceleratorError(f"STATUS response must have {len(STATUS_WORDS)} words, "
                               f"not {len(w)}")
    return Status(bool(w[0] & 1), bool(w[0] & 2), *w[1:])


# --- quantized multipliers ----------------------------------------------------------------

def multipliers(config, real_multiplier):
    """(M0, shift) int32 arrays of real multipliers, with the build's rounding mode."""
    return quantize_multiplier(real_multiplier, rounding=config.rounding)


def layer_multipliers(config, input_scale, weight_scale, output_scale):
    """Per-channel (or per-tensor) (M0, shift) of a layer from its scales.

    ``M = s_in * s_w[c] / s_out`` with the scales rounded to float32 first, as a .tflite file
    stores them (``golden.ops.output_multipliers``), then QuantizeMultiplier.
    """
    s_in = np.float64(np.float32(input_scale))
    s_w = np.atleast_1d(np.asarray(weight_scale, dtype=np.float32).astype(np.float64))
    s_out = np.float64(np.float32(output_scale))
    return multipliers(config, s_in * s_w / s_out)


# --- planning ------------------------------------------------------------------------------

class Step(NamedTuple):
    """One COMPUTE: tiles ``t0 .. t0 + m_tiles`` x ``u0 .. u0 + n_tiles`` over the steps
    ``k0 .. k0 + k`` of K, its banks, and which operands are loaded for it first (weights,
    parameters). A ``partial`` step (one tile, a chunk of K) leaves its sums in the array
    for the next step of the same tile."""

    t0: int
    m_tiles: int
    u0: int
    n_tiles: int
    k0: int
    k: int
    act_bank: int
    wgt_bank: int
    par_bank: int
    out_bank: int
    load_act: bool
    load_wgt: bool
    load_par: bool
    partial: bool


@dataclass(frozen=True)
class Plan:
    """How a GEMM of shape (M, K, N) is cut into COMPUTE commands on one configuration."""

    m: int
    k: int
    n: int
    rows: int
    cols: int
    steps: tuple

    @property
    def m_tiles(self):
        return -(-self.m // self.rows)

    @property
    def n_tiles(self):
        return -(-self.n // self.cols)

    @property
    def ideal_cycles(self):
        """``ceil(M/R) * ceil(N/C) * K``: one array step per k of every tile."""
        return self.m_tiles * self.n_tiles * self.k

    @property
    def k_chunks(self):
        """Chunks K is split into (1: not split)."""
        return len({s.k0 for s in self.steps})


def _chunks(total, size):
    """Split ``total`` tiles into balanced chunks of at most ``size``: [(start, count)]."""
    n = -(-total // size)
    base, extra = divmod(total, n)
    out, start = [], 0
    for i in range(n):
        count = base + (i < extra)
        out.append((start, count))
        start += count
    return out


def _serpentine(m_chunks, n_chunks, n_outer):
    """(m chunk, n chunk) pairs, the inner loop running back and forth."""
    outer, inner = (n_chunks, m_chunks) if n_outer else (m_chunks, n_chunks)
    order = []
    for a, o in enumerate(outer):
        inners = inner if a % 2 == 0 else inner[::-1]
        order += [(i, o) if n_outer else (o, i) for i in inners]
    return order


class _Banks:
    """Two-bank residency of one buffer: which operand block each bank holds."""

    def __init__(self):
        self.held = [None, None]
        self.last = 1

    def place(self, key):
        """(bank, load): reuse a bank that holds ``key``, else load it into the bank the
        previous COMPUTE did not use (it may still be running)."""
        if key in self.held:
            bank, load = self.held.index(key), False
        else:
            bank, load = 1 - self.last, True
            self.held[bank] = key
        self.last = bank
        return bank, load


def _schedule(m_chunks, n_chunks, n_outer, k):
    """Steps of an unsplit K in serpentine order with two-bank residency per buffer."""
    steps, act, wgt, out = [], _Banks(), _Banks(), 1
    for mc, nc in _serpentine(m_chunks, n_chunks, n_outer):
        a_bank, load_a = act.place(mc)
        w_bank, load_w = wgt.place(nc)
        out = 1 - out
        # Parameters travel with their weights.
        steps.append(Step(mc[0], mc[1], nc[0], nc[1], 0, k, a_bank, w_bank, w_bank, out,
                          load_a, load_w, load_w, False))
    return tuple(steps)


def _split_schedule(m_tiles, n_tiles, k_chunks, n_outer):
    """Steps of a split K: per tile, partial steps over all but one chunk and a final step.

    Chunks alternate banks; the chunk order reverses from tile to tile, so the next tile
    starts with the chunks still resident. A final step's parameter bank and output bank
    are chosen before its partial steps, which name the other parameter bank (a LOAD_PAR
    for the final step must not wait for them) and the final step's output bank (the
    previous tile's STORE must not wait for them).
    """
    steps, act, wgt, par, out = [], _Banks(), _Banks(), _Banks(), 1
    tiles = _serpentine([(t, 1) for t in range(m_tiles)], [(u, 1) for u in range(n_tiles)],
                        n_outer)
    for n, ((t, _), (u, _)) in enumerate(tiles):
        chunks = k_chunks if n % 2 == 0 else k_chunks[::-1]
        p_bank, load_p = par.place(u)
        out = 1 - out
        for j, (k0, kc) in enumerate(chunks):
            final = j == len(chunks) - 1
            a_bank, load_a = act.place((t, k0))
            w_bank, load_w = wgt.place((u, k0))
            steps.append(Step(t, 1, u, 1, k0, kc, a_bank, w_bank,
                              p_bank if final else 1 - p_bank, out, load_a, load_w,
                              load_p and final, not final))
    return tuple(steps)


def _estimate(config, steps):
    """Rough cycles of a schedule, only used to choose between schedules: the controller
    decodes one word per cycle, a COMPUTE waits for the previous one, loads and the previous
    STORE overlap it."""
    r, c = config.rows, config.cols
    act, wgt, out = -(-r // 4), -(-c // 4), -(-c // 4)
    decode = done = 0
    prev_store = 0
    for s in steps:
        decode += 3 * (s.load_act + s.load_wgt + s.load_par) \
            + s.load_act * s.m_tiles * s.k * act + s.load_wgt * s.n_tiles * s.k * wgt \
            + s.load_par * s.n_tiles * 3 * c
        start = max(decode, done)
        if s.partial:
            done = start + s.k + 3
        else:
            done = start + s.m_tiles * s.n_tiles * max(s.k, r, c) + r + c
        decode = start + 1 + ARGS[Op.COMPUTE] + prev_store
        prev_store = 0 if s.partial else 3 + s.m_tiles * r * s.n_tiles * out
    return max(decode, done) + prev_store


STRATEGIES = ("overlap", "fewest")


def plan_gemm(config, m, k, n, strategy="overlap"):
    """Cut an (M, K, N) GEMM into COMPUTE steps that fit ``config``'s banks.

    When K words fit an activation and a weight bank, every COMPUTE covers all of K;
    otherwise K is split into balanced chunks that fit, one tile per COMPUTE (see the
    module's docstring).

    Parameters
    ----------
    strategy : {"overlap", "fewest"}
        ``"overlap"``: the chunking with the shortest estimated run, loads and stores
        hidden behind COMPUTEs. ``"fewest"``: as few COMPUTEs as possible (all operands
        resident first when they fit), e.g. to measure the compute engine alone.

    Raises
    ------
    ValueError
        If the output bank cannot hold one tile.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
    for name, v in (("M", m), ("K", k), ("N", n)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, not {v!r}")
    r, c = config.rows, config.cols
    if config.out_depth < r:
        raise ValueError(f"out_depth={config.out_depth} cannot hold one tile of R={r} rows")
    mt_all, nt_all = -(-m // r), -(-n // c)
    k_max = min(config.act_depth, config.wgt_depth)
    candidates = []
    if k > k_max:
        k_chunks = _chunks(k, k_max)
        candidates = [_split_schedule(mt_all, nt_all, k_chunks, n_outer)
                      for n_outer in (True, False)]
    for nt_max in range(1, min(nt_all, config.par_depth, config.wgt_depth // k) + 1):
        n_chunks = _chunks(nt_all, nt_max)
        nt = max(cnt for _, cnt in n_chunks)
        mt_max = min(mt_all, config.act_depth // k, config.out_depth // (r * nt))
        if mt_max < 1:
            continue
        m_chunks = _chunks(mt_all, mt_max)
        candidates += [_schedule(m_chunks, n_chunks, n_outer, k) for n_outer in (True, False)]
    best = None
    for steps in candidates:
        cost = (_estimate(config, steps), len(steps))
        if strategy == "fewest":
            cost = cost[::-1]
        if best is None or cost < best[0]:
            best = (cost, steps)
    return Plan(int(m), int(k), int(n), r, c, best[1])


# --- programs ------------------------------------------------------------------------------

class Command(NamedTuple):
    """One command of a program: its opcode, first word in :attr:`Program.words`, number of
    words (data included) and, for a COMPUTE, its tiles and array steps (K per tile)."""

    op: Op
    start: int
    size: int
    tiles: int = 0
    steps: int = 0


@dataclass(frozen=True)
class Program:
    """A compiled layer: input words, the responses they produce, and how to decode them.

    Attributes
    ----------
    config : AcceleratorConfig
    words : ndarray of uint32
        The input stream, padded with NOPs to whole beats of ``config.host_width``.
    responses : tuple of (str, int)
        (kind, words) of every response in order: ``"store"`` or ``"status"``.
    plan : Plan
    output_shape : tuple
        Shape of :meth:`decode`'s result; (M, N) for a GEMM.
    stores : tuple of (row0, rows, col0, n_tiles)
        What each STORE response holds.
    commands : tuple of Command
        Every command of ``words`` in order (the padding NOPs excepted).
    """

    config: AcceleratorConfig
    words: np.ndarray
    responses: tuple
    plan: Plan
    output_shape: tuple
    stores: tuple
    commands: tuple

    @property
    def expected_response_words(self):
        """Response words the program produces, beat padding included."""
        return response_length([n for _, n in self.responses], self.config.host_width)

    def split(self, response_words):
        """The responses, beat padding removed: list of uint32 arrays."""
        return split_responses(response_words, [n for _, n in self.responses],
                               self.config.host_width)

    def status(self, response_words):
        """The final STATUS of the program, or None if it has none."""
        parts = self.split(response_words)
        kinds = [kind for kind, _ in self.responses]
        return parse_status(parts[-1]) if kinds and kinds[-1] == "status" else None

    def usage(self, response_words):
        """(busy cycles, COMPUTEs) of this program, from its first and last STATUS (None if
        it has no STATUS)."""
        if not self.responses or self.responses[0][0] != "status":
            return None
        parts = self.split(response_words)
        first, last = parse_status(parts[0]), parse_status(parts[-1])
        return ((last.compute_total - first.compute_total) % _U32,
                (last.compute_count - first.compute_count) % _U32)

    def decode(self, response_words):
        """Response words -> int8 result of shape ``output_shape``.

        Raises
        ------
        AcceleratorError
            If the response stream has the wrong length or the final STATUS reports an error.
        """
        parts = self.split(response_words)
        status = self.status(response_words)
        if status is not None and status.error_pending:
            raise AcceleratorError(f"accelerator reported {status.error_name} "
                                   f"({status.error_count} errors)")
        c = self.config.cols
        wpr = -(-c // 4)
        y = np.empty((self.plan.m, self.plan.n), dtype=np.int8)
        stores = iter(part for part, (kind, _) in zip(parts, self.responses, strict=True)
                      if kind == "store")
        for row0, rows, col0, n_tiles in self.stores:
            data = next(stores).reshape(rows, n_tiles, wpr)
            block = unpack_lanes(data, c).reshape(rows, n_tiles * c)
            cols = min(self.plan.n - col0, n_tiles * c)
            y[row0:row0 + rows, col0:col0 + cols] = block[:, :cols]
        return y.reshape(self.output_shape)


def _check_codes(name, v, lo, hi):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {v!r}")
    return int(v)


def _channel_vector(name, v, n, lo, hi):
    a = np.asarray(v)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array, not dtype {a.dtype}")
    a = np.broadcast_to(a.astype(np.int64), (n,)) if a.ndim == 0 else a.astype(np.int64)
    if a.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), not {a.shape}")
    if np.any((a < lo) | (a > hi)):
        raise ValueError(f"{name} must be in [{lo}, {hi}]")
    return a


def compile_gemm(config, x, w, bias, m0, shift, z_out=0, act_min=-128, act_max=127, *,
                 status=True, strategy="overlap"):
    """Lower ``requantize(x @ w, bias, m0, shift, z_out, act_min, act_max)`` to a program.

    Parameters
    ----------
    config : AcceleratorConfig
    x : ndarray of int8, shape (M, K)
        Activations, raw codes (an input zero point belongs in ``bias``).
    w : ndarray of int8, shape (K, N)
        Weights in [-127, 127].
    bias : int array, shape (N,) or scalar
        Zero-point-folded int32 bias ``bias'``.
    m0, shift : int arrays, shape (N,) or scalar
        From :func:`multipliers`; shift within the build's rounding range.
    z_out, act_min, act_max : int
        Output zero point and clamp range, int8 codes, ``act_min <= act_max``.
    status : bool
        Start and end with a STATUS, so :meth:`Program.decode` can check for errors and
        :meth:`Program.usage` can tell the program's COMPUTE cycles.
    strategy : {"overlap", "fewest"}
        How to chunk, see :func:`plan_gemm`.

    Raises
    ------
    golden.arith.AccumulatorOverflowError
        If the worst case of ``acc`` could overflow ``acc_width`` bits or ``acc + bias'``
        int32.
    ValueError
        On bad operands, or when the output bank cannot hold a tile (see :func:`plan_gemm`).
    """
    x, w = np.asarray(x), np.asarray(w)
    if x.dtype != np.int8 or w.dtype != np.int8 or x.ndim != 2 or w.ndim != 2:
        raise ValueError(f"x and w must be 2-D int8 arrays, not {x.dtype} {x.shape} and "
                         f"{w.dtype} {w.shape}")
    (m, k), n = x.shape, w.shape[1]
    if w.shape[0] != k:
        raise ValueError(f"x (M, K) and w (K, N) must share K, not {x.shape} and {w.shape}")
    if m < 1 or k < 1 or n < 1:
        raise ValueError(f"M, K and N must be positive, not {m}, {k}, {n}")
    if np.any(w == -128):
        raise ValueError("weights must be in [-127, 127] (symmetric int8), not -128")
    shift_max = 31 if config.rounding == "double" else 30
    bias = _channel_vector("bias", bias, n, INT32_MIN, INT32_MAX)
    m0 = _channel_vector("m0", m0, n, 0, INT32_MAX)
    shift = _channel_vector("shift", shift, n, -31, shift_max)
    z_out = _check_codes("z_out", z_out, -128, 127)
    act_min = _check_codes("act_min", act_min, -128, 127)
    act_max = _check_codes("act_max", act_max, act_min, 127)
    what = f"GEMM M={m} K={k} N={n}"
    check_accumulator(w, bias, config.acc_width, name=what)
    plan = plan_gemm(config, m, k, n, strategy)
    return _lower(config, plan, x, w, bias, m0, shift, layer_word(z_out, act_min, act_max),
                  status, (m, n))


def _lower(config, plan, x, w, bias, m0, shift, layer, status, output_shape):
    r, c, k = config.rows, config.cols, plan.k
    mt_all, nt_all = plan.m_tiles, plan.n_tiles
    xp = np.zeros((mt_all * r, k), dtype=np.int8)
    xp[:plan.m] = x
    wp = np.zeros((k, nt_all * c), dtype=np.int8)
    wp[:, :plan.n] = w
    # Activation words: tile t, step k, lane i = X[t*R + i, k].
    act_words = xp.reshape(mt_all, r, k).transpose(0, 2, 1)
    # Weight words: tile u, step k, lane j = W[k, u*C + j].
    wgt_words = wp.reshape(k, nt_all, c).transpose(1, 0, 2)
    pars = [np.zeros(nt_all * c, dtype=np.int64) for _ in range(3)]
    for p, v in zip(pars, (bias, m0, shift), strict=True):
        p[:plan.n] = v
    pars = [p.reshape(nt_all, c) for p in pars]

    parts, responses, stores, commands = [], [], [], []
    pending = None   # the STORE of the last final step, issued after the next COMPUTE

    def emit(words, tiles=0, steps=0):
        start = commands[-1].start + commands[-1].size if commands else 0
        parts.append(words)
        commands.append(Command(Op(int(words[0]) >> 24), start, len(words), tiles, steps))

    def store(step):
        rows = min(plan.m, (step.t0 + step.m_tiles) * r) - step.t0 * r
        emit(cmd_store(step.out_bank, 0, rows * step.n_tiles))
        responses.append(("store", rows * step.n_tiles * -(-c // 4)))
        stores.append((step.t0 * r, rows, step.u0 * c, step.n_tiles))

    if status:
        emit(cmd_status())
        responses.append(("status", len(STATUS_WORDS)))
    for step in plan.steps:
        t, mt, u, nt = step.t0, step.m_tiles, step.u0, step.n_tiles
        ks = slice(step.k0, step.k0 + step.k)
        if step.load_act:
            emit(cmd_load_act(step.act_bank, 0, act_words[t:t + mt, ks].reshape(-1, r)))
        if step.load_wgt:
            emit(cmd_load_wgt(step.wgt_bank, 0, wgt_words[u:u + nt, ks].reshape(-1, c)))
        if step.load_par:
            emit(cmd_load_par(step.par_bank, 0, *(p[u:u + nt] for p in pars)))
        emit(cmd_compute(step.k, mt, nt, layer=layer, partial=step.partial,
                         banks=(step.act_bank, step.wgt_bank, step.par_bank, step.out_bank)),
             mt * nt, mt * nt * step.k)
        if pending is not None:
            store(pending)
            pending = None
        if not step.partial:
            pending = step
    store(pending)
    if status:
        emit(cmd_status())
        responses.append(("status", len(STATUS_WORDS)))
    words = pad_to_beats(np.concatenate(parts), config.host_width)
    return Program(config, words, tuple(responses), plan, tuple(output_shape), tuple(stores),
                   tuple(commands))


def compile_fully_connected(config, x, w, bias, m0, shift, *, z_in, z_out, act_min=-128,
                            act_max=127, status=True, strategy="overlap"):
    """FULLY_CONNECTED: ``x`` (B, K) int8, ``w`` (N, K) int8 (TFLite layout), int32 ``bias``
    (N,) or None, folded with ``z_in``. Result (B, N)."""
    from golden.ops import fold_bias

    w = np.asarray(w)
    x = np.asarray(x).reshape(np.shape(x)[0], -1)
    return compile_gemm(config, x, np.ascontiguousarray(w.T), fold_bias(bias, w, z_in),
                        m0, shift, z_out, act_min, act_max, status=status, strategy=strategy)


def compile_conv2d(config, x, w, bias, m0, shift, *, z_in, z_out, stride=(1, 1),
                   padding="VALID", dilation=(1, 1), act_min=-128, act_max=127, status=True,
                   strategy="overlap"):
    """CONV_2D lowered by ``golden.ops.im2col`` (padding holds ``z_in``) with the input zero
    point folded into the bias (``golden.ops.fold_bias``).

    Parameters
    ----------
    x : ndarray of int8, shape (B, H, W, Cin), NHWC
    w : ndarray of int8, shape (N, KH, KW, Cin), OHWI
    bias : ndarray of int32, shape (N,), or None
    Other parameters as :func:`compile_gemm` and ``golden.ops.conv2d``.

    Returns
    -------
    Program whose :meth:`~Program.decode` gives (B, OH, OW, N) int8.
    """
    from golden.ops import conv_geometry, fold_bias, im2col

    x, w = np.asarray(x), np.asarray(w)
    if x.ndim != 4 or w.ndim != 4 or w.shape[3] != x.shape[3]:
        raise ValueError(f"x must be NHWC and w OHWI with the same channels, not {x.shape} "
                         f"and {w.shape}")
    n, kh, kw, cin = w.shape
    stride = (stride, stride) if np.isscalar(stride) else tuple(stride)
    dilation = (dilation, dilation) if np.isscalar(dilation) else tuple(dilation)
    patches = im2col(x, (kh, kw), stride, padding, dilation, pad_value=z_in)
    wk = w.reshape(n, kh * kw * cin)
    oh = conv_geometry(x.shape[1], kh, stride[0], padding, dilation[0])[0]
    ow = conv_geometry(x.shape[2], kw, stride[1], padding, dilation[1])[0]
    program = compile_gemm(config, np.ascontiguousarray(patches), np.ascontiguousarray(wk.T),
                           fold_bias(bias, wk, z_in), m0, shift, z_out, act_min, act_max,
                           status=status, strategy=strategy)
    return replace(program, output_shape=(x.shape[0], oh, ow, n))


# --- running ---------------------------------------------------------------------------

class Driver:
    """Runs programs and single commands on a transport.

    Parameters
    ----------
    config : AcceleratorConfig
        The build on the other end (:meth:`identify` checks it).
    transport : callable
        ``transport(words, sizes) -> ndarray[uint32]``. ``words``: ``numpy.uint32`` input
        words, already padded to whole beats of ``config.host_width``; ``sizes``: the
        words of every response they produce, in order (ID 10, STATUS 6, a STORE its
        count x ``ceil(C / 4)``), so a transport knows how much to read:
        ``response_length(sizes, host_width)`` words, each response padded to whole
        beats. It returns those words, beat padding included, and raises on a link
        failure. It may keep state between calls (the accelerator does).
    """

    def __init__(self, config, transport):
        self.config = config
        self.transport = transport

    def transact(self, words, sizes):
        """Send ``words``; return the responses of ``sizes`` words each, padding removed."""
        response = self.transport(pad_to_beats(words, self.config.host_width), list(sizes))
        return split_responses(response, sizes, self.config.host_width)

    def identify(self):
        """ID -> :class:`DeviceId`; AcceleratorError if it is not ``config``'s build."""
        dev = parse_id(self.transact(cmd_id(), [len(ID_WORDS)])[0])
        built = dev.to_config(self.config.host_width)
        if built != reported(self.config):
            raise AcceleratorError(f"device is {built}, driver expects {self.config}")
        return dev

    def status(self):
        return parse_status(self.transact(cmd_status(), [len(STATUS_WORDS)])[0])

    def clear(self):
        self.transact(cmd_clear(), [])

    def run(self, program):
        """Run a :class:`Program`; its decoded result (AcceleratorError on errors)."""
        if program.config != self.config:
            raise ValueError("program was compiled for another configuration")
        return program.decode(self.transport(program.words,
                                             [n for _, n in program.responses]))

    def gemm(self, x, w, bias, m0, shift, z_out=0, act_min=-128, act_max=127):
        return self.run(compile_gemm(self.config, x, w, bias, m0, shift, z_out, act_min,
                                     act_max))

    def conv2d(self, x, w, bias, m0, shift, **kwargs):
        return self.run(compile_conv2d(self.config, x, w, bias, m0, shift, **kwargs))

    def fully_connected(self, x, w, bias, m0, shift, **kwargs):
        return self.run(compile_fully_connected(self.config, x, w, bias, m0, shift, **kwargs))

