"""MLPerf Inference's LoadGen driving a backend: the SingleStream, Offline and Server scenarios.

LoadGen decides how long a run lasts, how many queries it sends and when, and computes the
latency percentiles and the throughput; the toolkit only answers its queries. A query sample is
one preprocessed image of the dataset (LoadGen's query sample library, QSL): LoadGen picks
which ones are loaded (at most ``PERFORMANCE_SAMPLES``) and which each query asks for. The
system under test (SUT) runs whatever samples are waiting, up to the engine's batch, in one
call (a partial batch padded), on one worker thread, and completes each sample when its batch
returns: SingleStream and Server queries carry one sample each, Offline's one query carries them
all.

Settings (``read_rules``, then ``run``), a later one winning:
1. LoadGen's own rules (the ``mlperf.conf`` compiled into LoadGen): 600 s minimum duration, 100
   queries minimum, SingleStream's 90th and Server's 99th percentile, and a user.conf over them
   where one is given (LoadGen's format, ``*.Offline.min_duration = 60000``), as MLPerf harnesses
   take it. LoadGen reads both in one call, and at most one user.conf per process: a second one
   is logged as "Multiple conf files", not valid for a submission;
2. what LoadGen must be told of the system to size the run, unless the user.conf says it: the
   expected SingleStream latency and Offline throughput, from a short calibration of the
   backend; Server's offered load, half the calibrated throughput (a load the SUT can carry:
   its queue stays short);
3. the run's gates: a Server throughput target is the load LoadGen offers (``target_qps``), a
   Server latency target is its latency bound (``target_latency``).
The result is VALID or INVALID by LoadGen's rules for the settings it ran with; an INVALID run
says why, and a gated run that LoadGen calls INVALID fails its gates.
"""
from __future__ import annotations

import collections
import json
import math
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import ToolkitError
from ..preprocess import Preprocessor
from .data import Dataset, iter_batches

LOADGEN_VERSION = "6.0.17"  # requirements.txt
SCENARIOS = ("SingleStream", "Offline", "Server")
PERFORMANCE_SAMPLES = 1024  # QSL samples LoadGen keeps loaded, at most
SERVER_LOAD = 0.5  # Server's offered load without a target, as a share of the calibrated throughput
CALIBRATION_CALLS = 3
CALIBRATION_S = 1.0
# The percentiles LoadGen's log reports, in its own key names
_PERCENTILES = ("50.00", "90.00", "95.00", "97.00", "99.00", "99.90")


def import_loadgen():
    """(module, None), or (None, why not) when LoadGen cannot be imported."""
    try:
        import mlperf_loadgen
    except ImportError as exc:
        return None, (f"MLPerf LoadGen is not installed ({exc}); pip install mlcommons-loadgen=={LOADGEN_VERSION} "
                      f"(in requirements.txt)")
    return mlperf_loadgen, None


def require_loadgen():
    lg, why = import_loadgen()
    if lg is None:
        raise ToolkitError(why)
    return lg


def loaded_samples(total: int) -> int:
    """How many samples the QSL keeps loaded for a dataset of ``total``."""
    return min(int(total), PERFORMANCE_SAMPLES)


def loaded_memory_bytes(image_shape, total: int = PERFORMANCE_SAMPLES) -> int:
    """Bytes of the float32 images the QSL holds for a dataset of ``total`` samples (by default
    the most it ever holds, for a check before the dataset is read)."""
    return 4 * loaded_samples(total) * math.prod(int(d) for d in image_shape)


def _user_conf_error(code: int) -> str:
    return {-2: "it cannot be opened", -22: "a line is not 'model.scenario.key = number'"}.get(code, f"error {code}")


# the hints the toolkit gives LoadGen unless a user.conf does: name -> TestSettings attribute
_HINTS = {"SingleStream": ("expected_latency", "single_stream_expected_latency_ns"),
          "Offline": ("expected_qps", "offline_expected_qps"),
          "Server": ("target_qps", "server_target_qps")}
_SERVER_LATENCY = "server_target_latency_ns"


