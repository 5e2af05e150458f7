"""The command-line vocabulary every entry point shares (build_engine.py, inference.py, tools/).

One name per thing, documented once in the README's Commands section:

    --preset NAME         a model preset (svtr, ppocrv4): default model, config and image shape
    --model_path PATH     the ONNX model an engine is built from / onnxruntime runs
    --input NAME:N,C,H,W  the model input an engine is built for
    --batchsize N         the batch size (with --preset, it completes --input)
    --precision P         fp16 or fp32 (tools that loop over several take P[,P])
    --engine PATH         an engine (or .onnx) to read; --engine_path is where one is written
    --datasets DIR        a folder of LMDBs;  --config YML a PaddleOCR rec config
    --rpc HOST:PORT:KEY   build for, run on or tune on a remote device through TVM's RPC tracker
    --out PATH            an output file;     --out_dir DIR an output folder

Errors that name a flag belong here, not in the library.
"""
from __future__ import annotations

import argparse
import math
import signal
import sys

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
    ``except BaseException`` cleanup runs (partial engines, export folders)."""


def _on_sigterm(signum, frame):
    raise record_interrupt(Terminated())


def _on_sigint(signum, frame):
    raise record_interrupt(KeyboardInterrupt())


def run_cli(main, argv=None):
    """Run ``main(argv)``; a ToolkitError becomes one line on stderr and exit status 2,
    Ctrl-C ``error: interrupted`` (130), SIGTERM ``error: terminated`` (143)."""
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread (a test calling main in a worker)
        pass
    try:
        code = main(argv)
        if pending_interrupt() is not None:  # raised inside a library that swallowed it: still honoured
            raise pending_interrupt()
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Terminated:
        print("error: terminated", file=sys.stderr)
        sys.exit(143)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def _number(text) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def fraction(text) -> float:
    """An argparse ``type`` for a threshold that is a fraction in [0, 1] (0.88 = 88 %)."""
    value = _number(text)
    if not 0 <= value <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"a fraction in [0, 1] is expected (0.88 means 88 %), got '{text}'")
    return value


def positive_int(text) -> int:
    """An argparse ``type`` for a count: an integer above 0."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a positive integer is expected, got '{text}'")
    return value


def positive(text) -> float:
    """An argparse ``type`` for a threshold that is a finite number above 0 (images/s)."""
    value = _number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"a finite number above 0 is expected, got '{text}'")
    return value


def refuse_unused_gates(args, used: set, mode: str, how: dict):
    """A threshold given to a mode that does not check it is an error, never silently ignored.

    ``used``: the gate flags (dest names) this mode checks; ``how``: per gate flag, the
    sentence saying which mode does check it."""
    for dest, where in how.items():
        if dest not in used and getattr(args, dest, None) is not None:
            raise ToolkitError(f"--{dest} is not checked by {mode} ({where}); drop it or change the mode")


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
    """An old flag that still works, with a one-line note on stderr."""

    def __init__(self, option_strings, dest, new=None, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"note: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated(parser, old: str, new: str, **kwargs):
    """Accept ``old`` as a hidden alias of the flag ``new`` (same destination)."""
    parser.add_argument(old, dest=new.lstrip("-"), action=_Deprecated, new=new, help=argparse.SUPPRESS, **kwargs)


def add_precision(parser, **kwargs):
    parser.add_argument("--precision", type=choice("precision", PRECISIONS), metavar="{" + ",".join(PRECISIONS) + "}",
                        **kwargs)



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
