"""A MetaSchedule builder over long-lived worker processes: one import each, a timeout per build.

MetaSchedule's ``LocalBuilder`` restarts its worker pool on every batch, and each new worker pays a
~35 s import of ``tvm.s_tir.tensor_intrin`` (more than the default 30 s build timeout). Here the
workers live for the whole run (they import once, in the pool's initializer) and each build gets its
own timeout; a worker that times out or crashes is replaced. Cross targets are linked with their
cross compiler, so candidates can be measured on the device (RPC) or under emulation.

This module's top level imports only TVM: the build workers import it by reference.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

DEFAULT_BUILD_TIMEOUT_S = 60.0


def _warm_worker() -> None:
    """Pool initializer: pay the slow import once per worker, not once per build."""
    import tvm.s_tir.tensor_intrin  # noqa: F401  (registers the tensor intrinsics the schedules use)


def _build_one(mod: tvm.IRModule, target: tvm.target.Target, cross_compiler: str | None) -> str:
    """In a worker: build one candidate and export it as a shared library; return its path."""
    import tvm.s_tir.tensor_intrin  # noqa: F401  (already imported by the initializer)
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    from tvm.support import cc

    from ..compiler.build import build_context

    # measure the kernel without the weight layout rewrite (done once, at compile time)
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    with build_context():
        lib = tvm_build(mod, target=target)
    path = os.path.join(tempfile.mkdtemp(prefix="tsm-tune-"), "candidate.so")
    if cross_compiler:
        lib.export_library(path, fcompile=cc.cross_compiler(cross_compiler))
    else:
        lib.export_library(path)
    return path


@derived_object
class PersistentBuilder(ms.builder.PyBuilder):
    """A MetaSchedule builder over one long-lived pool of warmed-up worker processes."""

    def __init__(
        self,
        max_workers: int | None = None,
        timeout_sec: float = DEFAULT_BUILD_TIMEOUT_S,
        cross_compiler: str | None = None,
        max_uses: int | None = 400,
    ) -> None:
        super().__init__()
        self.max_workers = max_workers or os.cpu_count() or 1
        self.timeout_sec = timeout_sec
        self.cross_compiler = cross_compiler
        # workers are recycled after max_uses builds (LocalBuilder's reason to restart: a slow leak)
        self.pool = PopenPoolExecutor(
            max_workers=self.max_workers,
            timeout=timeout_sec,
            initializer=_warm_worker,
            maximum_process_uses=max_uses,
        )
        self.builds = 0
        self.failures = 0
        self.build_seconds = 0.0

    def start(self) -> list[Any]:
        """Start every worker now, in the background (each pays its import while the caller works)."""
        return [self.pool.submit(_noop) for _ in range(self.max_workers)]

    def build(self, build_inputs: list[ms.builder.BuilderInput]) -> list[ms.builder.BuilderResult]:
        start = time.perf_counter()
        results = []
        args = [(inp.mod, inp.target, self.cross_compiler) for inp in build_inputs]
        for res in self.pool.map_with_error_catching(lambda a: _build_one(*a), args):
            if res.status == StatusKind.COMPLETE:
                results.append(ms.builder.BuilderResult(res.value, None))
            else:
                self.failures += 1
                if res.status == StatusKind.TIMEOUT:
                    message = f"PersistentBuilder: timeout, worker killed after {self.timeout_sec} s"
                else:
                    message = f"PersistentBuilder: build failed\n{res.value}"
                results.append(ms.builder.BuilderResult(None, message))
        self.builds += len(build_inputs)
        self.build_seconds += time.perf_counter() - start
        return results

    def shutdown(self) -> None:
        self.pool.shutdown()


def _noop() -> None:
    return None
