"""An exact instruction meter for the emulated Raspberry Pi 4: guest instructions counted by a QEMU
TCG plugin (``meter_plugin.c``), between markers the guest sets.

Wall time under QEMU is no latency figure (it varies 2x run to run and says nothing of a Cortex-A72's
pipeline); the number of guest instructions executed is exact and repeatable (with one guest thread:
``TVM_NUM_THREADS=1``, and ``PYTHONDONTWRITEBYTECODE=1`` so no run writes .pyc files the next one
skips). It is what this module measures, always labelled :data:`INSTRUCTIONS_LABEL`.

* :func:`build_meter_plugin`: the plugin, built with the host's gcc on first use, cached under the
  tsm-deploy cache dir keyed by the source's hash.
* :func:`run_metered`: run an aarch64 program under ``qemu-aarch64 -plugin``; returns its markers.
* :func:`count_artifact`: per-frame (and per-function) instruction counts of an aarch64 artifact,
  run through the deploy bundle's thin runtime in the emulated Pi.
* :class:`MeasureSession`: one long-lived guest process (``guest_measure.py serve``) that measures
  compiled functions (MetaSchedule candidates) one request at a time.

Needs Debian's ``qemu-user`` (the dynamic ``qemu-aarch64``; ``qemu-user-static`` cannot load plugins)
and ``gcc``.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CheckFailed, TsmDeployError
from ..support.tools import Progress, atomic_cache_entry, logger, report, require_tool, resolve_cache_dir, run_logged
from ..target.arch import ARCHES, GUEST_PYTHON, QEMU_USER_PACKAGE, emulated_cpu, require_emulatable
from .rootfs import DEFAULT_QEMU_CPU

__all__ = [
    "INSTRUCTIONS_LABEL",
    "MARKER_SYSCALL",
    "ArtifactCount",
    "Mark",
    "MeasureSession",
    "MeteredRun",
    "build_meter_plugin",
    "count_artifact",
    "guest_environment",
    "read_marks",
    "run_metered",
]

INSTRUCTIONS_LABEL = "emulated instructions (QEMU TCG, Cortex-A72 ISA)"
# An aarch64 system call number no Linux kernel assigns (they end near 460): QEMU and the kernel
# answer ENOSYS, the plugin sees the call first. Must match guest_measure.MARKER_SYSCALL.
MARKER_SYSCALL = 0x7A5D
QEMU_USER = ARCHES["aarch64"].qemu_user
PLUGIN_SOURCE = Path(__file__).with_name("meter_plugin.c")
GUEST_SCRIPT = Path(__file__).with_name("guest_measure.py")
# One guest thread (TVM's pool would otherwise spin and race the counter) and no .pyc writes.
GUEST_ENV = {"TVM_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
METER_MODES = ("inline", "vcpu")
# Python start-up and `import tvm` under the plugin take ~10 s here; loading a full model ~10 s more.
STARTUP_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Mark:
    """One marker the guest set: ``delta`` instructions since the previous one, ``total`` since start."""

    tag: str
    vcpu: int
    delta: int
    total: int


@dataclass(frozen=True)
class MeteredRun:
    returncode: int
    stdout: str
    stderr: str
    marks: tuple[Mark, ...]
    wall_s: float

    @property
    def total(self) -> int | None:
        """Instructions of the whole run (the plugin's exit line), None if the guest died first."""
        totals = [m.total for m in self.marks if m.tag == "exit"]
        return sum(totals) if totals else None


@dataclass(frozen=True)
class ArtifactCount:
    """Instruction counts of one artifact streamed on the emulated Pi (one guest thread).

    ``per_frame``: each frame's ``run_prepared`` (the first frame pays lazy symbol binding and first-use
    allocations); ``startup``: from process start to the loaded model (Python, imports, module load);
    ``per_function``: instructions per compiled function over one frame, summed over its calls
    (None unless asked for). Counts, not latency: see :data:`INSTRUCTIONS_LABEL`.
    """

    per_frame: tuple[int, ...]
    startup: int
    per_function: dict[str, int] | None
    calls: dict[str, int] | None
    marker_overhead: int
    qemu_cpu: str
    wall_s: float
    label: str = INSTRUCTIONS_LABEL

    @property
    def per_frame_instructions(self) -> int:
        """Steady-state instructions per frame: the median of the frames after the first."""
        steady = sorted(self.per_frame[1:] or self.per_frame)
        return steady[len(steady) // 2]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "qemu_cpu": self.qemu_cpu,
            "per_frame_instructions": self.per_frame_instructions,
            "per_frame": list(self.per_frame),
            "startup": self.startup,
            "per_function": self.per_function,
            "calls": self.calls,
            "marker_overhead": self.marker_overhead,
            "wall_s": round(self.wall_s, 1),
        }


# --------------------------------------------------------------------------------------------------
# The plugin and the command line.


def build_meter_plugin(cache_dir: Path | None = None, progress: Progress | None = None) -> Path:
    """The meter plugin (a host shared library), built with gcc on first use; cached by source hash."""
    return _build_from_source("gcc", "gcc", "meter.so", [], cache_dir, progress, "the QEMU instruction-meter plugin")


def build_guest_helper(cache_dir: Path | None = None, progress: Progress | None = None) -> Path:
    """The guest's helper (meter_plugin.c with -DTSM_METER_GUEST, an aarch64 shared library) that sets
    markers around a call from C; cached by source hash."""
    return _build_from_source("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu", "meter_guest.so",
                              ["-DTSM_METER_GUEST"], cache_dir, progress, "the guest's meter helper (aarch64)")


def _build_from_source(compiler: str, package: str, name: str, flags: list[str], cache_dir: Path | None,
                       progress: Progress | None, what: str) -> Path:
    source = PLUGIN_SOURCE.read_bytes()
    key = hashlib.sha256(source + compiler.encode()).hexdigest()[:12]
    final = resolve_cache_dir(cache_dir) / "qemu-meter" / f"{Path(name).stem}-{key}"
    library = final / name
    if library.exists():
        return library
    cc = require_tool(compiler, package)
    report(progress, f"building {what}")
    with atomic_cache_entry(final) as tmp:
        (tmp / PLUGIN_SOURCE.name).write_bytes(source)
        run_logged([cc, "-O2", "-shared", "-fPIC", "-pthread", "-Wall", *flags,
                    "-o", tmp / name, tmp / PLUGIN_SOURCE.name])
    return library


def qemu_user() -> str:
    """The dynamic ``qemu-aarch64`` (the static build cannot load plugins)."""
    return require_tool(QEMU_USER, QEMU_USER_PACKAGE)


def metered_command(rootfs: Path, argv: Sequence[str | os.PathLike[str]], counts_file: Path,
                    plugin: Path, mode: str = "inline") -> list[str]:
    """``qemu-aarch64 -L ROOTFS -plugin meter.so,out=...`` + the guest program and its arguments."""
    if mode not in METER_MODES:
        raise TsmDeployError(f"meter mode {mode!r}: expected one of {', '.join(METER_MODES)}")
    rootfs = Path(rootfs).resolve()
    plugin_arg = f"{plugin},out={counts_file},marker={MARKER_SYSCALL},mode={mode}"
    return [qemu_user(), "-L", str(rootfs), "-plugin", plugin_arg, _guest_program(rootfs, str(argv[0])),
            *(str(a) for a in argv[1:])]


def _guest_program(rootfs: Path, program: str) -> str:
    # qemu-user opens the program itself by host path (-L redirects only the guest's own file
    # accesses): an absolute path means the rootfs's copy when there is one (the host's python3 is x86)
    inside = rootfs / program.lstrip("/")
    return str(inside) if program.startswith("/") and inside.exists() else program


def guest_environment(python_path: Path | None = None, qemu_cpu: str | None = None,
                      extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean guest environment (host variables would mislead the guest) for repeatable counts."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/tmp",  # not the host's: a guest Python would add the host user's x86 site-packages
        "QEMU_CPU": qemu_cpu or DEFAULT_QEMU_CPU,
        **GUEST_ENV,
    }
    if python_path is not None:
        env["PYTHONPATH"] = str(python_path)
    env.update(extra or {})
    return env


def read_marks(path: Path) -> tuple[Mark, ...]:
    """The plugin's lines: ``<tag> <vcpu> <delta> <total>``."""
    marks = []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return ()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 4:
            marks.append(Mark(fields[0], int(fields[1]), int(fields[2]), int(fields[3])))
    return tuple(marks)


def run_metered(rootfs: Path, argv: Sequence[str | os.PathLike[str]], *, env: Mapping[str, str] | None = None,
                cwd: Path | None = None, timeout: float | None = None, mode: str = "inline",
                qemu_cpu: str | None = None, cache_dir: Path | None = None) -> MeteredRun:
    """Run an aarch64 program under the meter; ``argv[0]`` may be a path inside the rootfs.

    The environment is :func:`guest_environment` updated by ``env``. Raises subprocess.TimeoutExpired.
    """
    plugin = build_meter_plugin(cache_dir)
    with tempfile.TemporaryDirectory(prefix="tsm-meter-") as tmp:
        counts = Path(tmp) / "counts.txt"
        cmd = metered_command(rootfs, argv, counts, plugin, mode)
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=guest_environment(qemu_cpu=qemu_cpu, extra=env), cwd=cwd,
                              capture_output=True, text=True, timeout=timeout, check=False)
        return MeteredRun(proc.returncode, proc.stdout, proc.stderr, read_marks(counts), time.perf_counter() - start)


