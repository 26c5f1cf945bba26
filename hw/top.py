"""The whole accelerator: host adapters, controller with its buffers, MAC array, requantizer."""

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .compute import systolic_array
from .config import AcceleratorConfig
from .controller import Controller
from .host import WORD, HostToWords, WordsToHost
from .requant import Requantizer
from .skid import Relay, SkidBuffer

__all__ = ["Accelerator"]


class Accelerator(wiring.Component):
    """An R x C INT8 GEMM accelerator speaking ISA v1 (``docs/isa.md``) over two streams.

    ::

        i ─► HostToWords ─► Controller ─► WordsToHost ─► o
                              │    ▲
                     feed ────┘    └──── Requantizer ◄── SystolicArray ◄── feed

    Parameters
    ----------
    config : AcceleratorConfig

    Members
    -------
    i : :py:`In(stream.Signature(config.host_width))`
        Commands and load data, plain unsigned beats.
    o : :py:`Out(stream.Signature(config.host_width))`
        Responses (ID, STATUS, STORE data).
    """

    def __init__(self, config):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"Configuration must be an AcceleratorConfig, not {config!r}")
        self._config = config
        resources = config.resources
        self._array = systolic_array(config)
        self._requant = Requantizer(config.cols, config.acc_width, config.rounding,
                                    multipliers=resources.requant_multipliers,
                                    pipeline=resources.requant_pipeline)
        super().__init__({
            "i": In(stream.Signature(config.host_width)),
            "o": Out(stream.Signature(config.host_width)),
        })

    @property
    def config(self):
        return self._config

    @property
    def array_latency(self):
        """Cycles from a tile's ``last`` beat entering the array to its first output row."""
        return self._array.latency

    @property
    def requant_latency(self):
        """Pipeline depth of the requantizer."""
        return self._requant.latency

    def elaborate(self, platform):
        m = Module()
        c = self._config
        m.submodules.host_in = host_in = HostToWords(c.host_width)
        m.submodules.host_out = host_out = WordsToHost(c.host_width)
        m.submodules.controller = controller = Controller(c)
        m.submodules.array = array = self._array
        m.submodules.requant = requant = self._requant

        # The controller takes the command words through a register slice of its own: no
        # path from the host side (pins, a UART bridge) goes straight into its decoder.
        # On request a relay carries each host stream between the ports and the adapters
        # through plain registers (``Plan.host_relay``, ``hw.build --host-relay N``).
        host_i, host_o = wiring.flipped(self.i), wiring.flipped(self.o)
        relay = c.resources.host_relay
        if relay:
            m.submodules.in_relay = in_relay = Relay(c.host_width, relay)
            m.submodules.out_relay = out_relay = Relay(c.host_width, relay)
            wiring.connect(m, host_i, in_relay.i)
            wiring.connect(m, out_relay.o, host_o)
            host_i, host_o = in_relay.o, out_relay.i
        wiring.connect(m, host_i, host_in.i)
        wiring.connect(m, host_in.o, controller.i)
        # The controller's responses leave its own register slice, whose response
        # multiplexers sit next to the decoder; a second slice can sit next to the host side
        # (pins, a UART bridge), so the route between them carries no logic (not on iCE40:
        # ``Plan.response_slices``; with 3 the controller has two of its own), unless a
        # relay goes there.
        response = controller.o
        if not relay and c.resources.response_slices >= 2:
            m.submodules.out_slice = out_slice = SkidBuffer(WORD)
            wiring.connect(m, controller.o, out_slice.i)
            response = out_slice.o
        wiring.connect(m, response, host_out.i)
        wiring.connect(m, host_out.o, host_o)
        wiring.connect(m, controller.feed, array.i)
        wiring.connect(m, array.o, controller.acc)
        wiring.connect(m, controller.rq, requant.i)
        wiring.connect(m, requant.o, controller.res)
        return m
