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


class ChannelsLastState(NetworkWrapper):
    """The network with its shift buffers (state inputs and outputs) channels-last, ``(1, H, W, C)``.

    On CPU targets the compiled convolutions run NHWC; NCHW buffers would put a transpose on each side
    of every shift (a layout the convolution cannot use, and a kernel launch each). Taking and giving
    the buffers NHWC, the permutes written here cancel against the layout conversion's in the compiled
    graph, so the shift is a channel slice + concatenation on the innermost axis. Logits unchanged.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__(network)
        pairs = network.state_pairs()
        self.state_inputs = frozenset(i for _, i in pairs)
        self.state_outputs = frozenset(o for o, _ in pairs)

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {
            name: tuple(shape[i] for i in NCHW_TO_NHWC) if name in self.state_inputs else tuple(shape)
            for name, shape in self.network.input_shapes().items()
        }

    def forward(self, *inputs: torch.Tensor) -> Any:
        names = list(self.network.input_shapes())
        nchw = [x.permute(*NHWC_TO_NCHW) if name in self.state_inputs else x for name, x in zip(names, inputs)]
        outputs = self.network(*nchw)
        return tuple(
            y.permute(*NCHW_TO_NHWC) if name in self.state_outputs else y
            for name, y in zip(self.network.output_names(), outputs)
        )
