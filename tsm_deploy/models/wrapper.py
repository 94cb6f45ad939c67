"""Modules that wrap a deployable network and keep its pipeline interface (``io_kind``, ``n_shifts``,
``input_shapes``, ``output_names``, ``state_pairs``...), changing only what they say they change."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

NCHW_TO_NHWC = (0, 2, 3, 1)
NHWC_TO_NCHW = (0, 3, 1, 2)


class NetworkWrapper(nn.Module):
    """Delegates every attribute it does not define to the wrapped ``network``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            network = self._modules.get("network")
            if network is None:
                raise
            return getattr(network, name)


class PackedState(NetworkWrapper):
    """The network with all its shift buffers packed, channels-last, into one state tensor.

    ``forward(frame, state)`` with ``state`` of shape ``(1, total)``: the buffers' NHWC elements one
    after another (:attr:`parts` gives their NHWC shapes). Returns ``(logits, next_state)``.

    Why, on CPU targets: the compiled convolutions run NHWC, and NCHW buffers put a transpose on each
    side of every shift; taking the buffers NHWC, the permutes written here cancel against the layout
    conversion's (``compiler.passes.fold_permutes``), so a shift is a channel slice + concatenation. And
    one state tensor instead of ten in and ten out: the per-call work for the state (the runtime's and
    the VM's, per tensor) is what a shift cost beyond its copies (measured on the emulated Cortex-A72:
    +4.1 % of a frame's instructions for 20 state tensors, +0.7 % for the shift kernels). Logits unchanged.
    """

    STATE_IN, STATE_OUT = "shift_state", "next_shift_state"

    def __init__(self, network: nn.Module) -> None:
        super().__init__(network)
        shapes = network.input_shapes()
        pairs = network.state_pairs()
        self.buffer_inputs = [i for _, i in pairs]
        self.buffer_outputs = [o for o, _ in pairs]
        self.parts = [tuple(shapes[i][d] for d in NCHW_TO_NHWC) for i in self.buffer_inputs]
        self.sizes = [int(torch.Size(p).numel()) for p in self.parts]
        # the strided slices and concatenations this wrapper adds to the graph: the shift check must
        # not count them as shifts (one slice per buffer unpacked, one concatenation packing)
        self.own_slices_and_concats = (len(self.parts), 1)

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {n: tuple(s) for n, s in self.network.input_shapes().items() if n not in self.buffer_inputs}
        shapes[self.STATE_IN] = (1, sum(self.sizes))
        return shapes

    def output_names(self) -> list[str]:
        return [n for n in self.network.output_names() if n not in self.buffer_outputs] + [self.STATE_OUT]

    def state_pairs(self) -> list[tuple[str, str]]:
        return [(self.STATE_OUT, self.STATE_IN)]

    def zero_buffers(self) -> list[torch.Tensor]:
        return [torch.zeros(1, sum(self.sizes))]

    def forward(self, *inputs: torch.Tensor) -> Any:
        names = [n for n in self.network.input_shapes() if n not in self.buffer_inputs]
        given = dict(zip(names + [self.STATE_IN], inputs))
        state, offset = given.pop(self.STATE_IN), 0
        for name, part, size in zip(self.buffer_inputs, self.parts, self.sizes):
            # plain slices, not torch.split: ONNX Split becomes one kernel copying everything
            given[name] = state[:, offset : offset + size].reshape(part).permute(*NHWC_TO_NCHW)
            offset += size
        outputs = dict(zip(self.network.output_names(), self.network(*(given[n] for n in self.network.input_shapes()))))
        packed = torch.cat([outputs.pop(o).permute(*NCHW_TO_NHWC).reshape(1, -1) for o in self.buffer_outputs], dim=1)
        return (*outputs.values(), packed)
