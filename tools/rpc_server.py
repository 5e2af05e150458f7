"""An RPC server for remote builds, runs and tuning: TVM's own server, registered with a tracker,
that also describes its machine (CPU features, cores, TVM version) to the toolkit.

    python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190          # once, anywhere reachable
    python tools/rpc_server.py --tracker 10.0.0.5:9190 --key svtr-cpu  # on each device

Then give ``--rpc 10.0.0.5:9190:svtr-cpu`` to build_engine.py, inference.py, tools/tune_cpu.py
or the scripts. The device needs this repository's ``svtr_toolkit`` package and the same
apache-tvm version as the machine that builds; it runs whatever a client sends it, so keep it
on a trusted network (TVM's own warning).
"""
import os

import _repo  # noqa: F401  (the checkout on sys.path)
from svtr_toolkit import cli
from svtr_toolkit.cli import run_cli
from svtr_toolkit.cpu_features import usable_cores


def _init_server():  # runs in the server's worker process, which imports the package again
    from svtr_toolkit.rpc import register_device_info

    register_device_info()


def main(argv=None):
    parser = cli.Parser(__doc__)
    parser.add_argument("--tracker", required=True, help="the tracker's HOST:PORT")
    parser.add_argument("--key", required=True, help="the device class these servers share (e.g. svtr-cpu)")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=9090, help="first port to try (default 9090)")
    parser.add_argument("--port_end", type=int, default=9199, help="last port to try (default 9199)")
    parser.add_argument("--custom_addr", default=None, help="the address to report to the tracker (behind NAT)")
    parser.add_argument("--threads", type=int, default=None,
                        help="TVM threads for runs (default: every core this process may use)")
    args = parser.parse_args(argv)
    host, _, port = args.tracker.rpartition(":")
    if not host or not port.isdigit():
        raise cli.ToolkitError(f"--tracker must look like HOST:PORT, got '{args.tracker}'")
    # Sized before the server starts: its worker processes inherit the pool size. TVM's default
    # would use half the cores on x86 (see svtr_toolkit/threads.py).
    os.environ["TVM_NUM_THREADS"] = str(args.threads or os.environ.get("TVM_NUM_THREADS") or usable_cores())
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
