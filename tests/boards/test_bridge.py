# amaranth: UnusedElaboratable=no
"""The link bridge on the Amaranth simulator, driven by a host that follows
``boards.link`` (frames, credit window) with an echo device behind it:
``device output == f(host input)`` in order, with stalls everywhere, and every corrupted
frame reported as a fault instead of reaching the device."""

import numpy as np
import pytest
from amaranth.lib.crc import catalog
from amaranth.sim import Simulator

from boards.bridge import LinkBridge
from boards.link import Fault, FrameReader, Kind, LinkError, crc16, frame

DEPTH = 512


def test_crc16_is_xmodem():
    rng = np.random.default_rng(0)
    ref = catalog.CRC16_XMODEM(8)
    for n in (0, 1, 7, 255):
        data = rng.integers(0, 256, n).tolist()
        assert crc16(data) == ref.compute(data)


def test_frame_reader_round_trip_and_corruption():
    frames = [(Kind.DATA, bytes(range(200))), (Kind.CREDIT, b"\x01\x00"), (Kind.READY, b"")]
    stream = b"".join(frame(k, p) for k, p in frames)
    reader = FrameReader()
    got = []
    for i in range(0, len(stream), 17):
        got += reader.feed(stream[i:i + 17])
    assert got == [(int(k), p) for k, p in frames]
    bad = bytearray(stream)
    bad[40] ^= 0x10
    with pytest.raises(LinkError, match="CRC"):
        FrameReader().feed(bytes(bad))
    with pytest.raises(LinkError, match="where a frame should start"):
        FrameReader().feed(b"\x00" + stream)
    assert FrameReader(resync=True).feed(b"\xa5\x44\x03" + stream) == got
    with pytest.raises(ValueError, match="at most 255"):
        frame(Kind.DATA, bytes(256))


def transform(b):
    return b ^ 0x5A


def run_bridge(stream_plan, *, seed, p_stall=0.3, idle_timeout=200, cycles=40000):
    """Run the bridge; ``stream_plan``: list of (frame bytes, window payload bytes) the
    host sends in order once the window allows, or (None, 0) for a pause. Returns (frames
    received, bytes the device got, host state)."""
    dut = LinkBridge(depth=DEPTH, idle_timeout=idle_timeout, tx_depth=64)
    rng = np.random.default_rng(seed)
    reader = FrameReader()
    received, device_in = [], []
    state = {"window": 0, "done": False}

    async def host(ctx):
        for data, cost in stream_plan:
            if data is None:    # the host's pause after a fault, longer than the timeout
                await ctx.tick().repeat(2 * idle_timeout)
                continue
            while state["window"] < cost:
                await ctx.tick()
            state["window"] -= cost
            for byte in data:
                ctx.set(dut.rx.payload, byte)
                ctx.set(dut.rx.valid, 1)
                await ctx.tick()
                ctx.set(dut.rx.valid, 0)
                for _ in range(int(rng.integers(0, 4))):
                    await ctx.tick()
        state["done"] = True

    async def device(ctx):
        # Echo through a one-byte register, stalling at random in both directions.
        held = None
        while True:
            ctx.set(dut.host.ready, held is None and rng.random() > p_stall)
            ctx.set(dut.dev.valid, held is not None and rng.random() > p_stall)
            if held is not None:
                ctx.set(dut.dev.payload, transform(held))
            _, _, hv, hr, hp, dv, dr = await ctx.tick().sample(
                dut.host.valid, dut.host.ready, dut.host.payload,
                dut.dev.valid, dut.dev.ready)
            if dv and dr:
                held = None
            if hv and hr:
                device_in.append(hp)
                held = hp

    async def uart_tx(ctx):
        for _ in range(cycles):
            ctx.set(dut.tx.ready, rng.random() > p_stall)
            _, _, valid, ready, payload = await ctx.tick().sample(
                dut.tx.valid, dut.tx.ready, dut.tx.payload)
            if valid and ready:
                for kind, body in reader.feed(bytes([payload])):
                    received.append((kind, body))
                    if kind == Kind.READY:
                        state["window"] = int.from_bytes(body[:2], "big")
                    elif kind == Kind.CREDIT:
                        state["window"] += int.from_bytes(body, "big")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(device)
    sim.add_testbench(host, background=True)
    sim.add_testbench(uart_tx)
    state["window"] = 5   # enough for the RESET frame, which costs nothing of the window
    sim.run()
    return received, device_in, state


def data_frames(payload, size):
    return [(frame(Kind.DATA, payload[i:i + size]), len(payload[i:i + size]))
            for i in range(0, len(payload), size)]


@pytest.mark.parametrize("seed,size,count", [(0, 255, 3 * DEPTH), (1, 37, 400), (2, 1, 100)])
def test_bytes_pass_in_order_under_the_window(seed, size, count):
    rng = np.random.default_rng(seed)
    payload = bytes(rng.integers(0, 256, count).tolist())
    plan = [(frame(Kind.RESET), 0)] + data_frames(payload, size)
    received, device_in, state = run_bridge(plan, seed=seed, cycles=12 * count + 2000)
    assert state["done"]
    assert received[0] == (Kind.READY, bytes([DEPTH >> 8, DEPTH & 0xFF, 1]))
    kinds = {k for k, _ in received}
    assert Kind.FAULT not in kinds
    assert bytes(device_in) == payload
    out = b"".join(body for k, body in received if k == Kind.DATA)
    assert out == bytes(transform(b) for b in payload)
    credits = sum(int.from_bytes(b, "big") for k, b in received if k == Kind.CREDIT)
    assert credits == len(payload)


@pytest.mark.parametrize("where", ["payload", "crc", "length"])
def test_a_corrupted_frame_never_reaches_the_device(where):
    rng = np.random.default_rng(5)
    payload = bytes(rng.integers(0, 256, 100).tolist())
    good = frame(Kind.DATA, payload[:50])
    bad = bytearray(frame(Kind.DATA, payload[50:]))
    bad[{"payload": 10, "crc": -1, "length": 2}[where]] ^= 0x04
    plan = [(frame(Kind.RESET), 0), (good, 50), (bytes(bad), 50)]
    received, device_in, _ = run_bridge(plan, seed=5, cycles=6000)
    assert bytes(device_in) == payload[:50]
    faults = [body for k, body in received if k == Kind.FAULT]
    assert len(faults) == 1
    assert Fault(faults[0][0]) & (Fault.CRC | Fault.TIMEOUT)


def test_a_lost_byte_ends_in_a_fault_and_reset_recovers():
    payload = bytes(range(60))
    lossy = frame(Kind.DATA, payload[:30])
    lossy = lossy[:7] + lossy[8:]
    plan = [(frame(Kind.RESET), 0), (lossy, 30), (None, 0), (frame(Kind.RESET), 0),
            (frame(Kind.DATA, payload[30:]), 30)]
    received, device_in, _ = run_bridge(plan, seed=6, cycles=8000, idle_timeout=100)
    assert bytes(device_in) == payload[30:]
    kinds = [k for k, _ in received]
    assert kinds.count(Kind.FAULT) == 1 and kinds.count(Kind.READY) == 2
    fault = next(body for k, body in received if k == Kind.FAULT)
    assert Fault(fault[0]) & Fault.TIMEOUT


def test_bad_parameters():
    with pytest.raises(ValueError, match="power of two"):
        LinkBridge(depth=1000)
    with pytest.raises(ValueError, match="idle_timeout"):
        LinkBridge(idle_timeout=3)
