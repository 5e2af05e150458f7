"""Running the command lines in-process (no new Python, no TVM import per case) or as processes,
and reading their one ``error:`` line."""
import contextlib
import importlib.util
import io
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


def entry_point(name: str):
    """``main`` of build_engine.py / inference.py, or of tools/<name>.py."""
    path = REPO / f"{name}.py" if (REPO / f"{name}.py").exists() else REPO / "tools" / f"{name}.py"
    if str(REPO / "tools") not in sys.path:
        sys.path.insert(0, str(REPO / "tools"))  # the tools' own `import _repo`
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


def run_process(args, timeout=600, **kwargs) -> Ran:
    """A command line as its own process (``args[0]`` a script of the repository or a program)."""
    first = str(args[0])
    command = [sys.executable, str(REPO / first)] if first.endswith(".py") else [first]
    proc = subprocess.run(command + [str(a) for a in args[1:]], cwd=kwargs.pop("cwd", REPO), capture_output=True,
                          text=True, timeout=timeout, **kwargs)
    return Ran(proc.returncode, proc.stdout, proc.stderr)
