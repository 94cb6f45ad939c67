"""The runners on this host: the compiled artifact, ONNX Runtime, PyTorch (see :mod:`tsm_deploy.evaluate.runners`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...runtime.manifest import check_runs_here, read_manifest
from . import StepOutput


class _Stepping:
    """``run`` = reset, then one step per input, collecting :meth:`outputs` after each."""

    name: str

    def reset(self) -> None:
        raise NotImplementedError

    def step(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def outputs(self) -> StepOutput:
        raise NotImplementedError

    def run(self, inputs: np.ndarray) -> list[StepOutput]:
        self.reset()
        results = []
        for x in inputs:
            self.step(np.ascontiguousarray(x))
            results.append(self.outputs())
        return results


class ArtifactRunner(_Stepping):
    """The artifact loaded on this machine with the thin runtime (stream or clip)."""

    def __init__(self, artifact_dir: Path, name: str = "tvm", hint: str | None = None) -> None:
        from ...runtime import ClipModel, load_model

        if hint is not None:
            check_runs_here(read_manifest(artifact_dir, check_module=False), artifact_dir, hint)
        self.name = name
        self.model = load_model(artifact_dir)
        self._is_clip = isinstance(self.model, ClipModel)
        self._logits: np.ndarray | None = None

    def reset(self) -> None:
        if not self._is_clip:
            self.model.reset()

    def step(self, x: np.ndarray) -> None:
        self._logits = self.model.predict(x).logits if self._is_clip else self.model.run_prepared(x)

    def outputs(self) -> StepOutput:
        return StepOutput(self._logits, [] if self._is_clip else self.model.buffers())


class _NamedIO(_Stepping):
    """Shared by the ONNX Runtime and PyTorch runners: inputs and outputs by name, state fed back."""

    def __init__(self, model: Any, name: str, prepare: Any = None) -> None:
        self.name = name
        self.input_shapes = model.input_shapes()
        self.output_names = model.output_names()
        self.state = model.state_pairs()
        self.data_input = next(n for n in self.input_shapes if n not in {i for _, i in self.state})
        self.logits_output = next(n for n in self.output_names if n not in {o for o, _ in self.state})
        self.prepare = prepare  # uint8 frame -> prepared input, for artifacts that take raw frames
        self.feeds: dict[str, np.ndarray] = {}
        self.results: dict[str, np.ndarray] = {}

    def reset(self) -> None:
        self.feeds = {i: np.zeros(self.input_shapes[i], np.float32) for _, i in self.state}

    def step(self, x: np.ndarray) -> None:
        self.feeds[self.data_input] = self.prepare(x) if self.prepare is not None else x
        self.results = dict(zip(self.output_names, self.compute(self.feeds)))
        for out, inp in self.state:
            self.feeds[inp] = self.results[out]

    def compute(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def outputs(self) -> StepOutput:
        return StepOutput(np.asarray(self.results[self.logits_output]).reshape(-1), [self.feeds[i] for _, i in self.state])


class OnnxRuntimeRunner(_NamedIO):
    """The exported model in ONNX Runtime, CPU provider, all graph optimisations, ``threads`` intra-op."""

    def __init__(self, model: Any, proto: Any, threads: int, name: str = "onnxruntime", prepare: Any = None) -> None:
        import onnxruntime as ort

        super().__init__(model, name, prepare)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.reset()

    def compute(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, feeds)


class TorchRunner(_NamedIO):
    """PyTorch eager under ``no_grad``: the reference of ``verify`` and a peer in ``bench``."""

    def __init__(self, model: Any, name: str = "pytorch", prepare: Any = None) -> None:
        super().__init__(model, name, prepare)
        self.model = model.eval()
        self.reset()

    def compute(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.no_grad():
            out = self.model(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_shapes))
        out = out if isinstance(out, tuple) else (out,)
        return [t.numpy() for t in out]
