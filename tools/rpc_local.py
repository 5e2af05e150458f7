"""A tracker and N RPC servers on this machine (127.0.0.1 only), for trying --rpc out.

    python tools/rpc_local.py --servers 2                 # prints the --rpc address, Ctrl-C stops all
    python build_engine.py --preset svtr --precision fp32 --rpc 127.0.0.1:PORT:svtr-local

Each server is its own process group with its own TVM thread pool (--threads, default 1, so
two servers on one machine behave like two single-core boards); logs go to --log_dir.
Stopping (Ctrl-C, SIGTERM) ends the tracker, the servers and any session they forked.
"""
import signal
import time

import _repo  # noqa: F401  (the checkout on sys.path)
from svtr_toolkit import cli
from svtr_toolkit.cli import run_cli


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
    from svtr_toolkit.rpc import LocalPool

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
