"""The timing loop: warm each runner alone, then interleave them in rotating rounds."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..runners import SteppingRunner
from .memory import _PeakRss
from .report import RunnerStats


def measure(
    runners: list[SteppingRunner],
    setup_rss: dict[str, int],
    frames: np.ndarray,
    count: int,
    warmup: int,
    round_size: int,
    peak: _PeakRss,
    progress: Callable[[int, int], None],
) -> dict[str, RunnerStats]:
    total = count * len(runners)
    samples: dict[str, list[float]] = {r.name: [] for r in runners}
    peaks: dict[str, int] = {r.name: 0 for r in runners}
    # warm-up: each runner alone, from zero buffers; then every runner continues its own stream
    for runner in runners:
        peak.reset()
        runner.reset()
        for i in range(warmup):
            runner.step(frames[i % len(frames)])
            peak.sample()
        peaks[runner.name] = max(peaks[runner.name], peak.peak_bytes())
    perf = time.perf_counter
    done = 0
    round_index = 0
    position = {r.name: 0 for r in runners}
    while done < total:
        shift = round_index % len(runners)
        order = runners[shift:] + runners[:shift]  # rotate who goes first
        for runner in order:
            left = count - len(samples[runner.name])
            n = min(round_size, left)
            if n <= 0:
                continue
            times = samples[runner.name]
            peak.reset()
            for _ in range(n):
                frame = frames[position[runner.name] % len(frames)]
                position[runner.name] += 1
                start = perf()
                runner.step(frame)
                times.append(perf() - start)
                peak.sample()
            peaks[runner.name] = max(peaks[runner.name], peak.peak_bytes())
            done += n
            progress(done, total)
        round_index += 1
    return {
        r.name: RunnerStats.from_samples(r.name, samples[r.name], peaks[r.name], setup_rss[r.name]) for r in runners
    }