@dataclass
class Rules:
    """LoadGen's settings for a run before the backend is known: its own rules and a user.conf."""

    scenario: str
    model: str  # the name LoadGen's rules and a user.conf are looked up under (the preset)
    settings: object  # mlperf_loadgen.TestSettings
    user_conf: str | None
    user_set: set  # TestSettings attributes the user.conf set (the toolkit leaves those alone)


def read_rules(scenario: str, model: str, user_conf: str | None = None) -> Rules:
    """LoadGen's rules for ``scenario``, and ``user_conf`` over them; a user.conf LoadGen cannot
    read is refused here, before any work. Call once per run (see the module on user.confs)."""
    if scenario not in SCENARIOS:
        raise ToolkitError(f"unknown LoadGen scenario '{scenario}' (choose from {', '.join(SCENARIOS)})")
    lg = require_loadgen()
    rules_only = lg.TestSettings()
    code = rules_only.FromConfig("", model, scenario, 0)
    if code != 0:
        raise ToolkitError(f"LoadGen could not apply its own rules for {scenario} (error {code})")
    settings = rules_only
    if user_conf:
        settings = lg.TestSettings()
        code = settings.FromConfig(user_conf, model, scenario, 1)  # its rules, then the user's
        if code != 0:
            raise ToolkitError(f"LoadGen cannot read the user.conf {user_conf}: {_user_conf_error(code)}")
    # a user.conf may name another scenario or mode: this run is what the command line says
    settings.scenario = getattr(lg.TestScenario, scenario)
    settings.mode = lg.TestMode.PerformanceOnly
    attributes = [_HINTS[scenario][1]] + ([_SERVER_LATENCY] if scenario == "Server" else [])
    user_set = {a for a in attributes if settings is not rules_only and getattr(settings, a) != getattr(rules_only, a)}
    return Rules(scenario, model, settings, os.path.abspath(user_conf) if user_conf else None, user_set)


@dataclass
class LoadGenResult:
    """LoadGen's verdict and figures for one performance run, read back from its own log."""

    scenario: str
    loadgen_version: str
    valid: bool
    invalid_reasons: list
    samples_per_second: float | None  # Offline: samples/s; Server: completed samples/s; SingleStream: queries/s
    latency_ms: dict  # "min", "mean", "max", "p50", "p90", ... "p99.9"
    target_latency_percentile: float | None  # the percentile LoadGen judges latency at (0.9, 0.99)
    query_count: int | None
    sample_count: int
    settings: dict  # LoadGen's effective settings (its log's effective_* keys), and how they came
    calibration: dict  # what the backend was timed at before LoadGen started
    early_stopping: str = ""
    scheduled_samples_per_second: float | None = None  # Server: the load offered
    messages: list = field(default_factory=list)  # LoadGen's own warnings and errors

    @property
    def throughput(self) -> float | None:
        """The scenario's throughput figure: Offline's samples/s, SingleStream's queries/s, and
        Server's offered load (MLPerf's Server figure: the load held within the latency bound,
        which is only a result when the run is VALID; completed samples/s vary around it)."""
        if self.scenario == "Server":
            return None if self.settings.get("target_qps") is None else float(self.settings["target_qps"])
        return self.samples_per_second

    @property
    def target_latency_ms(self) -> float | None:
        """The latency at the percentile LoadGen judges (SingleStream's p90, Server's p99)."""
        if self.target_latency_percentile is None:
            return None
        return self.latency_ms.get(percentile_name(self.target_latency_percentile))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["target_latency_ms"] = self.target_latency_ms
        out["throughput"] = self.throughput
        return out


def percentile_name(fraction: float) -> str:
    """0.9 -> "p90", 0.999 -> "p99.9"."""
    return "p" + f"{100 * fraction:.2f}".rstrip("0").rstrip(".")


