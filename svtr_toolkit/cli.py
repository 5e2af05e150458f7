"""The command-line vocabulary every entry point shares (build_engine.py, inference.py, tools/).

One name per thing, documented once in docs/usage.md (One vocabulary):

    --preset NAME         a model preset (svtr, ppocrv4): default model, config and image shape
    --model_path PATH     the ONNX model an engine is built from / onnxruntime runs
    --input NAME:N,C,H,W  the model input an engine is built for
    --batchsize N         the batch size (with --preset, it completes --input)
    --precision P         fp16, bf16 or fp32 (tools that loop over several take P[,P])
    --runtime NAME        what runs an .onnx model: onnxruntime (the reference) or openvino
    --engine PATH         an engine (or .onnx) to read; --engine_path is where one is written
    --datasets DIR        a folder of LMDBs;  --config YML a PaddleOCR rec config
    --rpc HOST:PORT:KEY   build for, run on or tune on a remote device through TVM's RPC tracker
    --out PATH            an output file;     --out_dir DIR an output folder

Errors that name a flag belong here, not in the library.
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import time

from .engine_file import PRECISIONS
from .errors import ToolkitError, pending_interrupt, record_interrupt
from .presets import DEFAULT_PRESET, PRESETS, get_preset


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are the toolkit's one ``error:`` line, exit status 2."""

    def __init__(self, doc=None, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(description=doc, **kwargs)

    def error(self, message):
        raise ToolkitError(message)


def choice(what: str, options):
    """An argparse ``type`` for a closed set: ``unknown <what> 'x' (choose from ...)`` otherwise."""
    options = tuple(options)

    def check(text):
        if text not in options:
            raise argparse.ArgumentTypeError(f"unknown {what} '{text}' (choose from {', '.join(options)})")
        return text

    check.__name__ = what
    return check


class Terminated(KeyboardInterrupt):
    """SIGTERM (what ``timeout`` and CI runners send), raised like Ctrl-C so every ``finally`` and
    ``except BaseException`` cleanup runs (partial engines, staging folders)."""


# How long SIGTERM's cleanup may take before the process ends without it. A Python signal
# handler runs only between bytecodes of the main thread, never inside a long C call (a TVM
# time evaluator, a compile), so the handler alone cannot promise that SIGTERM ends the process.
TERM_GRACE_S = 3.0
_FINAL_LINE: list = []  # the one line run_cli printed, so the watchdog does not print a second
_EXITING = threading.Lock()  # the handler and the watchdog may both end the process: one says why


def _exit_now(line: str, code: int):
    """End the process at once (no cleanup: what a staging folder holds is removed by the next
    run, its lock being free), saying why on stderr unless run_cli already did."""
    if not _EXITING.acquire(blocking=False):
        while True:  # the other one is ending the process
            time.sleep(1)
    if not _FINAL_LINE:
        os.write(2, f"error: {line}\n".encode())
    os._exit(code)


def _on_sigterm(signum, frame):
    if pending_interrupt() is not None:  # a second signal: no second cleanup
        _exit_now("terminated", 143)
    raise record_interrupt(Terminated())


def _on_sigint(signum, frame):
    if pending_interrupt() is not None:  # a second Ctrl-C: the user does not want to wait for the cleanup
        _exit_now("interrupted", 130)
    raise record_interrupt(KeyboardInterrupt())


def _watch_signals(wakeup_fd: int) -> None:
    """The watchdog thread: woken by the C-level signal handler itself (through the wakeup fd),
    whatever the main thread is doing. SIGTERM: the process ends TERM_GRACE_S later if the handler
    and its cleanup have not ended it; a second Ctrl-C ends it at once."""
    interrupts = 0
    while True:
        try:
            data = os.read(wakeup_fd, 64)
        except OSError:
            return
        if not data:
            return
        for signum in data:
            if signum == signal.SIGTERM and signal.getsignal(signal.SIGTERM) is _on_sigterm:
                time.sleep(TERM_GRACE_S)
                _exit_now("terminated", 143)
            if signum == signal.SIGINT and signal.getsignal(signal.SIGINT) is _on_sigint:
                interrupts += 1
                if interrupts > 1:
                    _exit_now("interrupted", 130)


def _install_signal_handlers() -> None:
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread (a test calling main in a worker)
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    os.register_at_fork(after_in_child=_forget_wakeup_fd)
    threading.Thread(target=_watch_signals, args=(read_end,), name="svtr-signals", daemon=True).start()


def _forget_wakeup_fd() -> None:
    """In a forked child (MetaSchedule's candidate builders): its signals would be written into the
    parent's pipe, and one Ctrl-C to the process group would read there as a second."""
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:  # forked from a thread other than the main one: not Python's main thread
        pass


def _final(line: str, code: int) -> int:
    _FINAL_LINE.append(line)
    print(f"error: {line}", file=sys.stderr)
    return code


def exit_status(main, argv=None) -> int:
    """``main(argv)``'s exit status: a ToolkitError is one ``error:`` line on stderr and 2,
    Ctrl-C ``error: interrupted`` (130), SIGTERM ``error: terminated`` (143). What ``run_cli``
    exits with, and what tests call to run a command line in-process."""
    try:
        code = main(argv)
        if pending_interrupt() is not None:  # raised inside a library that swallowed it: still honoured
            raise pending_interrupt()
    except ToolkitError as exc:
        return _final(str(exc), 2)
    except Terminated:
        return _final("terminated", 143)
    except KeyboardInterrupt:
        return _final("interrupted", 130)
    return code or 0


def run_cli(main, argv=None):
    """Run a command line's ``main`` and exit with ``exit_status``. SIGTERM ends the process within
    TERM_GRACE_S whatever it is doing; a second Ctrl-C ends it at once."""
    _install_signal_handlers()
    sys.exit(exit_status(main, argv))


def _number(text) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _integer(text) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def fraction(text) -> float:
    """An argparse ``type`` for a threshold that is a fraction in [0, 1] (0.88 = 88 %)."""
    value = _number(text)
    if not 0 <= value <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"a fraction in [0, 1] is expected (0.88 means 88 %), got '{text}'")
    return value


