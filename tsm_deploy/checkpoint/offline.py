"""Offline TSM checkpoints as users hold them -> this project's key names and model options.

Two layouts are recognised:

* ``tsm-original``: the original training code (mit-han-lab/temporal-shift-module, ``main.py``):
  ``{"state_dict": {"module.base_model.conv1.weight", ..., "module.new_fc.weight"}, "epoch", "arch",
  "best_prec1"}``, with DataParallel's ``module.`` prefix or without. Its file names say what the
  weights cannot: ``TSM_{dataset}_{modality}_{arch}[_shift{div}_{place}][_tpool]_{consensus}_segment{T}_e{E}
  [_dense][_nl]...`` (the training run's folder name; the file itself may be ``ckpt.best.pth.tar``);
* ``mmaction2``: MMAction2's ``Recognizer2D`` with ``ResNetTSM`` or ``MobileNetV2TSM`` and ``TSMHead``:
  ``{"state_dict": {"backbone.conv1.conv.weight", "backbone.layer1.0.conv1.conv.net.weight", ...,
  "cls_head.fc_cls.weight"}, "meta": {"cfg" or "config": <config text>, ...}}``. Its convolutions are
  mmcv ``ConvModule`` s (``convN.conv`` + ``convN.bn``), renamed here to torchvision's (``convN`` + ``bnN``).

This project's names are the original's without ``module.`` (see :mod:`tsm_deploy.models.tsn`). The
architecture, class count, head layout, shift placement and temporal pooling are read off the keys
and shapes; the clip length and fold (parameter-free) from the MMAction2 config or the file name
when they are there. Everything is pure: state dicts in, state dicts out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Mapping

import torch

from ..errors import TsmDeployError
from ..models.mobilenet_v2 import INVERTED_RESIDUAL_SETTING
from ..models.resnet import RESNET_STAGES
from ..models.tsn import MOBILENET_V2_ARCH, RESNET_ARCHS, build_offline
from .core import closest_width, mismatches

TSM_ORIGINAL = "tsm-original"
MMACTION2 = "mmaction2"
MAX_SHOWN = 10  # mismatch lines shown before "...and N more"
_ARCH_BY_DEPTH = {depth: arch for arch, depth in RESNET_ARCHS.items()}
_MMACTION2_BACKBONES = {"ResNetTSM", "MobileNetV2TSM"}


@dataclass(frozen=True)
class ConvertedCheckpoint:
    """What an offline checkpoint holds, in this project's terms (``None``: the file does not say)."""

    arch: str
    n_class: int
    n_segment: int | None
    fold_div: int | None
    placement: str | None  # "residual" (original "blockres") / "inplace" ("block"); None without shift
    temporal_pool: bool
    width_mult: float
    head: str  # "new_fc" or "fc"
    shift: bool
    state_dict: dict[str, torch.Tensor]
    layout: str
    notes: tuple[str, ...] = ()
    labels: tuple[str, ...] | None = None

    def build_options(self, input_size: int = 224, n_segment: int = 8, fold_div: int = 8) -> dict[str, Any]:
        """Keyword arguments of :func:`~tsm_deploy.models.tsn.build_offline`; the given values fill
        what the checkpoint does not say."""
        return {
            "arch": self.arch,
            "n_class": self.n_class,
            "n_segment": self.n_segment or n_segment,
            "input_size": input_size,
            "width_mult": self.width_mult,
            "fold_div": self.fold_div or fold_div,
            "placement": self.placement or "residual",
            "temporal_pool": self.temporal_pool,
            "shift": self.shift,
            "head": self.head,
        }


@dataclass
class _Hints:
    """What a file name, the original's ``arch`` field or an MMAction2 config says (None: silent)."""

    arch: str | None = None
    n_segment: int | None = None
    fold_div: int | None = None
    placement: str | None = None
    temporal_pool: bool | None = None
    shift: bool | None = None
    unsupported: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- layouts