def read_log(path: str) -> dict:
    """LoadGen's detail log (``:::MLLOG {json}`` lines) as {key: value}, the last value of a key
    winning, plus "__messages__": its warnings and errors."""
    values, messages = {}, []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.startswith(":::MLLOG "):
                continue
            try:
                entry = json.loads(line[len(":::MLLOG "):])
            except ValueError:
                continue
            values[entry.get("key")] = entry.get("value")
            meta = entry.get("metadata") or {}
            if meta.get("is_error") or meta.get("is_warning"):
                kind = "LoadGen error" if meta.get("is_error") else "LoadGen warning"
                messages.append(f"{kind}: {entry.get('key')}: {entry.get('value')}")
    values["__messages__"] = messages
    return values


def _reasons(log: dict) -> list:
    """Why LoadGen called the run INVALID, in its terms."""
    reasons = []
    for key, why in (("result_min_duration_met", "the minimum duration was not reached"),
                     ("result_min_queries_met", "the minimum query count was not reached"),
                     ("result_perf_constraints_met", "the latency bound was not met at its percentile"),
                     ("early_stopping_met", "early stopping was not satisfied")):
        if log.get(key) is False:
            reasons.append(why)
    extra = (log.get("result_invalid_reason") or "").strip()
    if extra:
        reasons.append(extra)
    return reasons


def result_from_log(log: dict, scenario: str, sample_count: int, calibration: dict, sources: dict) -> LoadGenResult:
    ms = lambda ns: None if ns is None else float(ns) / 1e6  # noqa: E731
    latency = {"min": ms(log.get("result_min_latency_ns")), "mean": ms(log.get("result_mean_latency_ns")),
               "max": ms(log.get("result_max_latency_ns"))}
    for pct in _PERCENTILES:
        latency[percentile_name(float(pct) / 100)] = ms(log.get(f"result_{pct}_percentile_latency_ns"))
    throughput = {"Offline": "result_samples_per_second", "Server": "result_completed_samples_per_sec",
                  "SingleStream": "result_qps_with_loadgen_overhead"}[scenario]
    settings = {key[len("effective_"):]: value for key, value in log.items() if key.startswith("effective_")}
    settings["sources"] = sources
    valid = log.get("result_validity") == "VALID"
    percentile = settings.get("target_latency_percentile") if scenario != "Offline" else None
    return LoadGenResult(
        scenario=scenario, loadgen_version=str(log.get("loadgen_version", "")).split(" ")[0], valid=valid,
        invalid_reasons=[] if valid else _reasons(log) or [f"LoadGen says {log.get('result_validity')}"],
        samples_per_second=None if log.get(throughput) is None else float(log[throughput]),
        latency_ms=latency, target_latency_percentile=None if percentile is None else float(percentile),
        query_count=log.get("result_query_count"), sample_count=sample_count, settings=settings,
        calibration=calibration, early_stopping=" ".join(str(log.get("early_stopping_result") or "").split()),
        scheduled_samples_per_second=(float(log["result_scheduled_samples_per_sec"]) if scenario == "Server"
                                      and log.get("result_scheduled_samples_per_sec") else None),
        messages=log["__messages__"])


class _Sut:
    """LoadGen's system under test: samples queue up as LoadGen issues them; one worker runs
    whatever is waiting, up to the backend's batch, and completes those samples. A backend
    error completes every sample without running it (LoadGen waits for each one) and is raised
    once the run is over."""

    def __init__(self, lg, backend, images: dict):
        self.lg, self.backend, self.images = lg, backend, images
        self.batch = np.zeros(backend.input_shape, np.float32)
        self.waiting = collections.deque()
        self.ready = threading.Condition()
        self.stopping = False
        self.error = None
        self.samples_done = 0
        self.worker = threading.Thread(target=self._work, name="svtr-loadgen-sut", daemon=True)
        self.worker.start()

    def issue(self, query_samples):
        with self.ready:
            self.waiting.extend(query_samples)
            self.ready.notify()

    def flush(self):
        pass

    def _take(self):
        with self.ready:
            while not self.waiting and not self.stopping:
                self.ready.wait()
            return [self.waiting.popleft() for _ in range(min(len(self.batch), len(self.waiting)))]

    def _work(self):
        while True:
            taken = self._take()
            if not taken:
                return
            if self.error is None:
                try:
                    for row, sample in enumerate(taken):
                        self.batch[row] = self.images[sample.index]
                    self.backend.run(self.batch)
                except BaseException as exc:  # reported after the run; LoadGen must still end
                    self.error = exc
            self.samples_done += len(taken)
            self.lg.QuerySamplesComplete([self.lg.QuerySampleResponse(s.id, 0, 0) for s in taken])

    def stop(self):
        with self.ready:
            self.stopping = True
            self.ready.notify()
        self.worker.join()


