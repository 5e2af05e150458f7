"""The repository's one path constant and the one way tests run its command lines: in this
process through ``main(argv)`` (no new Python, no TVM import per case: error paths and most
runs), or as a process (the scripts end to end, signals, what only a real process shows)."""
import contextlib
import importlib.util
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from svtr_toolkit.cli import exit_status

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def error(self) -> str:
        """The run's one ``error:`` line (asserted to be the only one, without a traceback)."""
        lines = [ln for ln in self.err.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in self.err, self.err
        return lines[0]

    def one_error(self, code: int = 2) -> str:
        """The run ended with ``code`` and exactly one ``error:`` line, no traceback: that line."""
        assert self.code == code, (self.code, self.out[-2000:], self.err[-2000:])
        return self.error


def entry_point(name: str):
    """``main`` of build_engine.py / inference.py, or of tools/<name>.py."""
    path = REPO / f"{name}.py" if (REPO / f"{name}.py").exists() else REPO / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"entry_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def run_main(name: str, *argv) -> Ran:
    """A command line run in this process, as ``run_cli`` would run it (exit status, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = exit_status(entry_point(name), [str(a) for a in argv])
    return Ran(code, out.getvalue(), err.getvalue())


def _command(args) -> list:
    """``args`` with a repository script (``inference.py``, ``tools/x.py``, ``scripts/x.sh``) run by
    this Python or bash; anything else (``bash``, ``setpriv``) run as it is."""
    first = str(args[0])
    if first.endswith(".py"):
        return [sys.executable, str(REPO / first), *map(str, args[1:])]
    if first.endswith(".sh"):
        return ["bash", str(REPO / first), *map(str, args[1:])]
    return [str(a) for a in args]


def _environment(env: dict | None) -> dict | None:
    """os.environ with ``env`` over it; a value of None removes that variable."""
    if env is None:
        return None
    merged = dict(os.environ)
    for key, value in env.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    return merged


def run_process(args, timeout=600, env=None, cwd=REPO) -> Ran:
    """A command line as its own process, to its end (``env``: variables over os.environ)."""
    proc = subprocess.run(_command(args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=_environment(env))
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def start_process(args, env=None, cwd=REPO, **popen) -> subprocess.Popen:
    """A command line started as its own process, text pipes for its output, for a test that
    interrupts it or reads it while it runs. Ctrl-C reaches it as it would from a terminal
    even when the suite itself runs with SIGINT ignored (a shell's background job, nohup):
    the command would inherit that and, rightly, keep ignoring it."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    popen.setdefault("preexec_fn", _interruptible)
    return subprocess.Popen(_command(args), cwd=cwd, text=True, env=_environment(env), **popen)


def _interruptible() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