def _guest_script_args(directory: Path, counts: Path, helper: Path) -> list[str]:
    """Copy the guest script and helper into ``directory`` (seen by the guest at the same path)."""
    shutil.copy2(GUEST_SCRIPT, directory / GUEST_SCRIPT.name)
    shutil.copy2(helper, directory / helper.name)
    return [str(directory / GUEST_SCRIPT.name), "--counts", str(counts), "--helper", str(directory / helper.name)]


def _describe_failure(returncode: int, stderr: str, qemu_cpu: str) -> str:
    if returncode < 0:
        sig = signal.Signals(-returncode).name if -returncode in signal.Signals._value2member_map_ else str(-returncode)
        if returncode == -signal.SIGILL:
            return f"SIGILL on an emulated {qemu_cpu}: the code uses instructions this CPU lacks"
        return f"the guest died with {sig}"
    lines = [line for line in (stderr or "").strip().splitlines() if line.strip()]
    return f"exit code {returncode}: {lines[-1].strip() if lines else 'no message'}"


# --------------------------------------------------------------------------------------------------
# Whole artifacts.


def count_artifact(artifact_dir: Path, frames: int = 3, per_function: bool = False, *,
                   qemu_cpu: str | None = None, mode: str = "inline", timeout: float | None = None,
                   cache_dir: Path | None = None, progress: Progress | None = None) -> ArtifactCount:
    """Instructions per frame of an aarch64 CPU artifact on an emulated Cortex-A72 (one thread).

    Stages the deploy bundle (the artifact, the thin runtime, the aarch64 TVM runtime) into a
    temporary directory, runs ``guest_measure.py artifact`` under the meter and returns exact counts
    per ``StreamingModel.run_prepared`` call, with markers around each frame.
    """
    from ..deploy.bundle import stage_bundle
    from ..runtime.manifest import read_manifest
    from .rootfs import build_arm64_rootfs

    if frames < 1:
        raise TsmDeployError(f"frames must be >= 1, got {frames}")
    artifact_dir = Path(artifact_dir)
    manifest = read_manifest(artifact_dir)
    require_emulatable(manifest.target, "the instruction meter")
    qemu_user()
    qemu_cpu = qemu_cpu or emulated_cpu(manifest.target)
    plugin = build_meter_plugin(cache_dir, progress)
    helper = build_guest_helper(cache_dir, progress)
    rootfs = build_arm64_rootfs(cache_dir, progress)
    with tempfile.TemporaryDirectory(prefix="tsm-meter-") as tmp:
        root = stage_bundle(artifact_dir, Path(tmp), progress or (lambda m: None))
        argv = [GUEST_PYTHON, *_guest_script_args(root, root / "counts.txt", helper),
                "artifact", str(root / "artifact"), "--frames", str(frames)]
        if per_function:
            argv.append("--per-function")
        report(progress, f"counting {INSTRUCTIONS_LABEL} over {frames} frames"
               + (" (+1 frame per function)" if per_function else ""))
        timeout = timeout or STARTUP_TIMEOUT_S + 60.0 * (frames + (2 if per_function else 0))
        # the guest reads its own markers back from the counts file (the plugin's out= file)
        cmd = metered_command(rootfs, argv, root / "counts.txt", plugin, mode)
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=guest_environment(root / "python", qemu_cpu), cwd=root,
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"the metered run did not finish in {timeout:.0f} s") from None
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise CheckFailed(f"the metered run failed: {_describe_failure(proc.returncode, proc.stderr, qemu_cpu)}")
        try:
            result = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise CheckFailed(f"the metered run printed no result: {proc.stderr.strip()[-300:]}") from None
    return ArtifactCount(
        per_frame=tuple(int(n) for n in result["per_frame"]),
        startup=int(result["startup"]),
        per_function=result.get("per_function"),
        calls=result.get("calls"),
        marker_overhead=int(result["marker_overhead"]),
        qemu_cpu=qemu_cpu,
        wall_s=wall,
    )


