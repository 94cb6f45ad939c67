"""Where a model runs, behind one protocol shared by ``verify`` and ``bench``.

A :class:`Runner` takes a batch of prepared inputs (stream: frames ``(N, 1, 3, S, S)``; clip: clips
``(N, 1, T, 3, S, S)``; an artifact with preprocessing compiled in: uint8 frames) and runs them in
order from a zero state, returning each step's logits and state. A :class:`SteppingRunner` can also
be driven one step at a time (what the benchmark times). The state is fed back inside each runner.

Runners: :mod:`.local` (the artifact on this host, ONNX Runtime, PyTorch), :mod:`.emulated` (the
artifact on an emulated ARM CPU) and :mod:`.rpc` (on a device over TVM RPC).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class StepOutput:
    logits: np.ndarray  # (n_class,)
    state: list[np.ndarray]  # the state inputs after this step (shift buffers); [] for clips


class Runner(Protocol):
    name: str

    def run(self, inputs: np.ndarray) -> list[StepOutput]: ...


class SteppingRunner(Runner, Protocol):
    def reset(self) -> None: ...

    def step(self, x: np.ndarray) -> None: ...