def calibrate(backend) -> dict:
    """Seconds per batch of the backend's own timer, the fastest of at least CALIBRATION_CALLS
    calls over CALIBRATION_S (after two untimed ones): what LoadGen is told to expect. The fastest,
    not a typical call: LoadGen sizes Offline's one query as expected throughput x minimum
    duration, so a figure read low (a slow first call, a busy moment) ends the run before its
    minimum duration and LoadGen calls it INVALID, while one read high only lengthens the run."""
    backend.time_compute(2, 1)
    samples, start = [], time.perf_counter()
    while len(samples) < CALIBRATION_CALLS or time.perf_counter() - start < CALIBRATION_S:
        samples += backend.time_compute(1, 1)
    seconds = float(min(samples))
    batch = backend.input_shape[0]
    return {"seconds_per_batch": seconds, "batch_size": batch, "samples_per_second": batch / seconds,
            "calls": len(samples)}


def apply_hints(rules: Rules, calibration: dict, latency_target_ms: float | None = None,
                target_qps: float | None = None) -> dict:
    """Tell LoadGen what to expect of the system (unless the user.conf did) and the run's Server
    gates; returns where each setting came from."""
    settings, scenario = rules.settings, rules.scenario
    sources = {"rules": "LoadGen's mlperf.conf" + (f" and the user.conf {rules.user_conf}" if rules.user_conf else "")}
    name, attribute = _HINTS[scenario]
    if attribute in rules.user_set:
        sources[name] = "user.conf"
    elif scenario == "SingleStream":
        settings.single_stream_expected_latency_ns = max(1, int(calibration["seconds_per_batch"] * 1e9))
        sources[name] = "calibrated"
    elif scenario == "Offline":
        settings.offline_expected_qps = calibration["samples_per_second"]
        sources[name] = "calibrated"
    else:
        settings.server_target_qps = SERVER_LOAD * calibration["samples_per_second"]
        sources[name] = f"{SERVER_LOAD:g} x calibrated throughput"
    if scenario == "Server":
        sources["target_latency"] = "user.conf" if _SERVER_LATENCY in rules.user_set else "LoadGen's rules"
        if target_qps is not None:
            settings.server_target_qps = float(target_qps)
            sources["target_qps"] = "--fps_target"
        if latency_target_ms is not None:
            settings.server_target_latency_ns = int(latency_target_ms * 1e6)
            sources["target_latency"] = "--latency_target_ms"
    return sources


def _load_images(dataset: Dataset, preprocess: Preprocessor, indices, workers: int, images: dict) -> None:
    samples = [dataset.samples[i] for i in indices]
    chunk = 64
    for start, batch in zip(range(0, len(samples), chunk), iter_batches(dataset, preprocess, chunk, workers, samples)):
        for row in range(len(batch.samples)):
            images[indices[start + row]] = batch.images[row].copy()


