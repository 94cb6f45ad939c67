"""The timing loop: warm each runner alone, then interleave them in rotating rounds.

Runners come in groups (a runner and its no-shift twin): a group's members run back to back in every
round, their order flipped every other round, and the groups take turns first. So a twin pair meets
the same background load and the same neighbours (the thread pools the previous runner left
spinning), and the shift overhead can be read round by round (:func:`.report.paired_overhead`).
Each runner's block starts with ``settle`` untimed frames of its own stream: what the previous runner
left behind (its data in the caches, its thread pool still spinning) then costs nobody's timed frames.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..runners import SteppingRunner
from .memory import _PeakRss
from .report import RunnerStats


def round_order(groups: list[list[SteppingRunner]], round_index: int) -> list[SteppingRunner]:
    """Who runs in round ``round_index``: the groups rotated, each group reversed on odd rounds."""
    shift = round_index % len(groups)
    rotated = groups[shift:] + groups[:shift]
    return [runner for group in rotated for runner in (group[::-1] if round_index % 2 else group)]


def measure(
    groups: list[list[SteppingRunner]],
    setup_rss: dict[str, int],
    frames: np.ndarray,
    count: int,
    warmup: int,
    round_size: int,
    peak: _PeakRss,
    progress: Callable[[int, int], None],
    settle: int = 0,
) -> tuple[dict[str, RunnerStats], dict[str, list[float]]]:
    """Per runner: its statistics and its samples (seconds, in round order: ``round_size`` per round)."""
    runners = [runner for group in groups for runner in group]
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
        for runner in round_order(groups, round_index):
            n = min(round_size, count - len(samples[runner.name]))
            if n <= 0:
                continue
            times = samples[runner.name]
            peak.reset()
            for _ in range(settle):
                runner.step(frames[position[runner.name] % len(frames)])
                position[runner.name] += 1
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
    stats = {
        r.name: RunnerStats.from_samples(r.name, samples[r.name], peaks[r.name], setup_rss[r.name]) for r in runners
    }
    return stats, samples