# --------------------------------------------------------------------------------------------------
# A long-lived guest that measures compiled functions.


class GuestFailure(Exception):
    """The guest process died or stopped answering; the session restarts it for the next request."""


@dataclass
class MeasureSession:
    """One ``guest_measure.py serve`` process under the meter, restarted after a failure.

    ``measure(path, args_info)`` loads an aarch64 shared library (a MetaSchedule candidate) in the
    guest, calls its entry function ``warmup`` times, then ``repeat`` times between markers, and
    returns the exact instructions of each measured call (the Python-to-TVM call included, the
    marker's own cost excluded). Not thread-safe: one caller at a time.
    """

    qemu_cpu: str = DEFAULT_QEMU_CPU
    mode: str = "inline"
    cache_dir: Path | None = None
    progress: Progress | None = None
    startup_timeout: float = STARTUP_TIMEOUT_S
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _stderr: Any = field(default=None, init=False, repr=False)
    _dir: Path | None = field(default=None, init=False, repr=False)
    _buffer: bytes = field(default=b"", init=False, repr=False)
    _next_id: int = field(default=0, init=False, repr=False)
    marker_overhead: int | None = field(default=None, init=False)
    restarts: int = field(default=0, init=False)

    def start(self) -> None:
        """Prepare the guest (rootfs, device packages, plugin: cached) and start it; waits until ready."""
        from ..deploy.pyenv import assemble_device_packages
        from .rootfs import build_arm64_rootfs

        qemu_user()
        plugin = build_meter_plugin(self.cache_dir, self.progress)
        helper = build_guest_helper(self.cache_dir, self.progress)
        rootfs = build_arm64_rootfs(self.cache_dir, self.progress)
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="tsm-measure-"))
            assemble_device_packages(self._dir / "python", "aarch64", self.cache_dir, self.progress)
        counts = self._dir / f"counts-{self.restarts}.txt"
        argv = [GUEST_PYTHON, *_guest_script_args(self._dir, counts, helper), "serve"]
        cmd = metered_command(rootfs, argv, counts, plugin, self.mode)
        if self._stderr is not None:
            self._stderr.close()
        self._stderr = open(self._dir / "guest-stderr.txt", "ab")
        report(self.progress, f"starting the metered guest ({self.qemu_cpu})")
        self._proc = subprocess.Popen(cmd, env=guest_environment(self._dir / "python", self.qemu_cpu),
                                      cwd=self._dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr, start_new_session=True)
        self._buffer = b""
        hello = self._read_line(self.startup_timeout)
        if not hello.get("ready"):
            raise GuestFailure(f"the guest did not start: {hello}")
        self.marker_overhead = int(hello["marker_overhead"])

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def measure(self, path: str | os.PathLike[str], args_info: Sequence[Sequence[Any]], *, func: str | None = None,
                warmup: int = 1, repeat: int = 1, timeout: float = 120.0) -> list[int]:
        """Instructions of each of ``repeat`` calls. ``args_info``: ``[["TENSOR", dtype, shape], ...]``.

        Raises GuestFailure (guest crashed or timed out; restarted on the next call) or RuntimeError
        (the guest answered with an error, e.g. the library does not load)."""
        if not self.running:
            if self._proc is not None:
                self.restarts += 1
            self.start()
        self._next_id += 1
        request = {"id": self._next_id, "path": str(Path(path).resolve()), "func": func,
                   "args": [list(a) for a in args_info], "warmup": warmup, "repeat": repeat}
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise GuestFailure(self._death()) from None
        answer = self._read_line(timeout)
        if answer.get("id") != request["id"]:
            self._kill()
            raise GuestFailure(f"the guest answered out of turn: {answer}")
        if not answer.get("ok"):
            raise RuntimeError(str(answer.get("error", "unknown error")))
        return [int(n) for n in answer["counts"]]

    def _read_line(self, timeout: float) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                raise GuestFailure(f"no answer from the guest in {timeout:.0f} s (killed)")
            ready, _, _ = select.select([fd], [], [], min(remaining, 1.0))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise GuestFailure(self._death())
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            self._kill()
            raise GuestFailure(f"the guest printed something unexpected: {line[:200]!r}") from None

    def _death(self) -> str:
        assert self._proc is not None
        try:
            code = self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._kill()
            code = self._proc.returncode
        tail = ""
        if self._dir is not None and (self._dir / "guest-stderr.txt").exists():
            lines = (self._dir / "guest-stderr.txt").read_text(errors="replace").strip().splitlines()
            tail = lines[-1] if lines else ""
        message = _describe_failure(code if code is not None else -signal.SIGKILL, tail, self.qemu_cpu)
        logger.warning("metered guest failed: %s", message)
        return message

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)  # the guest's own process group (start_new_session)
            except ProcessLookupError:
                pass
            self._proc.wait()

    def close(self) -> None:
        """Stop the guest and remove its staging directory."""
        if self._proc is not None:
            if self._proc.poll() is None and self._proc.stdin is not None:
                try:
                    self._proc.stdin.close()
                    self._proc.wait(timeout=10)
                except (BrokenPipeError, subprocess.TimeoutExpired):
                    pass
            self._kill()
            self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> MeasureSession:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
