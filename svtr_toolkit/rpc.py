"""Remote devices through TVM's RPC tracker: the ``--rpc HOST:PORT:KEY`` address, sessions, and
the description every server gives of itself.

TVM ships the transport (``tvm.rpc``: tracker, servers, sessions; MetaSchedule's RPCRunner);
this module only adds what the toolkit needs around it:

- a server started by ``tools/rpc_server.py`` answers ``svtr_toolkit.device_info`` with its
  architecture, cpuinfo text, cores and TVM version, so a build can target the remote CPU
  (not this one) and a version mismatch is refused before anything is uploaded;
- every wait on the network before a session runs is bounded: the tracker's and the server's
  answers within ``answer_seconds()``, a free server within ``wait_seconds()``; every failure is
  one sentence saying what the tracker holds (servers registered under the key, how many are busy).

A tracker and servers on one machine, for trying this out and for the tests, are
``tools/rpc_local.py``'s (``LocalPool``): development, not part of the client.
"""
from __future__ import annotations

import json
import math
import os
import platform
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from .cpu_features import CpuFeatures, cpuinfo_text, parse_cpuinfo, usable_cores
from .errors import ToolkitError, last_line, pending_interrupt

DEVICE_INFO_FUNC = "svtr_toolkit.device_info"
WAIT_ENV = "SVTR_RPC_WAIT_S"  # how long to wait for a free server (default DEFAULT_WAIT_S)
DEFAULT_WAIT_S = 120.0
# The longest a tracker or a server may take to answer a handshake or a question (less when
# SVTR_RPC_WAIT_S is less): one that accepts connections and never answers is not waited on.
ANSWER_S = 10.0


@dataclass(frozen=True)
class TrackerAddress:
    host: str
    port: int
    key: str

    @classmethod
    def parse(cls, text: str) -> "TrackerAddress":
        host, _, rest = (text or "").partition(":")
        port, _, key = rest.partition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536 or not key:
            raise ToolkitError(f"--rpc must look like HOST:PORT:KEY (the tracker's address and the servers' key, "
                               f"e.g. 127.0.0.1:9190:svtr-cpu), got '{text}'")
        return cls(host, int(port), key)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}:{self.key}"


def device_info() -> dict:
    """What this machine is, as a server reports it to its clients."""
    import tvm

    try:
        mcpu = tvm.target.codegen.llvm_get_system_cpu()
    except Exception:  # a runtime-only TVM has no LLVM
        mcpu = None
    cores = usable_cores()
    return {"arch": platform.machine(), "cpuinfo": cpuinfo_text(), "cores": cores,
            "threads": int(os.environ.get("TVM_NUM_THREADS") or cores),
            "mcpu": mcpu, "tvm_version": tvm.__version__, "hostname": socket.gethostname()}


def register_device_info() -> None:
    """The server-side half: make ``device_info`` callable over RPC (a server init callback)."""
    import tvm_ffi

    tvm_ffi.register_global_func(DEVICE_INFO_FUNC, lambda: json.dumps(device_info()), override=True)


@dataclass(frozen=True)
class TrackerState:
    registered: int  # servers under the key
    free: int
    pending: int  # requests waiting for one
    keys: tuple  # every key the tracker holds

    def busy_line(self, key: str) -> str:
        return (f"{self.registered} server(s) registered under key '{key}', {self.registered - self.free} busy, "
                f"{self.pending} request(s) waiting")


class _Silent(Exception):
    """A peer that did not answer within the time it was given."""


def _tracker_unreachable(address: TrackerAddress, why: str) -> ToolkitError:
    return ToolkitError(f"cannot reach the RPC tracker at {address.host}:{address.port} ({why}); start one "
                        f"with `python -m tvm.exec.rpc_tracker --port {address.port}` or fix --rpc")


def _tracker_silent(address: TrackerAddress, seconds: float) -> ToolkitError:
    return ToolkitError(f"the RPC tracker at {address.host}:{address.port} accepted the connection but did not "
                        f"answer within {seconds:g} s (not a TVM RPC tracker, or a hung one); fix --rpc")


