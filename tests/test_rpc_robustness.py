"""RPC robustness: every network wait of --rpc ends, in the documented line; the RPC
server listens on loopback unless told otherwise, and says what another address exposes.

The peers are real sockets: a "tracker" that accepts and never answers, one that answers the
tracker protocol and hands out a "server" that never answers, a real tracker and rpc_server.py.
"""
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from cli_runs import run_main, run_process, start_process
from rpc_local import free_port
from svtr_toolkit import rpc
from tiny_models import make_fake_onnx, write_lmdb


class Peer:
    """A TCP listener on 127.0.0.1 running ``serve(connection)`` for each connection, on threads."""

    def __init__(self, serve):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.connections = []
        self._serve = serve
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def close(self):
        self.sock.close()
        for conn in self.connections:
            conn.close()


def silent(conn):
    """Accept, never answer."""
    time.sleep(3600)


def recv_exactly(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError
        data += chunk
    return data


def tracker_handing_out(server_port):
    """A tracker that speaks TVM's protocol and hands every request the server at ``server_port``."""
    from tvm.rpc import base

    def serve(conn):
        try:
            recv_exactly(conn, 4)
            conn.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
            while True:
                size = struct.unpack("<i", recv_exactly(conn, 4))[0]
                code = json.loads(recv_exactly(conn, size))[0]
                if code == base.TrackerCode.SUMMARY:
                    reply = [base.TrackerCode.SUCCESS, {"server_info": [{"key": "server:k"}],
                                                        "queue_info": {"k": {"free": 1, "pending": 0}}}]
                else:
                    reply = [base.TrackerCode.SUCCESS, ["127.0.0.1", server_port, "k:1"]]
                payload = json.dumps(reply).encode()
                conn.sendall(struct.pack("<i", len(payload)) + payload)
        except (ConnectionError, OSError):
            pass

    return serve


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rpc_robust")
    write_lmdb(tmp / "data" / "toy", ["hotel"])
    return {"tmp": tmp, "data": tmp / "data", "model": make_fake_onnx(tmp / "m.onnx")}


# --------------------------------------------------------------------- every wait ends
def test_a_tracker_that_accepts_and_never_answers_ends_in_the_wait(case, monkeypatch):
    peer = Peer(silent)
    monkeypatch.setenv("SVTR_RPC_WAIT_S", "5")
    try:
        start = time.monotonic()
        ran = run_main("build_engine", "--model_path", case["model"], "--input", "x:2,3,64,256", "--precision", "fp32",
                       "--engine_path", case["tmp"] / "e.so", "--rpc", f"127.0.0.1:{peer.port}:k")
        took = time.monotonic() - start
    finally:
        peer.close()
    assert ran.code == 2 and ran.error == (f"error: the RPC tracker at 127.0.0.1:{peer.port} accepted the connection "
                                           f"but did not answer within 5 s (not a TVM RPC tracker, or a hung one); "
                                           f"fix --rpc")
    assert 5 <= took < 15 and not (case["tmp"] / "e.so").exists()


def test_a_silent_tracker_as_a_process_run_with_inference(case):
    """The issue's command: inference.py --rpc as its own process, SVTR_RPC_WAIT_S=5."""
    peer = Peer(silent)
    try:
        start = time.monotonic()
        ran = run_process(["inference.py", "--engine", case["tmp"] / "missing.so", "--batchsize", "1", "--datasets",
                           case["data"], "--rpc", f"127.0.0.1:{peer.port}:k"], env={"SVTR_RPC_WAIT_S": "5"}, timeout=120)
        took = time.monotonic() - start
    finally:
        peer.close()
    assert ran.code == 2 and ran.err.startswith(f"error: the RPC tracker at 127.0.0.1:{peer.port} "
                                                f"accepted the connection but did not answer within 5 s")
    assert took < 40


def test_a_server_that_accepts_the_session_and_never_answers_ends_in_the_wait(monkeypatch):
    server = Peer(silent)
    tracker = Peer(tracker_handing_out(server.port))
    monkeypatch.setenv("SVTR_RPC_WAIT_S", "3")
    try:
        start = time.monotonic()
        with pytest.raises(rpc.ToolkitError, match=rf"the RPC server 127.0.0.1:{server.port} under key 'k' accepted "
                                                   rf"the session but did not answer within 3 s"):
            rpc.connect(rpc.TrackerAddress("127.0.0.1", tracker.port, "k"))
        assert time.monotonic() - start < 10
    finally:
        tracker.close()
        server.close()


def test_a_tracker_that_answers_the_handshake_but_not_the_summary(monkeypatch):
    from tvm.rpc import base

    def handshake_only(conn):
        recv_exactly(conn, 4)
        conn.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
        time.sleep(3600)

    peer = Peer(handshake_only)
    monkeypatch.setenv("SVTR_RPC_WAIT_S", "2")
    try:
        with pytest.raises(rpc.ToolkitError, match="accepted the connection but did not answer within 2 s"):
            rpc.tracker_state(rpc.TrackerAddress("127.0.0.1", peer.port, "k"))
    finally:
        peer.close()


# --------------------------------------------------------------------- loopback by default
def outward_address():
    """This machine's address on its default route (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def start_server(tracker_port, *args):
    port = free_port()
    proc = start_process(["tools/rpc_server.py", "--tracker", f"127.0.0.1:{tracker_port}", "--key", "lo", "--port",
                          port, "--port_end", port + 1, *args], stderr=subprocess.STDOUT, start_new_session=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("RPC server on"):
            return proc, port, lines
    pytest.fail("the server did not start: " + "".join(lines))


def stop(proc):
    os.killpg(proc.pid, 9)
    proc.wait()


def test_the_rpc_server_listens_on_loopback_unless_told_otherwise():
    tracker_port = free_port()
    tracker = start_process([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port",
                             tracker_port, "--port-end", tracker_port + 1, "--silent"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc, port, lines = start_server(tracker_port)
        try:
            assert lines[-1].startswith(f"RPC server on 127.0.0.1:{port}, key 'lo'")
            assert not any(ln.startswith("warning:") for ln in lines)
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            outward = outward_address()
            if outward:
                with pytest.raises(OSError):
                    socket.create_connection((outward, port), timeout=5).close()
        finally:
            stop(proc)
        proc, port, lines = start_server(tracker_port, "--host", "0.0.0.0")
        try:
            warning = [ln for ln in lines if ln.startswith("warning:")]
            assert len(warning) == 1 and f"listening on every interface of this machine (a port in {port}-{port})" \
                in warning[0] and "TVM RPC has no authentication" in warning[0]
        finally:
            stop(proc)
    finally:
        stop(tracker)


def test_what_each_listening_address_exposes():
    import rpc_server as tool

    assert tool.exposure_warning("127.0.0.1", 9090, 9199) is None
    assert tool.exposure_warning("::1", 9090, 9199) is None and tool.exposure_warning("localhost", 1, 2) is None
    assert "listening on 10.0.0.5 (a port in 9090-9198)" in tool.exposure_warning("10.0.0.5", 9090, 9199)
