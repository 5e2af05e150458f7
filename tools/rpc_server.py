"""An RPC server for remote builds, runs and tuning: TVM's own server, registered with a tracker,
that also describes its machine (CPU features, cores, TVM version) to the toolkit.

    python -m tvm.exec.rpc_tracker --host 127.0.0.1 --port 9190       # once (see docs/usage.md for networks)
    python tools/rpc_server.py --tracker 127.0.0.1:9190 --key svtr-cpu  # on each device

Then give ``--rpc 127.0.0.1:9190:svtr-cpu`` to build_engine.py, inference.py, tools/tune_cpu.py
or the scripts. The device needs this repository's ``svtr_toolkit`` package and the same
apache-tvm version as the machine that builds.

TVM RPC has no authentication: whoever reaches the server's port can upload a shared library
and run it here. The server therefore listens on 127.0.0.1 unless --host names another address
(then it says what it exposes); across machines, use a private network or SSH tunnels to
loopback ports (docs/usage.md, "Remote devices").
"""
import ipaddress
import os
import socket

import _repo  # noqa: F401  (the checkout on sys.path)
from svtr_toolkit import cli
from svtr_toolkit.cli import run_cli
from svtr_toolkit.cpu_features import usable_cores

LOOPBACK = "127.0.0.1"


def _init_server():  # runs in the server's worker process, which imports the package again
    from svtr_toolkit.rpc import register_device_info

    register_device_info()


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def exposure_warning(host: str, port: int, port_end: int) -> str | None:
    """What listening on ``host`` exposes, or None for a loopback address."""
    if _loopback(host):
        return None
    where = "every interface of this machine" if host in ("0.0.0.0", "::") else f"{host}"
    return (f"warning: listening on {where} (a port in {port}-{port_end - 1}): anyone who can reach it can upload a "
            f"shared library and run it as {os.environ.get('USER') or os.getuid()} on "
            f"{socket.gethostname()} (TVM RPC has no authentication); keep it on a private network")


def main(argv=None):
    parser = cli.Parser(__doc__)
    parser.add_argument("--tracker", required=True, help="the tracker's HOST:PORT")
    parser.add_argument("--key", required=True, type=cli.text("key"),
                        help="the device class these servers share (e.g. svtr-cpu)")
    parser.add_argument("--host", default=LOOPBACK, type=cli.text("host"),
                        help=f"address to listen on (default {LOOPBACK}: this machine only; another address "
                             f"exposes the server to whoever reaches it)")
    parser.add_argument("--port", type=cli.port, default=9090, help="first port to try (default 9090)")
    parser.add_argument("--port_end", type=cli.port, default=9199,
                        help="end of the port range, not tried itself (default 9199)")
    parser.add_argument("--custom_addr", default=None, type=cli.text("address"),
                        help="the address to report to the tracker (behind NAT, or a tunnel's end)")
    parser.add_argument("--threads", type=cli.positive_int, default=None,
                        help="TVM threads for runs (default: every core this process may use)")
    args = parser.parse_args(argv)
    host, _, port = args.tracker.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise cli.ToolkitError(f"--tracker must look like HOST:PORT, got '{args.tracker}'")
    if args.port >= args.port_end:
        raise cli.ToolkitError(f"--port {args.port} must be below --port_end {args.port_end} (the range ends before it)")
    # Sized before the server starts: its worker processes inherit the pool size. TVM's default
    # would use half the cores on x86 (see svtr_toolkit/threads.py).
    os.environ["TVM_NUM_THREADS"] = str(args.threads or os.environ.get("TVM_NUM_THREADS") or usable_cores())
    warning = exposure_warning(args.host, args.port, args.port_end)
    if warning:
        print(warning, flush=True)
    from tvm import rpc

    server = rpc.Server(args.host, args.port, args.port_end, tracker_addr=(host, int(port)), key=args.key,
                        custom_addr=args.custom_addr, server_init_callback=_init_server)
    print(f"RPC server on {args.host}:{server.port}, key '{args.key}', tracker {args.tracker}, "
          f"{os.environ['TVM_NUM_THREADS']} threads", flush=True)
    try:
        server.proc.join()
    finally:
        server.terminate()
    return 0


if __name__ == "__main__":
    run_cli(main)
