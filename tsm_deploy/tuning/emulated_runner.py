"""A MetaSchedule runner that measures aarch64 candidates on an emulated Cortex-A72, by exact
instruction counts instead of time.

Each built candidate (an aarch64 shared library cross-compiled by the builder, e.g. PersistentBuilder
with ``cross_compiler="aarch64-linux-gnu-g++"``) is sent to one long-lived guest process
(:class:`tsm_deploy.emulation.meter.MeasureSession`: Python + the runtime-only TVM under
``qemu-aarch64 -plugin``), which allocates the arguments from the runner input's ``args_info``, calls
the candidate once to warm up and then ``repeat`` times between markers, and answers the number of
guest instructions each call executed, exactly (one guest thread).

MetaSchedule wants seconds: ``run_secs = instructions / NOMINAL_INSTRUCTIONS_PER_SECOND``, a stated
nominal rate (a Cortex-A72 at 1.5 GHz retiring one instruction per cycle), not a latency model. It
ranks candidates by work executed; it cannot see memory stalls, the cache hierarchy or the
multi-core speed-up a schedule's parallel loops get on the board (counts are single-threaded).
Record :data:`RUNNER_METADATA` in ``tuning.json`` so nobody reads these records as timings.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import time
from typing import Any, Callable

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ..emulation.meter import INSTRUCTIONS_LABEL, GuestFailure, MeasureSession, qemu_user
from ..emulation.rootfs import DEFAULT_QEMU_CPU
from ..target.arch import emulated_cpu, require_emulatable

log = logging.getLogger(__name__)

# Cortex-A72 (Raspberry Pi 4) at 1.5 GHz, IPC 1: instructions -> nominal seconds for MetaSchedule.
NOMINAL_INSTRUCTIONS_PER_SECOND = 1.5e9
RUNNER_METADATA: dict[str, Any] = {
    "runner": "emulated",
    "meter": INSTRUCTIONS_LABEL,
    "qemu_cpu": DEFAULT_QEMU_CPU,
    "threads": 1,
    "instructions_per_second": NOMINAL_INSTRUCTIONS_PER_SECOND,
    "run_secs": "instructions / instructions_per_second (nominal: Cortex-A72 at 1.5 GHz, IPC 1), not measured time",
}
DEFAULT_TIMEOUT_S = 120.0  # per candidate: a poor schedule of a big convolution runs ~1e9 instructions (~10 s emulated)

Progress = Callable[[str], None]


@derived_object
class _Future(ms.runner.PyRunnerFuture):
    """A RunnerFuture over a concurrent.futures.Future that yields (run_secs, error_msg)."""

    def __init__(self, future: concurrent.futures.Future) -> None:
        super().__init__()
        self.future = future

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> ms.runner.RunnerResult:
        run_secs, error = self.future.result()
        return ms.runner.RunnerResult(run_secs, error)


@derived_object
class EmulatedRunner(ms.runner.PyRunner):
    """Measures candidates by guest instruction count on ``workers`` metered guest processes.

    Counts do not depend on host load, so ``workers`` > 1 only buys throughput (each guest is one
    host core while it measures). A guest that crashes (SIGILL, SIGSEGV) or times out gives that
    candidate a RunnerResult with the error and is restarted for the next one.
    """

    def __init__(
        self,
        qemu_cpu: str = DEFAULT_QEMU_CPU,
        workers: int = 1,
        warmup: int = 1,
        repeat: int = 1,
        timeout_sec: float = DEFAULT_TIMEOUT_S,
        instructions_per_second: float = NOMINAL_INSTRUCTIONS_PER_SECOND,
        progress: Progress | None = None,
    ) -> None:
        super().__init__()
        self.qemu_cpu = qemu_cpu
        self.warmup = warmup
        self.repeat = repeat
        self.timeout_sec = timeout_sec
        self.rate = instructions_per_second
        self.progress = progress
        self.sessions: list[MeasureSession] = [
            MeasureSession(qemu_cpu=qemu_cpu, progress=progress) for _ in range(max(1, workers))
        ]
        self._idle: queue.Queue[MeasureSession] = queue.Queue()
        for session in self.sessions:
            self._idle.put(session)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(self.sessions),
                                                           thread_name_prefix="tsm-emulated-runner")
        self.measured = 0
        self.failures = 0
        self.instructions: list[int] = []  # per measured candidate (mean of its repeats)
        self.measure_seconds = 0.0

    def start(self) -> list[concurrent.futures.Future]:
        """Start every guest now, in the background (each takes ~10-20 s: Python and TVM import)."""
        return [self._pool.submit(self._start_one) for _ in self.sessions]

    def _start_one(self) -> None:
        session = self._idle.get()
        try:
            if not session.running:
                session.start()
        finally:
            self._idle.put(session)

    def run(self, runner_inputs: list[ms.runner.RunnerInput]) -> list[ms.runner.RunnerFuture]:
        futures = []
        for inp in runner_inputs:
            args_info = [arg.as_json() for arg in inp.args_info]
            futures.append(_Future(self._pool.submit(self._measure_one, str(inp.artifact_path), args_info)))
        return futures

    def _measure_one(self, path: str, args_info: list[Any]) -> tuple[list[float] | None, str | None]:
        session = self._idle.get()
        start = time.perf_counter()
        try:
            counts = session.measure(path, args_info, warmup=self.warmup, repeat=self.repeat, timeout=self.timeout_sec)
        except GuestFailure as exc:  # the session restarts its guest on the next request
            self.failures += 1
            return None, f"EmulatedRunner: the guest failed on this candidate: {exc}"
        except Exception as exc:  # the guest answered an error (library does not load, bad argument...)
            self.failures += 1
            return None, f"EmulatedRunner: {type(exc).__name__}: {exc}"
        finally:
            self.measure_seconds += time.perf_counter() - start
            self._idle.put(session)
        self.measured += 1
        self.instructions.append(round(sum(counts) / len(counts)))
        return [n / self.rate for n in counts], None

    def metadata(self) -> dict[str, Any]:
        """What ``tuning.json`` should say about how the records were measured."""
        return {**RUNNER_METADATA, "qemu_cpu": self.qemu_cpu, "instructions_per_second": self.rate,
                "warmup_calls": self.warmup, "measured_calls": self.repeat}

    def close(self) -> None:
        """Stop the guests (waits for measurements in flight)."""
        self._pool.shutdown(wait=True)
        for session in self.sessions:
            session.close()
        if self.measured:
            log.info("emulated runner: %d candidates, %.2f s per measurement (wall), %d failed",
                     self.measured, self.measure_seconds / (self.measured + self.failures), self.failures)


def measure_description(qemu_cpu: str = DEFAULT_QEMU_CPU,
                        instructions_per_second: float = NOMINAL_INSTRUCTIONS_PER_SECOND) -> str:
    """One line for ``tuning.json``: what the records' run_secs are."""
    why = " (Cortex-A72 at 1.5 GHz, IPC 1)" if instructions_per_second == NOMINAL_INSTRUCTIONS_PER_SECOND else ""
    return (f"{INSTRUCTIONS_LABEL} on an emulated {qemu_cpu}, one thread; run_secs = instructions / "
            f"{instructions_per_second:.3g} per second, a nominal rate{why}, not measured time")


def make_emulated_runner(target: Any, progress: Progress | None = None, workers: int = 1,
                         **kwargs: Any) -> tuple[EmulatedRunner, Callable[[], None]]:
    """An EmulatedRunner for ``target`` (a DeployTarget for aarch64 CPUs, e.g. rasp4), its guests
    starting in the background; returns ``(runner, close)``. Call ``close()`` when tuning ends."""
    require_emulatable(target.to_manifest(), "--emulate")
    qemu_user()  # one clear line now if qemu-user is missing, not minutes later
    qemu_cpu = kwargs.pop("qemu_cpu", None) or emulated_cpu(target.to_manifest())
    runner = EmulatedRunner(qemu_cpu=qemu_cpu, workers=workers, progress=progress, **kwargs)
    runner.start()
    return runner, runner.close