class _TrackerLink:
    """One conversation with a tracker in which no wait is unbounded: TVM's own tracker client
    waits for ever on a peer that accepts the connection and never answers. Speaks the same
    protocol (``tvm.rpc.base``: a magic number, then length-prefixed JSON)."""

    def __init__(self, address: TrackerAddress, answer_s: float):
        from tvm.rpc import base

        self.address = address
        try:
            self.sock = socket.create_connection((address.host, address.port), timeout=answer_s)
        except OSError as exc:
            raise _tracker_unreachable(address, last_line(exc)) from None
        try:
            self.sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
            magic = struct.unpack("<i", self._receive(4, time.monotonic() + answer_s))[0]
        except _Silent:
            self.close()
            raise _tracker_silent(address, answer_s) from None
        except OSError as exc:
            self.close()
            raise _tracker_unreachable(address, last_line(exc)) from None
        if magic != base.RPC_TRACKER_MAGIC:
            self.close()
            raise ToolkitError(f"{address.host}:{address.port} is not a TVM RPC tracker (it answered, but not as one); "
                               f"fix --rpc")

    def _receive(self, nbytes: int, deadline: float) -> bytes:
        data = b""
        while len(data) < nbytes:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Silent()
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(nbytes - len(data))
            except socket.timeout:
                raise _Silent() from None
            if not chunk:
                raise ConnectionResetError("the tracker closed the connection")
            data += chunk
        return data

    def ask(self, message: list, within_s: float):
        """Send ``message``, return the tracker's JSON answer; ``_Silent`` when none comes in time."""
        payload = json.dumps(message).encode("utf-8")
        self.sock.settimeout(within_s)
        try:
            self.sock.sendall(struct.pack("<i", len(payload)) + payload)
        except socket.timeout:
            raise _Silent() from None
        deadline = time.monotonic() + within_s
        size = struct.unpack("<i", self._receive(4, deadline))[0]
        return json.loads(self._receive(size, deadline).decode("utf-8"))

    def close(self) -> None:
        self.sock.close()


def tracker_state(address: TrackerAddress) -> TrackerState:
    """The tracker's own summary for the key; one clear error when the tracker cannot be reached
    or does not answer."""
    from tvm.rpc import base

    answer_s = answer_seconds()
    link = _TrackerLink(address, answer_s)
    try:
        reply = link.ask([base.TrackerCode.SUMMARY], answer_s)
    except _Silent:
        raise _tracker_silent(address, answer_s) from None
    except (OSError, ValueError) as exc:
        raise _tracker_unreachable(address, last_line(exc)) from None
    finally:
        link.close()
    if not (isinstance(reply, list) and reply and reply[0] == base.TrackerCode.SUCCESS):
        raise ToolkitError(f"the RPC tracker at {address.host}:{address.port} refused a summary: {reply}")
    summary = reply[1]
    keys = tuple(sorted({item["key"].split(":", 1)[-1] for item in summary.get("server_info", [])}))
    registered = sum(1 for item in summary.get("server_info", []) if item["key"].split(":", 1)[-1] == address.key)
    queue = summary.get("queue_info", {}).get(address.key, {})
    return TrackerState(registered, int(queue.get("free", 0)), int(queue.get("pending", 0)), keys)


@dataclass
class RemoteDevice:
    """An open session on one server under the key, and what that server said it is."""

    address: TrackerAddress
    session: object  # tvm.rpc.RPCSession
    info: dict
    cpu: CpuFeatures = field(init=False)

    def __post_init__(self):
        self.cpu = parse_cpuinfo(self.info.get("cpuinfo", ""), self.info.get("arch"), self.info.get("cores"))

    @property
    def description(self) -> str:
        return (f"{self.info.get('hostname', '?')} ({self.cpu.describe()}, {self.info.get('threads')} threads) "
                f"via RPC tracker {self.address.host}:{self.address.port} key '{self.address.key}'")

    def missing_features(self, mattr) -> list:
        """Features an engine's LLVM target switched on (``+avx512f``) that this CPU lacks."""
        return sorted(a[1:] for a in mattr or [] if a.startswith("+") and a[1:] not in self.cpu.features)

    def close(self) -> None:
        """Give the server back to the tracker (the session ends when its last handle goes)."""
        import gc

        self.session = None
        gc.collect()


def wait_seconds() -> float:
    """How long to wait for a free server: ``SVTR_RPC_WAIT_S`` (a finite number of seconds above 0)."""
    text = os.environ.get(WAIT_ENV)
    if not text:
        return DEFAULT_WAIT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ToolkitError(f"{WAIT_ENV} must be a finite number of seconds above 0, got '{text}'")
    return value


def answer_seconds() -> float:
    return min(ANSWER_S, wait_seconds())