def positive_int(text) -> int:
    """An argparse ``type`` for a count: an integer above 0."""
    value = _integer(text)
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"a positive integer is expected, got '{text}'")
    return value


def nonnegative_int(text) -> int:
    """An argparse ``type`` for a count that may be 0."""
    value = _integer(text)
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"an integer of 0 or more is expected, got '{text}'")
    return value


def positive(text) -> float:
    """An argparse ``type`` for a threshold that is a finite number above 0 (images/s)."""
    value = _number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"a finite number above 0 is expected, got '{text}'")
    return value


def nonnegative(text) -> float:
    """An argparse ``type`` for a finite number that may be 0 (a longest wait, seconds)."""
    value = _number(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"a finite number of 0 or more is expected, got '{text}'")
    return value


def choice_list(what: str, options):
    """An argparse ``type`` for a comma-separated selection from a closed set: each one known,
    none twice, at least one; returned in the order given."""
    options = tuple(options)

    def check(text):
        items = [item.strip() for item in text.split(",")]
        unknown = [item for item in items if item not in options]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {what} '{unknown[0]}' (choose from {', '.join(options)}, "
                                             f"separated by commas)")
        twice = [item for item in options if items.count(item) > 1]
        if twice:
            raise argparse.ArgumentTypeError(f"{what} '{twice[0]}' is given twice")
        return items

    check.__name__ = f"list of {what}s"
    return check


def port(text) -> int:
    """An argparse ``type`` for a TCP port, 1 to 65535."""
    value = _integer(text)
    if value is None or not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"a TCP port (1 to 65535) is expected, got '{text}'")
    return value