def run(backend, dataset: Dataset, preprocess: Preprocessor, rules: Rules, *, latency_target_ms=None,
        target_qps=None, workers: int = 2, log=print) -> LoadGenResult:
    """One LoadGen performance run of ``rules.scenario`` over ``dataset``'s samples."""
    if not dataset.samples:
        raise ToolkitError(f"no evaluable sample under {dataset.root} (every label was rejected)")
    lg = require_loadgen()
    scenario, settings = rules.scenario, rules.settings
    calibration = calibrate(backend)
    sources = apply_hints(rules, calibration, latency_target_ms, target_qps)
    total = len(dataset.samples)
    log(f"LoadGen {scenario}: {total} samples in the QSL, {loaded_samples(total)} kept loaded; backend calibrated "
        f"at {calibration['seconds_per_batch'] * 1e3:.2f} ms per batch of {calibration['batch_size']} "
        f"({calibration['samples_per_second']:.1f} samples/s); minimum duration {settings.min_duration_ms / 1e3:g} s, "
        f"minimum {settings.min_query_count} queries")
    images: dict = {}
    sut = _Sut(lg, backend, images)
    sut_handle = lg.ConstructSUT(sut.issue, sut.flush)
    qsl_handle = lg.ConstructQSL(total, loaded_samples(total),
                                 lambda indices: _load_images(dataset, preprocess, list(indices), workers, images),
                                 lambda indices: [images.pop(i, None) for i in indices])
    try:
        with tempfile.TemporaryDirectory(prefix="svtr-loadgen-") as outdir:
            log_settings = lg.LogSettings()
            log_settings.log_output.outdir = outdir
            log_settings.log_output.copy_summary_to_stdout = False
            log_settings.enable_trace = False
            start = time.perf_counter()
            lg.StartTestWithLogSettings(sut_handle, qsl_handle, settings, log_settings)
            seconds = time.perf_counter() - start
            detail = os.path.join(outdir, "mlperf_log_detail.txt")
            if not os.path.isfile(detail):
                raise ToolkitError("LoadGen wrote no log: the run did not happen")
            values = read_log(detail)
    finally:
        sut.stop()
        lg.DestroyQSL(qsl_handle)
        lg.DestroySUT(sut_handle)
    if sut.error is not None:
        if isinstance(sut.error, (ToolkitError, KeyboardInterrupt)):
            raise sut.error
        raise ToolkitError(f"the backend failed during the LoadGen run: {sut.error}")
    calibration["run_seconds"] = round(seconds, 3)
    return result_from_log(values, scenario, sut.samples_done, calibration, sources)


def _settings_line(result: LoadGenResult) -> str:
    """LoadGen's effective settings in words, each hint with where it came from."""
    s, sources = result.settings, result.settings.get("sources", {})
    qps = float(s.get("target_qps") or 0)
    line = f"settings ({sources.get('rules')}): min duration {float(s.get('min_duration_ms') or 0) / 1e3:g} s, " \
           f"min queries {s.get('min_query_count')}"
    if result.scenario == "SingleStream":
        line += (f"; expected latency {1e3 / qps if qps else 0:.3g} ms ({sources.get('expected_latency')}); "
                 f"latency judged at {percentile_name(result.target_latency_percentile or 0)}")
    elif result.scenario == "Offline":
        line += (f"; expected {qps:.1f} samples/s ({sources.get('expected_qps')}), "
                 f"{s.get('samples_per_query')} samples in its one query")
    else:
        line += (f"; offered load {qps:.1f} queries/s ({sources.get('target_qps')}), latency bound "
                 f"{float(s.get('target_latency_ns') or 0) / 1e6:g} ms at "
                 f"{percentile_name(result.target_latency_percentile or 0)} ({sources.get('target_latency')})")
    return line


def format_result(result: LoadGenResult) -> str:
    lat = result.latency_ms
    shown = ", ".join(f"{name} {lat[name]:.3f}" for name in ("min", "mean", "p50", "p90", "p99", "p99.9", "max")
                      if lat.get(name) is not None)
    rate = "-" if result.samples_per_second is None else f"{result.samples_per_second:.2f}"
    what = {"Offline": "samples/s", "Server": "completed samples/s", "SingleStream": "queries/s"}[result.scenario]
    offered = result.scheduled_samples_per_second
    lines = [f"LoadGen {result.loadgen_version} {result.scenario}: {rate} {what}"
             + (f" (offered {offered:.2f}/s)" if offered else "")
             + f"; {result.query_count} queries, {result.sample_count} samples in "
               f"{result.calibration.get('run_seconds', 0):.1f} s",
             f"latency ms: {shown}", _settings_line(result)]
    if result.early_stopping:
        lines.append(f"early stopping: {result.early_stopping}")
    lines.append(f"result: {'VALID' if result.valid else 'INVALID'}"
                 + ("" if result.valid else f" ({'; '.join(result.invalid_reasons)})"))
    lines += result.messages
    return "\n".join(lines)