def _answer_within(seconds: float, call):
    """``call()`` (a session's handshake, a first call over it: waits inside TVM's C++, which has
    no timeout of its own), or ``_Silent`` when it has not returned within ``seconds``.

    The call runs on a daemon thread (TVM's calls release the GIL) and this thread waits for it.
    A call still blocked stays blocked until its peer closes or the process exits; nothing of it
    is used. Not SIGALRM: an exception raised by a signal handler inside TVM's receive unwinds
    through its half-built session, which crashed the process (SIGSEGV) in the test suite."""
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 (handed to the waiting thread)
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="svtr-rpc-call", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _Silent()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def request_session(address: TrackerAddress, wait_s: float | None = None, session_timeout_s: float = 0):
    """A session on a free server under the key, within ``wait_s`` (TVM's own request waits
    forever, also when every server has gone)."""
    from tvm import rpc
    from tvm.rpc import base

    wait_s = wait_seconds() if wait_s is None else wait_s
    answer_s = min(ANSWER_S, wait_s)
    state = tracker_state(address)
    if not state.registered:
        held = ", ".join(f"'{k}'" for k in state.keys) or "none"
        raise ToolkitError(f"no RPC server is registered under key '{address.key}' at the tracker "
                           f"{address.host}:{address.port} (keys there: {held})")
    link = _TrackerLink(address, answer_s)
    try:
        # The tracker answers a request when a server is free; closing the link withdraws the request.
        reply = link.ask([base.TrackerCode.REQUEST, address.key, "", 1], wait_s)
    except _Silent:
        link.close()
        raise ToolkitError(f"no free RPC server under key '{address.key}' within {wait_s:g} s: "
                           f"{tracker_state(address).busy_line(address.key)} (wait longer with {WAIT_ENV})") from None
    except (OSError, ValueError) as exc:
        link.close()
        raise ToolkitError(f"the RPC tracker at {address.host}:{address.port} dropped the request ({last_line(exc)})")
    link.close()
    if not (isinstance(reply, list) and reply and reply[0] == base.TrackerCode.SUCCESS):
        raise ToolkitError(f"the RPC tracker at {address.host}:{address.port} refused the request: {reply}")
    host, port, matchkey = reply[1]
    try:
        return _answer_within(answer_s, lambda: rpc.connect(host, port, matchkey, session_timeout=session_timeout_s))
    except _Silent:
        raise ToolkitError(f"the RPC server {host}:{port} under key '{address.key}' accepted the session but did not "
                           f"answer within {answer_s:g} s (a hung server?)") from None
    except (OSError, RuntimeError) as exc:
        raise ToolkitError(f"the RPC server {host}:{port} under key '{address.key}' did not take the session "
                           f"({last_line(exc)})")


def tuning_session(rpc_config):
    """MetaSchedule's RPCRunner ``f_create_session``: ``request_session`` for one candidate, so a
    round whose servers have all gone ends instead of waiting for ever."""
    address = TrackerAddress(rpc_config.tracker_host, int(rpc_config.tracker_port), rpc_config.tracker_key)
    return request_session(address, session_timeout_s=rpc_config.session_timeout_sec)


def connect(address: TrackerAddress, wait_s: float | None = None) -> RemoteDevice:
    """A session on a free server under the key, within ``wait_s``; checks its TVM version."""
    import tvm

    session = request_session(address, wait_s)
    answer_s = answer_seconds() if wait_s is None else min(ANSWER_S, wait_s)
    try:
        info = json.loads(_answer_within(answer_s, lambda: session.get_function(DEVICE_INFO_FUNC)()))
    except _Silent:
        raise ToolkitError(f"the RPC server under key '{address.key}' did not describe itself within {answer_s:g} s "
                           f"(a hung server?)") from None
    except Exception as exc:  # tvm_ffi: the function is not registered there
        raise ToolkitError(f"the RPC server under key '{address.key}' does not describe itself "
                           f"({last_line(exc)}): start it with `python tools/rpc_server.py --tracker HOST:PORT "
                           f"--key KEY`, whose CPU builds can target and whose TVM version can be checked")
    if info.get("tvm_version") != tvm.__version__:
        raise ToolkitError(f"the RPC server {info.get('hostname')} under key '{address.key}' runs TVM "
                           f"{info.get('tvm_version')} and this machine TVM {tvm.__version__}: engines and tuning "
                           f"records do not carry across versions; install apache-tvm=={tvm.__version__} there")
    return RemoteDevice(address, session, info)


def remote_call(device: RemoteDevice, what: str, call):
    """``call()``, with a server that dies or drops the connection turned into one clear error."""
    try:
        return call()
    except ToolkitError:
        raise
    except Exception as exc:
        if pending_interrupt() is not None:
            raise pending_interrupt() from None
        raise ToolkitError(f"the RPC server under key '{device.address.key}' failed during {what} "
                           f"({last_line(exc) or exc.__class__.__name__}); nothing was written")
