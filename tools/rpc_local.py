"""A tracker and N RPC servers on this machine (127.0.0.1 only), for trying --rpc out.

    python tools/rpc_local.py --servers 2                 # prints the --rpc address, Ctrl-C stops all
    python build_engine.py --preset svtr --precision fp32 --rpc 127.0.0.1:PORT:svtr-local

Each server is its own process group with its own TVM thread pool (--threads, default 1, so
two servers on one machine behave like two single-core boards); logs go to --log_dir.
Stopping (Ctrl-C, SIGTERM) ends the tracker, the servers and any session they forked.

``LocalPool`` is also the tests' pool. It lives here, not in ``svtr_toolkit.rpc``: the client
there is what the command lines use against real devices; starting and killing local servers is
development.
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import _repo  # noqa: F401  (the checkout on sys.path)
from svtr_toolkit import cli
from svtr_toolkit.cli import run_cli
from svtr_toolkit.errors import ToolkitError
from svtr_toolkit.paths import in_repo
from svtr_toolkit.rpc import TrackerAddress, tracker_state


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at this moment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def signal_group(proc: subprocess.Popen, sig) -> None:
    """``sig`` to ``proc``'s whole process group (sessions a server forked live in it)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class LocalPool:
    """A tracker and ``servers`` RPC servers on 127.0.0.1, each its own process group.

    Real devices run ``python -m tvm.exec.rpc_tracker`` and ``tools/rpc_server.py`` themselves
    (docs/usage.md). ``threads``: TVM threads per server (so N servers on one machine do not
    fight over cores).
    """

    def __init__(self, servers: int = 2, key: str = "svtr-local", threads: int | None = None,
                 log_dir: str | None = None, port: int | None = None):
        if servers < 1:
            raise ToolkitError(f"a pool needs at least one server, got {servers}")
        self.key, self.count, self.threads = key, servers, threads
        self.port = port or free_port()
        self._tmp = None if log_dir else tempfile.TemporaryDirectory(prefix="svtr-rpc-")
        self.log_dir = log_dir or self._tmp.name
        os.makedirs(self.log_dir, exist_ok=True)
        self.tracker = None
        self.servers: list = []

    @property
    def address(self) -> TrackerAddress:
        return TrackerAddress("127.0.0.1", self.port, self.key)

    def log_path(self, name: str) -> str:
        return os.path.join(self.log_dir, f"{name}.log")

    def _spawn(self, name: str, args: list, env: dict | None = None) -> subprocess.Popen:
        log = open(self.log_path(name), "w")
        env = dict(os.environ, **(env or {}))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [in_repo(), env.get("PYTHONPATH")]))
        try:
            return subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        finally:
            log.close()

    def start(self, timeout_s: float = 60.0) -> "LocalPool":
        self.tracker = self._spawn("tracker", ["-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                                               "--port", str(self.port), "--port-end", str(self.port + 1), "--silent"])
        server_env = {"TVM_NUM_THREADS": str(self.threads)} if self.threads else None
        for i in range(self.count):
            port = free_port()
            self.servers.append(self._spawn(f"server{i}", [in_repo("tools", "rpc_server.py"), "--tracker",
                                                           f"127.0.0.1:{self.port}", "--key", self.key,
                                                           "--host", "127.0.0.1", "--port", str(port),
                                                           "--port_end", str(port + 100)], server_env))
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    if tracker_state(self.address).registered >= self.count:
                        return self
                except ToolkitError:
                    pass  # the tracker is still starting
                dead = [p for p in [self.tracker, *self.servers] if p.poll() is not None]
                if dead or time.monotonic() > deadline:
                    why = "a process exited" if dead else f"not all servers registered within {timeout_s:g} s"
                    raise ToolkitError(f"the local RPC pool did not start ({why}); logs in {self.log_dir}")
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise

    def kill_server(self, index: int) -> None:
        """SIGKILL one server's whole process group: a device that dies mid-run."""
        signal_group(self.servers[index], signal.SIGKILL)
        self.servers[index].wait()

    def stop(self) -> None:
        for proc in [*self.servers, self.tracker]:
            if proc is not None and proc.poll() is None:
                signal_group(proc, signal.SIGTERM)
        for proc in [*self.servers, self.tracker]:
            if proc is None:
                continue
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                signal_group(proc, signal.SIGKILL)
                proc.wait()
        for proc in [*self.servers, self.tracker]:  # sessions forked by a server live in its group
            if proc is not None:
                signal_group(proc, signal.SIGKILL)
        self.servers, self.tracker = [], None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


def main(argv=None):
    parser = cli.Parser(__doc__)
    parser.add_argument("--servers", type=cli.positive_int, default=2, help="how many servers (default 2)")
    parser.add_argument("--key", default="svtr-local", type=cli.text("key"),
                        help="the servers' key (default svtr-local)")
    parser.add_argument("--port", type=cli.port, default=None, help="the tracker's port (default: a free one)")
    parser.add_argument("--threads", type=cli.positive_int, default=1, help="TVM threads per server (default 1)")
    parser.add_argument("--log_dir", default=None, type=cli.path,
                        help="where the tracker and servers log (default: a temporary folder)")
    args = parser.parse_args(argv)
    from svtr_toolkit.files import check_output_folder

    if args.log_dir:
        check_output_folder(args.log_dir, "--log_dir")

    with LocalPool(args.servers, args.key, args.threads, args.log_dir, args.port) as pool:
        print(f"tracker and {args.servers} server(s) ready: --rpc {pool.address}  (logs: {pool.log_dir}; "
              f"Ctrl-C stops them)", flush=True)
        stop = []  # Ctrl-C and SIGTERM are how this tool is meant to end: a clean stop, exit 0
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: stop.append(signum))
        while not stop:
            time.sleep(0.2)
        print("stopping the tracker and the servers", flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
