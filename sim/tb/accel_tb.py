"""cocotb testbench of the whole accelerator (``hw.top.Accelerator``) at its host streams.

The pytest side (``tests/sim/test_accel_rtl.py``, ``sim.bench``) compiles programs with
``hw.driver`` and writes a case file ``CASE`` (.npz):

- ``runs``: number of runs; per run ``n``: ``words_n`` (uint32 input words, whole beats),
  ``expect_n`` (response words to collect), ``timeout_n`` (cycles), and ``reset_n``: empty,
  or (mode, count) to assert reset in the middle of the run, abandoning it and discarding its
  response: mode 0 after ``count`` cycles, 1 once ``count`` input beats were accepted, 2 once
  ``count`` output beats were accepted;
- backpressure: ``seed``, ``gap_p``/``gap_max`` (input valid gaps), ``stall_p``/``stall_max``
  (output ready stalls): before each beat, with probability p, 1..max idle cycles.

It writes ``OUT`` (.npz) with, per run, ``resp_n`` (response words; a few extra words if
the RTL sent more than expected), ``cycles_n`` (clock cycles of the run), and the cycle of
every accepted input beat ``in_accept_n`` / output beat ``out_accept_n`` plus the cycle each
input beat was first offered ``in_offer_n`` (their difference is handshake stall), all
counted from the start of the run, and ``wall_n``, the run's wall-clock seconds.

Python stays off the per-cycle path where it can: a driver wakes up only around its own
handshakes (once after the clock edge to drive, once in the read-only phase to sample),
sleeps through whole gaps and stalls with ``ClockCycles``, and while the DUT is not ready
(or not valid) it waits for that signal's edge instead of polling every cycle.
"""

import os
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, Event, ReadOnly, RisingEdge, SimTimeoutError, with_timeout

PERIOD_NS = 10


def gaps(rng, p, longest):
    """Idle cycles before each beat: 0, or with probability ``p`` 1..``longest``."""
    while True:
        yield rng.randint(1, longest) if p > 0 and rng.random() < p else 0


def cycle_now():
    return get_sim_time("ns") // PERIOD_NS


def _notify(notify, count):
    if notify is not None and count == notify[0]:
        notify[1].set()


class StreamSource:
    """Drives the sink side of an Amaranth stream (``payload``, ``valid``; ``ready`` in)."""

    def __init__(self, clk, payload, valid, ready, idle, notify=None):
        self.clk, self.payload, self.valid, self.ready = clk, payload, valid, ready
        self.idle = idle
        self.notify = notify   # (beats, Event): set the event once that many were accepted
        self.valid.value = 0
        self.offered, self.accepted = [], []

    async def send(self, beats):
        for beat in beats:
            gap = next(self.idle)
            if gap:
                self.valid.value = 0
                await ClockCycles(self.clk, gap)
            self.payload.value = beat
            self.valid.value = 1
            self.offered.append(cycle_now())
            while True:
                await ReadOnly()
                if self.ready.value:
                    break
                await RisingEdge(self.ready)
            await RisingEdge(self.clk)
            self.accepted.append(cycle_now())
            _notify(self.notify, len(self.accepted))
        self.valid.value = 0

    def idle_now(self):
        self.valid.value = 0


class StreamSink:
    """Takes beats from the source side of an Amaranth stream, with ``ready`` stalls."""

    def __init__(self, clk, payload, valid, ready, stalls, notify=None):
        self.clk, self.payload, self.valid, self.ready = clk, payload, valid, ready
        self.stalls = stalls
        self.notify = notify
        self.ready.value = 0
        self.beats, self.accepted = [], []

    async def recv(self, count):
        for _ in range(count):
            stall = next(self.stalls)
            if stall:
                self.ready.value = 0
                await ClockCycles(self.clk, stall)
            self.ready.value = 1
            while True:
                await ReadOnly()
                if self.valid.value:
                    break
                await RisingEdge(self.valid)
            self.beats.append(int(self.payload.value))
            await RisingEdge(self.clk)
            self.accepted.append(cycle_now())
            _notify(self.notify, len(self.accepted))

    async def drain(self, cycles):
        """Keep ``ready`` high for ``cycles`` cycles and take whatever comes (should be
        nothing once a program's responses are complete)."""
        self.ready.value = 1
        for _ in range(cycles):
            await ReadOnly()
            if self.valid.value:
                self.beats.append(int(self.payload.value))
            await RisingEdge(self.clk)
        self.ready.value = 0


