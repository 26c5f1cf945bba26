"""Stream driver and monitor for Amaranth async testbenches, with bubbles and backpressure.

Both count cycles from their start: cycle ``t`` ends with the ``t``-th clock edge after
the call (0-based). Start them in the same cycle to compare their logs.
"""

__all__ = ["send", "recv"]


async def send(ctx, stream, payloads, *, rng=None, p_idle=0.0, log=None):
    """Drive ``payloads`` into ``stream`` (an ``amaranth.lib.stream`` interface, as seen by
    its sink) in order, one per handshake.

    Parameters
    ----------
    payloads : iterable
        Values ``ctx.set`` accepts for ``stream.payload`` (ints, dicts, lists, ...).
    rng : numpy.random.Generator, optional
        Source of randomness for bubbles.
    p_idle : float
        Probability of a bubble (``valid`` low for a cycle) before each beat.
    log : list, optional
        Receives the cycle in which each beat was accepted.
    """
    cycle = 0
    for payload in payloads:
        while rng is not None and rng.random() < p_idle:
            ctx.set(stream.valid, 0)
            await ctx.tick()
            cycle += 1
        ctx.set(stream.payload, payload)
        ctx.set(stream.valid, 1)
        while True:
            _, _, ready = await ctx.tick().sample(stream.ready)
            cycle += 1
            if ready:
                break
        if log is not None:
            log.append(cycle - 1)
    ctx.set(stream.valid, 0)


async def recv(ctx, stream, count, *, rng=None, p_stall=0.0, log=None):
    """Take ``count`` beats from ``stream`` (as seen by its source) and return their payloads.

    Parameters
    ----------
    rng : numpy.random.Generator, optional
        Source of randomness for backpressure.
    p_stall : float
        Probability that ``ready`` is low in a cycle.
    log : list, optional
        Receives the cycle in which each beat was taken.
    """
    payloads = []
    cycle = 0
    while len(payloads) < count:
        ready = not (rng is not None and rng.random() < p_stall)
        ctx.set(stream.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if ready and valid:
            payloads.append(payload)
            if log is not None:
                log.append(cycle)
        cycle += 1
    ctx.set(stream.ready, 0)
    return payloads