def path(text) -> str:
    """An argparse ``type`` for every path flag: an empty path is an error, never "no path"
    (``--report ''`` would otherwise write no report, ``--out_dir ''`` the current folder)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path is given")
    return text


def text(what: str):
    """An argparse ``type`` for a name that must not be empty (a key, an input name, a host)."""

    def check(value):
        if not value.strip():
            raise argparse.ArgumentTypeError(f"an empty {what} is given")
        return value

    check.__name__ = what
    return check


def refuse_unused_gates(args, used: set, mode: str, how: dict, verb: str = "checked by"):
    """A threshold (or any option) given to a mode that does not check (use) it is an error,
    never silently ignored.

    ``used``: the gate flags (dest names) this mode checks; ``how``: per gate flag, the
    sentence saying which mode does check it; ``verb``: "checked by" a gate, "used by" an option."""
    for dest, where in how.items():
        if dest not in used and getattr(args, dest, None) is not None:
            raise ToolkitError(f"--{dest} is not {verb} {mode} ({where}); drop it or change the mode")


def parse_input_spec(text: str):
    """``x:32,3,64,256`` -> ("x", (32, 3, 64, 256))."""
    name, sep, dims = (text or "").partition(":")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not name or len(shape) != 4 or any(d <= 0 for d in shape):
        raise ToolkitError(f"--input must look like name:N,C,H,W with positive integers (e.g. x:32,3,64,256), got '{text}'")
    return name, shape


def parse_precisions(text: str) -> list:
    """``fp32,fp16`` -> ["fp32", "fp16"], each one of PRECISIONS."""
    precisions = [p.strip() for p in (text or "").split(",") if p.strip()]
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise ToolkitError(f"unknown precision '{','.join(unknown) or text}' (choose from {', '.join(PRECISIONS)})")
    return precisions


def add_preset(parser, default=None):
    parser.add_argument("--preset", default=default, type=choice("model preset", PRESETS),
                        metavar="{" + ",".join(PRESETS) + "}",
                        help=f"model preset ({', '.join(PRESETS)}): default model, config and image shape"
                             + (f" (default {default})" if default else ""))


class _Deprecated(argparse.Action):
    """An old flag that still works, with a one-line note on stderr. A switch (``nargs=0``)
    stands for the new flag with the value ``const``."""

    def __init__(self, option_strings, dest, new=None, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if self.nargs == 0:
            print(f"note: {option_string} is deprecated; use {self.new} {','.join(self.const)}", file=sys.stderr)
            values = self.const
        else:
            print(f"note: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated(parser, old: str, new: str, **kwargs):
    """Accept ``old`` as a hidden alias of the flag ``new`` (same destination)."""
    parser.add_argument(old, dest=new.lstrip("-"), action=_Deprecated, new=new, help=argparse.SUPPRESS, **kwargs)


def add_deprecated_switch(parser, old: str, new: str, value: list):
    """Accept the switch ``old`` as a hidden alias of ``new`` given ``value`` (a list flag's items)."""
    add_deprecated(parser, old, new, nargs=0, const=list(value))


def add_precision(parser, **kwargs):
    parser.add_argument("--precision", type=choice("precision", PRECISIONS), metavar="{" + ",".join(PRECISIONS) + "}",
                        **kwargs)


def add_runtime(parser, runtimes):
    """``--runtime NAME`` and ``--precision P`` for an .onnx model: ``runtimes`` maps each runtime
    (``runtime.ONNX_RUNTIMES``) to the precisions it can be asked to compute in. Whether a pair
    fits a model is ``runtime.runtime_problem``'s to say."""
    names = tuple(runtimes)
    parser.add_argument("--runtime", default=None, type=choice("runtime", names), metavar="{" + ",".join(names) + "}",
                        help=f"what runs an .onnx --engine (default {names[0]}, the reference); an engine runs on "
                             f"the runtime it was built for")
    offers = "; ".join(f"{name}: {', '.join(precisions)}" for name, precisions in runtimes.items())
    add_precision(parser, default=None,
                  help=f"what an .onnx model's runtime computes in ({offers}; default: the runtime's own, which the "
                       f"output and --report name)")



def _tracker_address(text):
    from .rpc import TrackerAddress

    try:
        return TrackerAddress.parse(text)
    except ToolkitError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def add_rpc(parser, what: str):
    """``--rpc HOST:PORT:KEY``: the same option on every command line and script."""
    parser.add_argument("--rpc", type=_tracker_address, default=None, metavar="HOST:PORT:KEY",
                        help=f"{what} on a device served under KEY by the TVM RPC tracker at HOST:PORT "
                             f"(servers: tools/rpc_server.py)")