class TB:
    """Clock, reset, the input driver and the output monitor of one Accelerator.

    Widths come from the DUT: ``host_width = len(dut.i__payload)``.
    """

    def __init__(self, dut, *, seed=0, gap_p=0.0, gap_max=1, stall_p=0.0, stall_max=1):
        self.dut = dut
        self.host_width = len(dut.i__payload)
        if len(dut.o__payload) != self.host_width:
            raise AssertionError("host streams i and o must have the same width")
        rng = random.Random(seed)
        self.idle = gaps(rng, gap_p, gap_max)
        self.stalls = gaps(rng, stall_p, stall_max)
        dut.i__valid.value = 0
        dut.o__ready.value = 0
        dut.rst.value = 0
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())

    async def reset(self, cycles=3):
        self.dut.i__valid.value = 0
        self.dut.o__ready.value = 0
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    # Words <-> beats, as "Words and beats" of docs/isa.md.
    def to_beats(self, words):
        w = self.host_width
        words = [int(x) for x in words]
        if w >= 32:
            per = w // 32
            return [sum(x << (32 * j) for j, x in enumerate(words[i:i + per]))
                    for i in range(0, len(words), per)]
        per, mask = 32 // w, (1 << w) - 1
        return [(x >> (w * j)) & mask for x in words for j in range(per)]

    def from_beats(self, beats):
        w = self.host_width
        if w >= 32:
            return [(b >> (32 * j)) & 0xFFFFFFFF for b in beats for j in range(w // 32)]
        per = 32 // w
        # A trailing partial word is kept: extra beats must show up as extra words.
        return [sum(b << (w * j) for j, b in enumerate(beats[i:i + per]))
                for i in range(0, len(beats), per)]

    def beats_for(self, n_words):
        w = self.host_width
        return -(-n_words // (w // 32)) if w >= 32 else n_words * (32 // w)

    async def transact(self, words, expect_words, *, timeout_cycles, drain=16,
                       notify_in=None, notify_out=None):
        """Send ``words``, collect ``expect_words`` response words (+ any extra within
        ``drain`` cycles). Returns (response words, source, sink, cycles).

        ``notify_in``/``notify_out``: (beats, Event), set once that many beats passed.
        """
        clk = self.dut.clk
        source = StreamSource(clk, self.dut.i__payload, self.dut.i__valid, self.dut.i__ready,
                              self.idle, notify_in)
        sink = StreamSink(clk, self.dut.o__payload, self.dut.o__valid, self.dut.o__ready,
                          self.stalls, notify_out)
        start = cycle_now()
        sending = cocotb.start_soon(source.send(self.to_beats(words)))
        receiving = cocotb.start_soon(sink.recv(self.beats_for(expect_words)))
        try:
            await with_timeout(_join(sending, receiving), timeout_cycles * PERIOD_NS, "ns")
        except SimTimeoutError:
            raise AssertionError(
                f"timeout after {timeout_cycles} cycles: sent {len(source.accepted)} of "
                f"{len(self.to_beats(words))} beats, received {len(sink.beats)} of "
                f"{self.beats_for(expect_words)}; i.ready={self.dut.i__ready.value} "
                f"o.valid={self.dut.o__valid.value}") from None
        finally:
            # Also on cancellation (a reset in the middle of the run).
            for task in (sending, receiving):
                if not task.done():
                    task.cancel()
            source.idle_now()
        await sink.drain(drain)
        cycles = cycle_now() - start
        shift = np.int64(start)
        source.offered = np.asarray(source.offered, np.int64) - shift
        source.accepted = np.asarray(source.accepted, np.int64) - shift
        sink.accepted = np.asarray(sink.accepted, np.int64) - shift
        return self.from_beats(sink.beats), source, sink, cycles - drain


async def _join(*tasks):
    for task in tasks:
        await task


@cocotb.test()
async def run_case(dut):
    """Run the programs of ``CASE``, write what the RTL answered to ``OUT``."""
    case = np.load(os.environ["CASE"])
    tb = TB(dut, seed=int(case["seed"]), gap_p=float(case["gap_p"]),
            gap_max=int(case["gap_max"]), stall_p=float(case["stall_p"]),
            stall_max=int(case["stall_max"]))
    await tb.reset()
    out = {}
    for n in range(int(case["runs"])):
        words, expect = case[f"words_{n}"], int(case[f"expect_{n}"])
        timeout, reset = int(case[f"timeout_{n}"]), [int(v) for v in case[f"reset_{n}"]]
        if reset:
            mode, count = reset
            event = Event()
            run = cocotb.start_soon(tb.transact(
                words, expect, timeout_cycles=timeout,
                notify_in=(count, event) if mode == 1 else None,
                notify_out=(count, event) if mode == 2 else None))
            if mode == 0:
                await ClockCycles(dut.clk, count)
            else:
                await with_timeout(event.wait(), timeout * PERIOD_NS, "ns")
            assert not run.done(), f"run {n} finished before its reset ({mode}, {count})"
            run.cancel()
            await tb.reset()
            out[f"resp_{n}"] = np.zeros(0, np.uint32)
            out[f"cycles_{n}"] = 0
            continue
        wall = time.perf_counter()
        resp, source, sink, cycles = await tb.transact(words, expect, timeout_cycles=timeout)
        out[f"wall_{n}"] = time.perf_counter() - wall
        out[f"resp_{n}"] = np.asarray(resp, dtype=np.uint32)
        out[f"cycles_{n}"] = cycles
        out[f"in_offer_{n}"] = source.offered
        out[f"in_accept_{n}"] = source.accepted
        out[f"out_accept_{n}"] = sink.accepted
    np.savez(os.environ["OUT"], **out)
