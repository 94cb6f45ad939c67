#!/usr/bin/env python
"""Write the checkpoints TSM users hold, in the layouts and under the file names they come with,
with seeded random weights: what the record library is tuned and benchmarked on.

    .venv/bin/python scripts/user_checkpoints.py OUT_DIR [NAME ...]

A tuning record depends only on a kernel's shapes, never on its weights, so random weights tune the
same kernels as the published files. Names (default: all):

- ``online-mbv2``: the original online demo's ``mobilenetv2_jester_online.pth.tar`` (bare state dict,
  MobileNetV2 width 1.0 at 224, 27 classes, streamed frame by frame);
- ``r50-kinetics``: the original code's ``TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth``
  (offline 8x224, 400 classes, ``module.``-prefixed ``state_dict``);
- ``r50-something``: the same network with 174 classes (Something-Something V2), a class count never tuned;
- ``mbv2-kinetics``: ``TSM_kinetics_RGB_mobilenetv2_shift8_blockres_avg_segment8_e100_dense.pth`` (offline 8x224);
- ``r34-something``: ``TSM_something_RGB_resnet34_shift8_blockres_avg_segment8_e45.pth`` (compile at 160:
  ``--input-size 160``), a model outside the library.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tsm_deploy.models import ModelConfig, build_model  # noqa: E402

# name -> (file name, model config, how the original code stores it)
USER_CHECKPOINTS = {
    "online-mbv2": ("mobilenetv2_jester_online.pth.tar",
                    dict(arch="tsm_mobilenet_v2_online", n_class=27, input_size=224), "bare"),
    "r50-kinetics": ("TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth",
                     dict(arch="tsm_resnet50", n_class=400, n_segment=8, input_size=224), "training"),
    "r50-something": ("TSM_something_RGB_resnet50_shift8_blockres_avg_segment8_e45.pth",
                      dict(arch="tsm_resnet50", n_class=174, n_segment=8, input_size=224), "training"),
    "mbv2-kinetics": ("TSM_kinetics_RGB_mobilenetv2_shift8_blockres_avg_segment8_e100_dense.pth",
                      dict(arch="tsm_mobilenet_v2", n_class=400, n_segment=8, input_size=224), "training"),
    "r34-something": ("TSM_something_RGB_resnet34_shift8_blockres_avg_segment8_e45.pth",
                      dict(arch="tsm_resnet34", n_class=174, n_segment=8, input_size=160), "training"),
}


def write_user_checkpoint(name: str, out_dir: Path, seed: int = 0) -> Path:
    """Write the checkpoint ``name`` of :data:`USER_CHECKPOINTS` into ``out_dir``; -> its path."""
    filename, options, layout = USER_CHECKPOINTS[name]
    torch.manual_seed(seed)
    model = build_model(ModelConfig.from_dict(options))
    state = model.state_dict()
    if layout == "bare":
        obj = state
    else:  # the original main.py's save_checkpoint: DataParallel's prefix, epoch, arch, best_prec1
        arch = options["arch"].removeprefix("tsm_").replace("mobilenet_v2", "mobilenetv2")
        obj = {"epoch": 50, "arch": arch, "best_prec1": 0.0, "state_dict": {"module." + k: v for k, v in state.items()}}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / filename
    torch.save(obj, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("names", nargs="*", help=f"which (default: all): {', '.join(USER_CHECKPOINTS)}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in USER_CHECKPOINTS]
    if unknown:
        parser.error(f"unknown checkpoint {unknown[0]!r} (known: {', '.join(USER_CHECKPOINTS)})")
    for name in args.names or USER_CHECKPOINTS:
        print(write_user_checkpoint(name, args.out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