def _strip_module(state: Mapping[str, Any]) -> dict[str, Any]:
    return {(k[len("module.") :] if isinstance(k, str) and k.startswith("module.") else k): v for k, v in state.items()}


def _state_of(obj: Any) -> Mapping[str, Any] | None:
    if not isinstance(obj, Mapping):
        return None
    inner = obj.get("state_dict")
    return inner if isinstance(inner, Mapping) else obj


def offline_layout(obj: Any) -> str | None:
    """``tsm-original``, ``mmaction2``, or None when ``obj`` is neither (e.g. an online demo state dict)."""
    if isinstance(obj, Mapping) and "tsm_deploy_format" in obj:
        return None  # this project's own format names its model in its config
    state = _state_of(obj)
    if not state:
        return None
    keys = [k for k in _strip_module(state) if isinstance(k, str)]
    if any(k.startswith(("base_model.", "new_fc.")) for k in keys):
        return TSM_ORIGINAL
    if any(k.startswith(("backbone.", "cls_head.")) for k in keys):
        return MMACTION2
    return None


def _tensors(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise TsmDeployError(
            f"the state dict holds {len(bad)} entries that are not named tensors (e.g. {str(bad[0])[:60]!r})"
        )
    return _strip_module(state)


# ------------------------------------------------------------------------------------ hints: file names


_ORIGINAL_NAME = re.compile(
    r"TSM_(?P<dataset>.+?)_(?P<modality>RGBDiff|RGB|Flow)_(?P<arch>[A-Za-z0-9]+)"
    r"(?:_shift(?P<div>\d+)_(?P<place>blockres|block))?(?P<tpool>_tpool)?"
    r"_(?P<consensus>[a-z]+)_segment(?P<segment>\d+)_e(?P<epochs>\d+)(?P<rest>(?:_[^/\\]*)?)$"
)
_ORIGINAL_ARCHS = {"resnet18": "tsm_resnet18", "resnet34": "tsm_resnet34", "resnet50": "tsm_resnet50",
                   "resnet101": "tsm_resnet101", "mobilenetv2": MOBILENET_V2_ARCH}
_SUFFIXES = (".pth.tar", ".pth", ".pt", ".tar", ".ckpt")


def _name_stems(filename: str) -> list[str]:
    """The file's name and its folders' names, nearest first, extensions off (the original names the
    run folder, ``.../TSM_..._e50/ckpt.best.pth.tar``)."""
    stems = []
    for part in reversed(PurePath(filename).parts):
        for suffix in _SUFFIXES:
            if part.endswith(suffix):
                part = part[: -len(suffix)]
                break
        stems.append(part)
    return stems


def parse_original_name(filename: str) -> _Hints | None:
    """Hints from the original's naming scheme (``main.py``'s ``store_name``); None if it is not one."""
    match = next((m for m in map(_ORIGINAL_NAME.search, _name_stems(filename)) if m), None)
    if match is None:
        return None
    hints = _Hints(n_segment=int(match["segment"]), shift=match["div"] is not None, temporal_pool=bool(match["tpool"]))
    if match["div"]:
        hints.fold_div = int(match["div"])
        hints.placement = "residual" if match["place"] == "blockres" else "inplace"
    if match["modality"] != "RGB":
        hints.unsupported.append(f"{match['modality']} modality (file name)")
    if match["consensus"] != "avg":
        hints.unsupported.append(f"{match['consensus']} consensus (file name)")
    rest = match["rest"].split("_")
    if "nl" in rest:
        hints.unsupported.append("non-local blocks (file name: _nl)")
    arch = match["arch"]
    if arch in _ORIGINAL_ARCHS:
        hints.arch = _ORIGINAL_ARCHS[arch]
    else:
        hints.unsupported.append(f"backbone {arch} (file name)")
    if "dense" in rest:
        hints.notes.append("trained with dense frame sampling (file name: _dense): sample the clip's frames the same way")
    return hints


_MMACTION2_NAME = re.compile(r"(?:^|[_-])tsm[_-]", re.IGNORECASE)


def parse_mmaction2_name(filename: str) -> _Hints | None:
    """Hints from MMAction2's model-zoo names, old (``tsm_r50_1x1x8_50e_kinetics400_rgb_...``) and new
    (``tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb_...``)."""
    stem = next((s for s in _name_stems(filename) if _MMACTION2_NAME.search(s)), None)
    if stem is None:
        return None
    tokens = re.split(r"[_-]", stem.lower())
    hints = _Hints()
    for token in tokens:
        if (m := re.fullmatch(r"r(\d+)", token)) and int(m[1]) in _ARCH_BY_DEPTH:
            hints.arch = _ARCH_BY_DEPTH[int(m[1])]
        elif token == "mobilenetv2":
            hints.arch = MOBILENET_V2_ARCH
        elif m := re.fullmatch(r"(\d+)x(\d+)x(\d+)", token):
            hints.n_segment = int(m[3])  # clip_len x frame_interval x num_clips
        elif token in ("mobileone", "swin", "tanet", "tpn"):
            hints.unsupported.append(f"backbone {token} (file name)")
    if "nl" in tokens or "non" in tokens:
        hints.unsupported.append("non-local blocks (file name)")
    if "flow" in tokens:
        hints.unsupported.append("Flow modality (file name)")
    if "temporal" in tokens and "pool" in tokens or "tpool" in tokens:
        hints.temporal_pool = True
    return hints


# -------------------------------------------------------------------------------- hints: MMAction2 meta


def _config_values(text: str, name: str) -> list[str]:
    return re.findall(rf"\b{name}\s*=\s*([^,\s)]+)", text)


def _bracketed_values(text: str, name: str) -> list[str]:
    """Every value of ``name = (...)`` / ``'name': [...]`` in ``text``, brackets balanced: nested
    tuples and mmengine's multi-line ``pretty_text`` (one element per line) included."""
    values = []
    for match in re.finditer(rf"""(?:\b{name}\s*=|['"]{name}['"]\s*:)\s*([(\[])""", text):
        depth, start = 0, match.start(1)
        for end in range(start, len(text)):
            depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(text[end], 0)
            if depth == 0:
                values.append(text[start : end + 1])
                break
        else:
            values.append(text[start:])  # unbalanced (cut off): judge what is there
    return values


def parse_mmaction2_config(text: str) -> _Hints:
    """Hints from an MMAction2 config text (``meta["cfg"]`` / ``meta["config"]``); MMAction2's defaults
    (8 segments, fold 1/8, blockres, no pooling) fill what the config leaves out."""
    hints = _Hints()
    types = [t.strip("'\"") for t in _config_values(text, "type")]
    backbone = next((t for t in types if t.endswith(("TSM", "TSMv2")) or t in _MMACTION2_BACKBONES), None)
    if backbone is not None and backbone not in _MMACTION2_BACKBONES:
        hints.unsupported.append(f"backbone {backbone} (MMAction2 config)")
    if backbone == "MobileNetV2TSM":
        hints.arch = MOBILENET_V2_ARCH
    depths = {int(v) for v in _config_values(text, "depth") if v.isdigit()}
    if backbone == "ResNetTSM" and len(depths) == 1 and depths <= set(_ARCH_BY_DEPTH):
        hints.arch = _ARCH_BY_DEPTH[depths.pop()]

    def one(name: str, default: str) -> str:
        values = [v.strip("'\"") for v in _config_values(text, name)]
        if len(set(values)) > 1:
            hints.notes.append(f"the MMAction2 config sets {name} to {sorted(set(values))}; using {values[0]}")
        return values[0] if values else default

    segments = one("num_segments", "8")
    hints.n_segment = int(segments) if segments.isdigit() else None
    div = one("shift_div", "8")
    hints.fold_div = int(div) if div.isdigit() else None
    place = one("shift_place", "blockres")
    hints.placement = {"blockres": "residual", "block": "inplace"}.get(place)
    hints.temporal_pool = one("temporal_pool", "False") == "True"
    hints.shift = one("is_shift", "True") == "True"
    if one("style", "pytorch") == "caffe":
        hints.unsupported.append("caffe-style ResNet (stride on conv1; MMAction2 config)")
    if any(re.search(r"\b[1-9]\d*\b", v) for v in _bracketed_values(text, "non_local")):
        hints.unsupported.append("non-local blocks (MMAction2 config)")
    if hints.shift is False:
        hints.placement = None
    return hints


def _meta_hints(obj: Mapping[str, Any]) -> tuple[_Hints | None, tuple[str, ...] | None]:
    meta = obj.get("meta")
    if not isinstance(meta, Mapping):
        return None, None
    text = meta.get("cfg") or meta.get("config")
    hints = parse_mmaction2_config(text) if isinstance(text, str) else None
    classes = None
    dataset_meta = meta.get("dataset_meta")
    new_style = dataset_meta.get("classes") if isinstance(dataset_meta, Mapping) else None
    for candidate in (new_style, meta.get("CLASSES")):  # mmengine's, then mmcv 1.x's
        if isinstance(candidate, (list, tuple)) and candidate and all(isinstance(c, str) for c in candidate):
            classes = tuple(candidate)
            break
    return hints, classes


# ------------------------------------------------------------------------------ MMAction2 -> our names


def _mmaction2_resnet_key(key: str) -> str:
    """``convN.conv`` -> ``convN``, ``convN.bn`` -> ``bnN``, ``downsample.conv/bn`` -> ``downsample.0/1``
    (a shift wrapper ``.net`` stays where it is: ``conv1.conv.net.weight`` -> ``conv1.net.weight``)."""
    key = re.sub(r"(^|\.)conv(\d)\.conv\.", r"\1conv\2.", key)
    key = re.sub(r"(^|\.)conv(\d)\.bn\.", r"\1bn\2.", key)
    return key.replace("downsample.conv.", "downsample.0.").replace("downsample.bn.", "downsample.1.")


def _mobilenet_block_offsets() -> list[int]:
    """``features`` index of the first block of each MMAction2 ``layer{i}`` (the stem is index 0)."""
    offsets, index = [], 1
    for _, _, n, _ in INVERTED_RESIDUAL_SETTING:
        offsets.append(index)
        index += n
    return offsets + [index]  # the last entry: MMAction2's ``conv2`` (the final 1x1 conv)


def _mmaction2_mobilenet_key(key: str) -> str:
    """MMAction2's ``layer{i}.{j}.conv.{m}.[net.]{conv|bn}`` (one ConvModule per conv) -> the original's
    flat ``features.{n}.conv.{3m|3m+1}`` (conv, bn, relu6 per unit); stem ``conv1`` and last ``conv2``."""
    offsets = _mobilenet_block_offsets()
    if m := re.fullmatch(r"layer(\d+)\.(\d+)\.conv\.(\d+)\.(net\.)?(conv|bn)\.(.+)", key):
        layer, block, unit, net, kind, rest = int(m[1]), int(m[2]), int(m[3]), m[4] or "", m[5], m[6]
        if 1 <= layer < len(offsets):
            index = offsets[layer - 1] + block
            if kind == "conv":
                return f"features.{index}.conv.{3 * unit}.{net}{rest}"
            return f"features.{index}.conv.{3 * unit + 1}.{rest}"  # bn: outside our shift wrapper
    if m := re.fullmatch(r"conv([12])\.(conv|bn)\.(.+)", key):
        index = 0 if m[1] == "1" else offsets[-1]
        return f"features.{index}.{0 if m[2] == 'conv' else 1}.{m[3]}"
    return key


def from_mmaction2(state: Mapping[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    """MMAction2 ``backbone.*`` / ``cls_head.fc_cls.*`` -> ``base_model.*`` / ``new_fc.*``."""
    keys = list(state)
    if any(".non_local_block." in k or re.match(r"backbone\.layer\d\.\d+\.block\.", k) for k in keys):
        raise TsmDeployError("MMAction2 checkpoint not supported: non-local blocks (NL3DWrapper)")
    is_mobilenet = any(k.startswith(("backbone.layer1.0.conv.", "backbone.conv2.")) for k in keys)
    is_resnet = any(re.match(r"backbone\.layer1\.(net\.)?0\.(net\.)?conv1\.", k) for k in keys)
    if not (is_mobilenet or is_resnet):
        first = next((k for k in keys if k.startswith("backbone.")), keys[0] if keys else None)
        raise TsmDeployError(
            f"MMAction2 checkpoint not supported: backbone is neither ResNetTSM nor MobileNetV2TSM (first key {first})"
        )
    rename = _mmaction2_mobilenet_key if is_mobilenet else _mmaction2_resnet_key
    out: dict[str, torch.Tensor] = {}
    dropped = []
    for key, value in state.items():
        if key.startswith("backbone."):
            out["base_model." + rename(key[len("backbone.") :])] = value
        elif key.startswith("cls_head.fc_cls."):
            out["new_fc." + key[len("cls_head.fc_cls.") :]] = value
        elif key.startswith("data_preprocessor."):
            dropped.append(key)
        else:
            out[key] = value  # left as is: reported as unexpected
    if dropped:
        notes.append(f"ignored {len(dropped)} data_preprocessor entries (normalisation is done by the runtime)")
    return out


# ------------------------------------------------------------------------- structure from our key names


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    value = state.get(key)
    return tuple(value.shape) if value is not None else None


def _check_known_variants(state: Mapping[str, torch.Tensor]) -> None:
    keys = list(state)
    if any(re.search(r"\.nl\.|\.block\.", k) for k in keys):
        raise TsmDeployError("offline TSN-wrapped checkpoint not supported: non-local blocks (nl)")
    if any(k.startswith("base_model.") and ("inception_" in k or "conv1_7x7" in k) for k in keys):
        raise TsmDeployError("offline TSN-wrapped checkpoint not supported: BNInception backbone")
    stem = _shape(state, "base_model.conv1.weight") or _shape(state, "base_model.features.0.0.weight")
    if stem is not None and len(stem) == 4 and stem[1] != 3:
        raise TsmDeployError(
            f"offline TSN-wrapped checkpoint not supported: Flow or RGBDiff modality (the first conv takes {stem[1]} channels, not 3)"
        )


def _without_pool(key: str) -> str:
    return key.replace("base_model.layer2.net.", "base_model.layer2.", 1)


def _resnet_arch(state: Mapping[str, torch.Tensor]) -> str:
    blocks: dict[int, set[int]] = {1: set(), 2: set(), 3: set(), 4: set()}
    for key in map(_without_pool, state):
        if m := re.match(r"base_model\.layer([1-4])\.(\d+)\.", key):
            blocks[int(m[1])].add(int(m[2]))
    counts = tuple(max(b) + 1 if b else 0 for b in blocks.values())
    bottleneck = any(re.search(r"\.conv3\.(net\.)?weight$", k) for k in state)
    kind = "bottleneck" if bottleneck else "basic"
    for depth, (known_kind, known_counts) in RESNET_STAGES.items():
        if known_kind == kind and known_counts == counts:
            break
    else:
        raise TsmDeployError(f"offline TSN-wrapped checkpoint not supported: ResNet with {kind} blocks {counts} per stage "
                             f"(known: ResNet-{', '.join(map(str, RESNET_STAGES))})")
    conv2 = next((v for k, v in state.items() if re.search(r"layer1\.0\.(net\.)?conv2\.weight$", _without_pool(k))), None)
    if bottleneck and conv2 is not None and conv2.ndim == 4 and conv2.shape[1] != conv2.shape[0]:
        raise TsmDeployError("offline TSN-wrapped checkpoint not supported: ResNeXt backbone (grouped convolutions)")
    conv1 = next((v for k, v in state.items() if re.search(r"layer1\.0\.(net\.)?conv1\.(net\.)?weight$", k)), None)
    if bottleneck and conv1 is not None and conv1.shape[0] != 64:
        raise TsmDeployError("offline TSN-wrapped checkpoint not supported: wide ResNet backbone")
    return _ARCH_BY_DEPTH[depth]


def _placement(state: Mapping[str, torch.Tensor]) -> tuple[bool, str | None]:
    """(shift present, placement): the position of the shift wrapper's ``.net`` says it."""
    keys = [_without_pool(k) for k in state]
    inplace = any(re.match(r"base_model\.layer\d\.\d+\.net\.", k) for k in keys)
    residual = any(re.search(r"\.conv1\.net\.|\.conv\.0\.net\.", k) for k in keys)
    if inplace and residual:
        raise TsmDeployError("offline checkpoint has shifts both around whole blocks and inside them: unknown variant")
    if not (inplace or residual):
        return False, None
    return True, "inplace" if inplace else "residual"


def _head(state: Mapping[str, torch.Tensor], arch: str) -> tuple[str, int]:
    own = "base_model.classifier.weight" if arch == MOBILENET_V2_ARCH else "base_model.fc.weight"
    for head, key in (("new_fc", "new_fc.weight"), ("fc", own)):
        shape = _shape(state, key)
        if shape is not None:
            if len(shape) != 2:
                raise TsmDeployError(f"the classifier {key} has shape {shape}, not (n_class, features)")
            return head, shape[0]
    raise TsmDeployError(f"offline checkpoint has no classifier (neither new_fc.weight nor {own})")


def expected_shapes(**options: Any) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the model ``build_offline(**options)`` would build (on the meta device: no memory)."""
    with torch.device("meta"):
        model = build_offline(**options)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def mismatch_lines(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], shown: int = MAX_SHOWN
) -> list[str]:
    """One line per missing key, unexpected key and shape mismatch (both shapes), the first ``shown``
    of them, then ``...and N more``; empty when the state dict fits."""
    found = mismatches(state, expected)
    lines = [f"missing key {k} (model expects {expected[k]})" for k in found.missing]
    lines += [f"unexpected key {k} (checkpoint has {tuple(state[k].shape)})" for k in state if k not in expected]
    lines += [f"shape mismatch {k}: checkpoint {got}, model {want}" for k, got, want in found.shapes]
    return lines[:shown] + ([f"...and {len(lines) - shown} more"] if len(lines) > shown else [])


def _match_names(
    state: dict[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], shift: bool, notes: list[str]
) -> dict[str, torch.Tensor]:
    """Fill what checkpoints of older PyTorch lack (BatchNorm's ``num_batches_tracked``, unused at
    inference) and give an unshifted (TSN) checkpoint the ``.net`` of this project's shift slots."""
    out = dict(state)
    if not shift:
        slots = {k.replace("conv1.net.", "conv1.").replace("conv.0.net.", "conv.0."): k for k in expected}
        out = {slots.get(k, k): v for k, v in out.items()}
    missing_counters = [k for k in expected if k.endswith("num_batches_tracked") and k not in out]
    if missing_counters and len(missing_counters) == sum(k.endswith("num_batches_tracked") for k in expected):
        out.update({k: torch.zeros((), dtype=torch.long) for k in missing_counters})
        notes.append("BatchNorm num_batches_tracked counters absent (older PyTorch): filled with zeros")
    return out


def _mobilenet_width(state: Mapping[str, torch.Tensor], options: dict[str, Any]) -> float:
    return closest_width(state, lambda w: expected_shapes(**{**options, "width_mult": w}))


# ---------------------------------------------------------------------------------------- the converter


def _merge(hints: list[_Hints]) -> _Hints:
    """First hint to say something wins (the config before the file name)."""
    merged = _Hints()
    for h in hints:
        for name in ("arch", "n_segment", "fold_div", "placement", "temporal_pool", "shift"):
            if getattr(merged, name) is None and getattr(h, name) is not None:
                setattr(merged, name, getattr(h, name))
        merged.unsupported += h.unsupported
        merged.notes += h.notes
    return merged


def convert_offline_checkpoint(obj: Any, filename: str | None = None, shown: int = MAX_SHOWN) -> ConvertedCheckpoint:
    """Recognise an offline TSM checkpoint (a loaded object) and convert it to this project's names.

    ``filename`` (a path) adds what only the name says (segments, fold, modality). Raises
    TsmDeployError for other layouts, unsupported variants and weights that do not fit.
    """
    layout = offline_layout(obj)
    if layout is None:
        raise TsmDeployError("not an offline TSM checkpoint (no base_model.*/new_fc.* or backbone.*/cls_head.* keys)")
    state = _tensors(_state_of(obj) or {})
    notes: list[str] = []
    sources: list[_Hints] = []
    labels = None
    if layout == MMACTION2:
        config_hints, labels = _meta_hints(obj)
        sources += [h for h in (config_hints, parse_mmaction2_name(filename) if filename else None) if h]
    else:
        sources += [h for h in (parse_original_name(filename) if filename else None,) if h]
        stored_arch = obj.get("arch") if isinstance(obj, Mapping) else None
        if isinstance(stored_arch, str) and stored_arch in _ORIGINAL_ARCHS:
            sources.append(_Hints(arch=_ORIGINAL_ARCHS[stored_arch]))
        elif isinstance(stored_arch, str):
            sources.append(_Hints(unsupported=[f"backbone {stored_arch} (the checkpoint's arch)"]))
    hints = _merge(sources)
    if hints.unsupported:
        raise TsmDeployError(f"offline TSN-wrapped checkpoint not supported: {hints.unsupported[0]}")
    if layout == MMACTION2:
        state = from_mmaction2(state, notes)
    _check_known_variants(state)

    if any(k.startswith("base_model.features.") for k in state):
        arch = MOBILENET_V2_ARCH
    elif any(k.startswith("base_model.layer1.") for k in state):
        arch = _resnet_arch(state)
    else:
        raise TsmDeployError(f"offline TSN-wrapped checkpoint not supported: unknown backbone (first key {next(iter(state))})")
    shift, placement = _placement(state)
    temporal_pool = any(k.startswith("base_model.layer2.net.") for k in state)
    head, n_class = _head(state, arch)
    n_segment = hints.n_segment
    if temporal_pool and n_segment is not None and n_segment % 2:
        notes.append(f"temporal pooling needs an even clip length: ignoring n_segment={n_segment} from the metadata")
        n_segment = None
    options: dict[str, Any] = {
        "arch": arch, "n_class": n_class, "n_segment": n_segment or 8, "input_size": 224,
        "fold_div": hints.fold_div or 8, "placement": placement or "residual",
        "temporal_pool": temporal_pool, "shift": shift, "head": head,
    }
    options["width_mult"] = _mobilenet_width(state, options) if arch == MOBILENET_V2_ARCH else 1.0
    expected = expected_shapes(**options)
    state = _match_names(state, expected, shift, notes)
    problems = mismatch_lines(state, expected, shown)
    if problems:
        raise TsmDeployError(
            f"{layout} checkpoint does not fit {arch} (n_class={n_class}, head {head}, "
            f"{'placement ' + placement if shift else 'no shift'}{', temporal pool' if temporal_pool else ''}):"
            + "".join(f"\n  {line}" for line in problems)
        )
    for name, found in (("arch", arch), ("placement", placement), ("temporal_pool", temporal_pool), ("shift", shift)):
        said = getattr(hints, name)
        if said is not None and said != found and not (name == "placement" and not shift):
            notes.append(f"the metadata says {name}={said} but the weights say {found}: using the weights")
    if labels is not None and len(labels) != n_class:
        notes.append(f"ignored {len(labels)} class names for {n_class} classes")
        labels = None
    return ConvertedCheckpoint(
        arch=arch, n_class=n_class, n_segment=n_segment, fold_div=hints.fold_div if shift else None,
        placement=placement, temporal_pool=temporal_pool, width_mult=options["width_mult"], head=head,
        shift=shift, state_dict=state, layout=layout, notes=tuple(notes), labels=labels,
    )
