"""Offline (bi-directional) TSM models as the original defines them, and the checkpoint layouts users hold.

References are written independently of the code under test: a plain loop of the original's shift
(``out[:, :-1, :fold] = x[:, 1:, :fold]; out[:, 1:, fold:2*fold] = x[:, :-1, fold:2*fold]``), a loop
of its temporal max pool, key names read in the original and MMAction2 sources, and torchvision's
published parameter counts.
"""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from tsm_deploy.checkpoint.offline import (
    MMACTION2,
    TSM_ORIGINAL,
    convert_offline_checkpoint,
    mismatch_lines,
    offline_layout,
    parse_mmaction2_config,
    parse_mmaction2_name,
    parse_original_name,
)
from tsm_deploy.errors import TsmDeployError
from tsm_deploy.models.resnet import TemporalPool, temporal_max_pool
from tsm_deploy.models.shift import TemporalShift
from tsm_deploy.models.tsn import TSN, build_offline

SIZE, T = 64, 4
# the ten shifted InvertedResiduals of the original MobileNetV2 (features index; see test_model.py)
MOBILENET_SHIFTED = [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small models on a shared 2-core machine: one intra-op thread is ~10x faster than two that spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------ references


def loop_shift(x: np.ndarray, n_segment: int, fold_div: int) -> np.ndarray:
    """The original bi-directional shift, frame by frame: channels [0, fold) from the next frame,
    [fold, 2*fold) from the previous one, zeros past the clip's ends, the rest in place."""
    nt, c = x.shape[:2]
    fold = c // fold_div
    out = np.zeros_like(x)
    for i in range(nt):
        t = i % n_segment
        if t + 1 < n_segment:
            out[i, :fold] = x[i + 1, :fold]
        if t > 0:
            out[i, fold : 2 * fold] = x[i - 1, fold : 2 * fold]
        out[i, 2 * fold :] = x[i, 2 * fold :]
    return out


def loop_temporal_pool(x: np.ndarray, n_segment: int) -> np.ndarray:
    """max over frames 2t-1, 2t, 2t+1 of each clip (padding never wins a max)."""
    nt = x.shape[0]
    out = []
    for clip in range(nt // n_segment):
        frames = x[clip * n_segment : (clip + 1) * n_segment]
        for t in range(n_segment // 2):
            window = [frames[s] for s in (2 * t - 1, 2 * t, 2 * t + 1) if 0 <= s < n_segment]
            out.append(np.max(np.stack(window), axis=0))
    return np.stack(out)


def seeded_model(seed: int = 0, **options) -> TSN:
    """A random model whose activations and logits are O(1) like a trained one's (BatchNorm calibrated
    on noise, variance floored, Xavier head), so that parity tolerances mean something."""
    torch.manual_seed(seed)
    options = {"n_class": 10, "n_segment": T, "input_size": SIZE, **options}
    model = build_offline(**options)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0.0, 0.1)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, *model.input_shape[1:]))
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.clamp_(min=1e-2)
    head = model.new_fc if model.new_fc is not None else [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    nn.init.xavier_uniform_(head.weight)
    return model


def clip_of(model: TSN, seed: int, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, *model.input_shape[1:], generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------- the networks

SMALL_VARIANTS = {
    "r18-blockres": dict(arch="tsm_resnet18"),
    "r18-block-div4": dict(arch="tsm_resnet18", placement="block", fold_div=4),
    "r18-blockres-tpool": dict(arch="tsm_resnet18", temporal_pool=True, n_segment=8),
    "mbv2-w0.5": dict(arch="tsm_mobilenet_v2", width_mult=0.5),
}


@pytest.mark.parametrize("variant", SMALL_VARIANTS)
def test_every_shift_is_the_originals(variant):
    """Each shift moves exactly what the original moves, over the clip length its stage sees, and the
    network with every shift replaced by the loop reference gives the same logits."""
    options = SMALL_VARIANTS[variant]
    model = seeded_model(**options)
    n_segment, fold_div = model.n_segment, options.get("fold_div", 8)
    seen: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, TemporalShift):
            def grab(store_key, slot):
                return lambda mod, args: seen.setdefault(store_key, [None, None]).__setitem__(slot, args[0].numpy().copy())
            hooks += [module.register_forward_pre_hook(grab(name, 0)), module.net.register_forward_pre_hook(grab(name, 1))]
    clip = clip_of(model, 1, batch=2)
    with torch.no_grad():
        logits = model(clip)
    for h in hooks:
        h.remove()
    assert len(seen) == model.n_shifts > 0
    pooled_stages = ("layer2", "layer3", "layer4") if model.temporal_pool else ()
    for name, (before, after) in seen.items():
        stage_segments = n_segment // 2 if name.split(".")[1] in pooled_stages else n_segment
        module = model.get_submodule(name)
        assert (module.n_segment, module.fold_div) == (stage_segments, fold_div), name
        np.testing.assert_array_equal(after, loop_shift(before, stage_segments, fold_div), err_msg=name)

    for module in model.modules():  # now the whole network with the reference shift
        if isinstance(module, TemporalShift):
            module.forward = lambda x, m=module: m.net(torch.from_numpy(loop_shift(x.numpy(), m.n_segment, m.fold_div)))
    with torch.no_grad():
        torch.testing.assert_close(model(clip), logits, rtol=0, atol=1e-6)


def _shifted_keys(model: nn.Module) -> list[str]:
    return sorted(k for k in model.state_dict() if ".net." in k.replace("layer2.net.", "layer2.") and k.endswith("weight"))


def test_shift_positions_and_key_names_are_the_originals():
    with torch.device("meta"):
        r50 = build_offline("tsm_resnet50", 400)
        r50_block = build_offline("tsm_resnet50", 400, placement="block")
        r101 = build_offline("tsm_resnet101", 174)
        r50_tpool = build_offline("tsm_resnet50", 400, temporal_pool=True)
        mbv2 = build_offline("tsm_mobilenet_v2", 174)
    assert r50.n_shifts == 16 and r50_block.n_shifts == 16 and r50_tpool.n_shifts == 16
    assert "base_model.layer1.0.conv1.net.weight" in r50.state_dict()
    assert "base_model.layer1.0.net.conv1.weight" in r50_block.state_dict()
    assert "base_model.layer2.net.0.conv1.net.weight" in r50_tpool.state_dict()
    assert "base_model.layer4.2.downsample.0.weight" not in r50.state_dict()
    assert "base_model.layer4.0.downsample.1.running_var" in r50.state_dict()
    # ResNet-101: layer3 has 23 blocks, so the original shifts every other block (n_round = 2)
    shifted = [k for k in _shifted_keys(r101) if ".conv1.net." in k]
    assert [k for k in shifted if ".layer3." in k] == sorted(f"base_model.layer3.{i}.conv1.net.weight" for i in range(0, 23, 2))
    assert r101.n_shifts == 2 + 2 + 12 + 2
    assert _shifted_keys(mbv2) == sorted(f"base_model.features.{i}.conv.0.net.weight" for i in MOBILENET_SHIFTED)
    assert mbv2.n_shifts == 10
    assert r50.input_shape == (1, 8, 3, 224, 224) and r50.state_dict()["new_fc.weight"].shape == (400, 2048)


@pytest.mark.parametrize(
    "arch,params",  # torchvision's published parameter counts (1000 classes)
    [("tsm_resnet18", 11_689_512), ("tsm_resnet34", 21_797_672), ("tsm_resnet50", 25_557_032),
     ("tsm_resnet101", 44_549_160), ("tsm_mobilenet_v2", 3_504_872)],
)
def test_parameter_counts_match_torchvision(arch, params):
    with torch.device("meta"):
        model = build_offline(arch, 1000, head="fc")
    assert sum(p.numel() for p in model.parameters()) == params


def test_temporal_pool_halves_time():
    x = torch.randn(2 * 8, 5, 3, 3)
    pooled = temporal_max_pool(x, 8)
    assert pooled.shape == (8, 5, 3, 3)
    np.testing.assert_array_equal(pooled.numpy(), loop_temporal_pool(x.numpy(), 8))
    model = seeded_model(arch="tsm_resnet18", temporal_pool=True, n_segment=8)
    assert isinstance(model.base_model.layer2, TemporalPool) and model.output_segments == 4
    frames_in = {}

    def count_frames(module, args):
        frames_in["n"] = args[0].shape[0]

    model.base_model.layer2.net.register_forward_pre_hook(count_frames)
    with torch.no_grad():
        assert model(clip_of(model, 0, batch=3)).shape == (3, 10)
    assert frames_in["n"] == 3 * 4


def test_consensus_averages_and_clips_stay_apart():
    """NTCHW: the logits of a clip are the mean of its frames' logits, and clip 1 never leaks into clip 0."""
    model = seeded_model(arch="tsm_mobilenet_v2", width_mult=0.5)
    per_frame = {}

    def keep_first(module, args, out):
        per_frame.setdefault("logits", out)  # returns None: the output stays as it is

    model.new_fc.register_forward_hook(keep_first)
    clip = clip_of(model, 2, batch=2)
    with torch.no_grad():
        logits = model(clip)
        torch.testing.assert_close(logits, per_frame["logits"].reshape(2, T, 10).mean(1), rtol=0, atol=0)
        other = clip.clone()
        other[1] = torch.randn(other[1].shape)
        changed = model(other)
    torch.testing.assert_close(changed[0], logits[0], rtol=0, atol=1e-6)
    assert not torch.allclose(changed[1], logits[1])


def test_unshifted_baseline_shares_weights_and_differs():
    shifted = seeded_model(arch="tsm_resnet18")
    baseline = build_offline("tsm_resnet18", 10, T, SIZE, shift=False)
    assert baseline.n_shifts == 0 and set(baseline.state_dict()) == set(shifted.state_dict())
    baseline.load_state_dict(shifted.state_dict(), strict=True)
    clip = clip_of(shifted, 3)
    with torch.no_grad():
        # without shift, frames are independent: the clip's logits are the mean of single-frame passes
        frame_means = torch.stack([baseline.new_fc(baseline.base_model(clip[0, t : t + 1])) for t in range(T)]).mean(0)
        torch.testing.assert_close(baseline(clip), frame_means, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(shifted(clip), baseline(clip), atol=1e-3)  # the shift matters


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(arch="tsm_resnet152"), "unknown offline architecture"),
        (dict(arch="tsm_mobilenet_v2", placement="block"), "only the residual"),
        (dict(arch="tsm_mobilenet_v2", temporal_pool=True), "temporal pooling exists only"),
        (dict(arch="tsm_resnet18", temporal_pool=True, n_segment=5), "must be even"),
        (dict(arch="tsm_resnet50", width_mult=0.5), "no width multiplier"),
        (dict(arch="tsm_resnet18", input_size=100), "multiple of 32"),
        (dict(arch="tsm_resnet18", placement="sideways"), "unknown shift placement"),
        (dict(arch="tsm_resnet18", head="softmax"), "unknown head"),
    ],
)
def test_bad_build_options_raise_one_line(options, message):
    with pytest.raises(TsmDeployError, match=message) as err:
        build_offline(**{"n_class": 5, **options})
    assert "\n" not in str(err.value)


def test_wrong_clip_shape_is_refused():
    model = build_offline("tsm_resnet18", 5, T, SIZE)
    with pytest.raises(ValueError, match=r"expected a clip \(N, 4, 3, 64, 64\)"):
        model(torch.zeros(1, 8, 3, SIZE, SIZE))


# ------------------------------------------------------------------------------- checkpoint layouts


def to_mmaction2(state: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """Our names -> MMAction2's (ResNetTSM / MobileNetV2TSM + TSMHead), written from their sources."""
    out = {}
    offsets = [1, 2, 4, 7, 11, 14, 17, 18]  # features index of layer1..7's first block, then conv2
    for key, value in state.items():
        if key.startswith("new_fc."):
            out["cls_head.fc_cls." + key[len("new_fc.") :]] = value
            continue
        key = key[len("base_model.") :]
        if arch == "tsm_mobilenet_v2":
            parts = key.split(".")
            index = int(parts[1])
            if index == 0 or index == 18:
                name = f"{'conv1' if index == 0 else 'conv2'}.{'conv' if parts[2] == '0' else 'bn'}.{parts[3]}"
            else:
                layer = max(i for i, o in enumerate(offsets) if o <= index)
                unit, is_bn = divmod(int(parts[3]), 3)
                # a shifted ConvModule is wrapped whole: its bn sits under .net too
                net = "net." if f"base_model.features.{index}.conv.{3 * unit}.net.weight" in state else ""
                name = f"layer{layer + 1}.{index - offsets[layer]}.conv.{unit}.{net}{'bn' if is_bn else 'conv'}.{parts[-1]}"
        else:
            name = re.sub(r"(^|\.)conv(\d)\.", r"\1conv\2.conv.", key)
            name = re.sub(r"(^|\.)bn(\d)\.", r"\1conv\2.bn.", name)
            name = name.replace("downsample.0.", "downsample.conv.").replace("downsample.1.", "downsample.bn.")
        out["backbone." + name] = value
    return out


def saved(obj) -> object:
    """Through torch.save and torch.load(weights_only=True), as a user's file would come."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)


def assert_round_trip(model: TSN, obj, filename=None, **expect):
    converted = convert_offline_checkpoint(saved(obj), filename)
    for name, value in expect.items():
        assert getattr(converted, name) == value, name
    reference = model.state_dict()
    assert set(converted.state_dict) == set(reference)
    for key, value in reference.items():
        assert torch.equal(converted.state_dict[key], value), key
    # the fold is not in the weights (the shift has none): the caller supplies it, as a user would
    rebuilt = build_offline(**converted.build_options(input_size=SIZE, n_segment=model.n_segment, fold_div=model.fold_div))
    rebuilt.load_state_dict(converted.state_dict, strict=True)
    clip = clip_of(model, 5)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(clip), model(clip))
    return converted


@pytest.mark.parametrize("prefix", ["module.", ""])
@pytest.mark.parametrize(
    "variant,head",
    [("r18-blockres", "new_fc"), ("r18-blockres", "fc"), ("r18-block-div4", "new_fc"),
     ("r18-blockres-tpool", "new_fc"), ("mbv2-w0.5", "new_fc"), ("mbv2-w0.5", "fc")],
)
def test_original_layout_round_trips(variant, head, prefix):
    options = {**SMALL_VARIANTS[variant], "head": head}
    model = seeded_model(**options)
    obj = {"state_dict": {prefix + k: v for k, v in model.state_dict().items()}, "epoch": 50, "arch": "x", "best_prec1": 71.2}
    obj["arch"] = "mobilenetv2" if "mobilenet" in options["arch"] else "resnet18"
    assert offline_layout(obj) == TSM_ORIGINAL
    converted = assert_round_trip(
        model, obj, arch=options["arch"], head=head, temporal_pool=options.get("temporal_pool", False),
        placement="inplace" if options.get("placement") == "block" else "residual", shift=True,
        width_mult=options.get("width_mult", 1.0), n_class=10, n_segment=None, fold_div=None,
    )
    assert converted.notes == ()


def test_original_file_name_fills_segments_and_fold():
    model = seeded_model(arch="tsm_resnet18", temporal_pool=True, n_segment=8)
    obj = {"state_dict": {"module." + k: v for k, v in model.state_dict().items()}, "arch": "resnet18"}
    name = "checkpoint/TSM_something_RGB_resnet18_shift8_blockres_tpool_avg_segment8_e45/ckpt.best.pth.tar"
    assert_round_trip(model, obj, name, n_segment=8, fold_div=8, temporal_pool=True, placement="residual")


def test_original_tsn_baseline_gets_the_shift_slots():
    """A TSN checkpoint (no shift, so no ``.net``) loads into the shift=False model under our names."""
    model = seeded_model(arch="tsm_resnet18", shift=False)
    plain = {k.replace(".net.", "."): v for k, v in model.state_dict().items()}
    converted = assert_round_trip(
        model, {"state_dict": plain}, "TSM_kinetics_RGB_resnet18_avg_segment4_e50.pth", shift=False, placement=None, n_segment=4
    )
    assert converted.fold_div is None


@pytest.mark.parametrize("variant", ["r18-blockres", "r18-block-div4", "r18-blockres-tpool", "mbv2-w1"])
def test_mmaction2_layout_round_trips(variant):
    options = SMALL_VARIANTS.get(variant, dict(arch="tsm_mobilenet_v2"))
    model = seeded_model(**options)
    placement = {"block": "block"}.get(options.get("placement"), "blockres")
    cfg = (
        "model = dict(\n    backbone=dict(\n        depth=18,\n        is_shift=True,\n"
        f"        num_segments={model.n_segment},\n        shift_div={options.get('fold_div', 8)},\n"
        f"        shift_place='{placement}',\n        temporal_pool={options.get('temporal_pool', False)},\n"
        f"        type='{'MobileNetV2TSM' if 'mobilenet' in options['arch'] else 'ResNetTSM'}'),\n"
        f"    cls_head=dict(\n        num_classes=10,\n        num_segments={model.n_segment},\n        type='TSMHead'),\n"
        "    type='Recognizer2D')\n"
    )
    labels = [f"class {i}" for i in range(10)]
    obj = {"meta": {"cfg": cfg, "epoch": 50, "dataset_meta": {"classes": labels}},
           "state_dict": to_mmaction2(model.state_dict(), options["arch"])}
    assert offline_layout(obj) == MMACTION2
    converted = assert_round_trip(
        model, obj, "tsm_imagenet-pretrained-r18_8xb16-1x1x8-50e_kinetics400-rgb_20220831-64d69186.pth",
        n_segment=model.n_segment, fold_div=options.get("fold_div", 8), temporal_pool=options.get("temporal_pool", False),
        head="new_fc", labels=tuple(labels),
    )
    assert converted.layout == MMACTION2


def test_mmaction2_key_names_from_its_sources():
    """Keys as MMAction2's ConvModule-based ResNetTSM / MobileNetV2TSM name them, converted one by one."""
    with torch.device("meta"):
        r50 = build_offline("tsm_resnet50", 400, temporal_pool=True).state_dict()
        mbv2 = build_offline("tsm_mobilenet_v2", 400).state_dict()
    cases = {
        "backbone.conv1.conv.weight": "base_model.conv1.weight",
        "backbone.conv1.bn.running_mean": "base_model.bn1.running_mean",
        "backbone.layer1.0.conv1.conv.net.weight": "base_model.layer1.0.conv1.net.weight",
        "backbone.layer1.0.conv3.bn.bias": "base_model.layer1.0.bn3.bias",
        "backbone.layer1.0.downsample.conv.weight": "base_model.layer1.0.downsample.0.weight",
        "backbone.layer2.net.0.downsample.bn.running_var": "base_model.layer2.net.0.downsample.1.running_var",
        "backbone.layer2.net.3.conv1.conv.net.weight": "base_model.layer2.net.3.conv1.net.weight",
        "cls_head.fc_cls.weight": "new_fc.weight",
    }
    mb_cases = {
        "backbone.conv1.conv.weight": "base_model.features.0.0.weight",
        "backbone.layer1.0.conv.0.conv.weight": "base_model.features.1.conv.0.weight",  # depthwise first (t=1)
        "backbone.layer1.0.conv.1.bn.weight": "base_model.features.1.conv.4.weight",
        "backbone.layer2.1.conv.0.net.conv.weight": "base_model.features.3.conv.0.net.weight",
        "backbone.layer2.1.conv.0.net.bn.running_mean": "base_model.features.3.conv.1.running_mean",
        "backbone.layer7.0.conv.2.conv.weight": "base_model.features.17.conv.6.weight",
        "backbone.conv2.bn.bias": "base_model.features.18.1.bias",
    }
    for ours, table in ((r50, cases), (mbv2, mb_cases)):
        theirs = to_mmaction2(ours, "tsm_mobilenet_v2" if table is mb_cases else "tsm_resnet50")
        for their_key, our_key in table.items():
            assert their_key in theirs and our_key in ours, their_key
    # and the converter maps them back (meta tensors: structure only)
    converted = convert_offline_checkpoint({"state_dict": to_mmaction2(r50, "tsm_resnet50"), "meta": {}})
    assert (converted.arch, converted.temporal_pool, converted.n_class) == ("tsm_resnet50", True, 400)
    assert set(converted.state_dict) == set(r50)


@pytest.mark.parametrize(
    "options,arch",
    [(dict(arch="tsm_resnet34"), "tsm_resnet34"), (dict(arch="tsm_resnet50", head="fc"), "tsm_resnet50"),
     (dict(arch="tsm_resnet101", placement="block"), "tsm_resnet101"), (dict(arch="tsm_resnet101"), "tsm_resnet101"),
     (dict(arch="tsm_mobilenet_v2", width_mult=1.4), "tsm_mobilenet_v2")],
)
def test_architecture_is_read_off_the_keys(options, arch):
    with torch.device("meta"):
        state = build_offline(n_class=174, **options).state_dict()
    converted = convert_offline_checkpoint({"state_dict": {"module." + k: v for k, v in state.items()}})
    assert (converted.arch, converted.n_class, converted.head) == (arch, 174, options.get("head", "new_fc"))
    assert converted.placement == {"block": "inplace"}.get(options.get("placement"), "residual")
    assert converted.width_mult == options.get("width_mult", 1.0)


@pytest.mark.parametrize(
    "name,expect",
    [
        ("TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth",
         dict(arch="tsm_resnet50", n_segment=8, fold_div=8, placement="residual", temporal_pool=False, shift=True)),
        ("pretrained/TSM_something_RGB_resnet50_shift8_blockres_tpool_avg_segment8_e45.pth",
         dict(n_segment=8, temporal_pool=True)),
        ("TSM_kinetics_RGB_mobilenetv2_shift8_blockres_avg_segment8_e100_dense.pth",
         dict(arch="tsm_mobilenet_v2", n_segment=8, shift=True)),
        ("TSM_somethingv2_RGB_resnet101_shift4_block_avg_segment16_e45.pth",
         dict(arch="tsm_resnet101", n_segment=16, fold_div=4, placement="inplace")),
        ("TSM_kinetics_RGB_resnet50_avg_segment5_e50.pth", dict(shift=False, n_segment=5, fold_div=None, placement=None)),
        ("runs/TSM_jester_RGB_resnet18_shift8_blockres_avg_segment8_e25/ckpt.best.pth.tar",
         dict(arch="tsm_resnet18", n_segment=8)),
    ],
)
def test_original_file_names(name, expect):
    hints = parse_original_name(name)
    assert hints is not None and not hints.unsupported
    for key, value in expect.items():
        assert getattr(hints, key) == value, key
    if "_dense" in name:
        assert any("dense" in n for n in hints.notes)


def test_mmaction2_names_and_config():
    new = parse_mmaction2_name("tsm_imagenet-pretrained-r101_8xb16-1x1x16-50e_sthv2-rgb_20230317-ec6696ad.pth")
    assert (new.arch, new.n_segment) == ("tsm_resnet101", 16)
    old = parse_mmaction2_name("tsm_mobilenetv2_dense_1x1x8_100e_kinetics400_rgb_20210202-aa5d9b7a.pth")
    assert (old.arch, old.n_segment) == ("tsm_mobilenet_v2", 8)
    assert parse_mmaction2_name("tsm_imagenet-pretrained-r50-nl-embedded-gaussian_8xb16-1x1x8-50e_kinetics400-rgb.pth").unsupported
    assert parse_mmaction2_name("i3d_r50_32x2x1_100e_kinetics400_rgb.pth") is None
    # a config as mmengine dumps it (pretty_text): unset options keep ResNetTSM's defaults
    cfg = parse_mmaction2_config(
        "model = dict(\n    backbone=dict(\n        depth=50,\n        norm_eval=False,\n"
        "        pretrained='https://download.pytorch.org/models/resnet50-11ad3fa6.pth',\n        shift_div=8,\n"
        "        type='ResNetTSM'),\n    cls_head=dict(\n        average_clips='prob',\n        dropout_ratio=0.5,\n"
        "        in_channels=2048,\n        num_classes=400,\n        type='TSMHead'),\n    type='Recognizer2D')\n"
        "test_pipeline = [\n    dict(clip_len=1, frame_interval=1, num_clips=8, test_mode=True, type='SampleFrames'),\n]\n"
    )
    assert (cfg.arch, cfg.n_segment, cfg.fold_div, cfg.placement, cfg.temporal_pool, cfg.shift) == (
        "tsm_resnet50", 8, 8, "residual", False, True)
    assert parse_mmaction2_config("backbone=dict(type='MobileOneTSM', num_segments=16)").unsupported


def _one_line_error(obj, filename=None) -> str:
    with pytest.raises(TsmDeployError) as err:
        convert_offline_checkpoint(obj, filename)
    message = str(err.value)
    assert "\n" not in message and "not supported" in message, message
    return message


def test_unsupported_variants_raise_one_line():
    with torch.device("meta"):
        r50 = {k: v for k, v in build_offline("tsm_resnet50", 400).state_dict().items()}
        mbv2 = {k: v for k, v in build_offline("tsm_mobilenet_v2", 400).state_dict().items()}
    flow = dict(r50, **{"base_model.conv1.weight": torch.zeros(64, 10, 7, 7, device="meta")})
    assert "Flow" in _one_line_error({"state_dict": flow})
    flow_mb = dict(mbv2, **{"base_model.features.0.0.weight": torch.zeros(32, 15, 3, 3, device="meta")})
    assert "RGBDiff" in _one_line_error({"state_dict": flow_mb})
    assert "Flow" in _one_line_error({"state_dict": r50}, "TSM_kinetics_Flow_resnet50_shift8_blockres_avg_segment8_e50.pth")
    assert "non-local" in _one_line_error(
        {"state_dict": r50}, "TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e100_dense_nl.pth")
    nl = {("base_model.layer2.0.block." + k[len("base_model.layer2.0."):] if k.startswith("base_model.layer2.0.") else k): v
          for k, v in r50.items()}
    nl["base_model.layer2.0.nl.g.weight"] = torch.zeros(256, 512, 1, 1, 1, device="meta")
    assert "non-local" in _one_line_error({"state_dict": nl})
    mm_nl = to_mmaction2(r50, "tsm_resnet50")
    mm_nl["backbone.layer2.0.non_local_block.g.conv.weight"] = torch.zeros(256, 512, 1, 1, 1, device="meta")
    assert "non-local" in _one_line_error({"state_dict": mm_nl, "meta": {}})
    bninception = {"base_model.conv1_7x7_s2.weight": torch.zeros(64, 3, 7, 7), "new_fc.weight": torch.zeros(400, 1024)}
    assert "BNInception" in _one_line_error({"state_dict": bninception, "arch": "BNInception"})
    assert "BNInception" in _one_line_error({"state_dict": bninception})
    resnext = {k: (torch.zeros(v.shape[0], v.shape[1] // 32, 3, 3, device="meta") if re.search(r"layer\d\.\d+\.conv2\.weight", k) else v)
               for k, v in r50.items()}
    assert "ResNeXt" in _one_line_error({"state_dict": resnext})
    mobileone = {"backbone.stage0.0.rbr_conv.0.conv.weight": torch.zeros(64, 3, 3, 3), "cls_head.fc_cls.weight": torch.zeros(400, 2048)}
    assert "neither ResNetTSM nor MobileNetV2TSM" in _one_line_error({"state_dict": mobileone, "meta": {}})
    assert "MobileOneTSM" in _one_line_error(
        {"state_dict": mobileone, "meta": {"cfg": "backbone=dict(type='MobileOneTSM', arch='s4')"}})


def test_mismatches_are_reported_one_per_line():
    model = build_offline("tsm_resnet18", 10, T, SIZE)
    state = {"module." + k: v for k, v in model.state_dict().items()}
    state["module.new_fc.bias"] = torch.zeros(11)  # n_class comes from new_fc.weight: the bias disagrees
    del state["module.base_model.layer1.0.bn1.weight"]
    for i in range(45):
        state[f"module.base_model.extra{i}.weight"] = torch.zeros(1)
    with pytest.raises(TsmDeployError) as err:
        convert_offline_checkpoint({"state_dict": state})
    lines = str(err.value).splitlines()
    assert lines[0].startswith("tsm-original checkpoint does not fit tsm_resnet18 (n_class=10")
    assert "  missing key base_model.layer1.0.bn1.weight (model expects (64,))" in lines
    assert "  ...and 37 more" == lines[-1] and len(lines) == 1 + 10 + 1
    detail = mismatch_lines({"w": torch.zeros(3, 4)}, {"w": (3, 5)})
    assert detail == ["shape mismatch w: checkpoint (3, 4), model (3, 5)"]


def test_not_an_offline_checkpoint():
    assert offline_layout({"features.0.0.weight": torch.zeros(1), "classifier.weight": torch.zeros(1)}) is None
    with pytest.raises(TsmDeployError, match="not an offline TSM checkpoint"):
        convert_offline_checkpoint({"state_dict": {"features.0.0.weight": torch.zeros(1)}})


# --------------------------------------------------------------------------------- export and compile


def export(model: TSN, clip: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (clip,), buffer, input_names=["clip"], output_names=["logits"],
                          opset_version=17, do_constant_folding=True, dynamo=False)
    return buffer.getvalue()


# ops that would betray traced data or shapes: scatter (slice assignment), runtime shape arithmetic
DYNAMIC_OPS = {"ScatterND", "ScatterElements", "Shape", "ConstantOfShape", "Where", "Expand", "NonZero"}


def _dynamic_ops(proto: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in proto.graph.node} & DYNAMIC_OPS


class OriginalSliceAssignmentShift(nn.Module):
    """The original's ``TemporalShift.shift`` (slice assignment), only as a negative control."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nt, c, h, w = x.size()
        x = x.view(nt // T, T, c, h, w)
        fold = c // 8
        out = torch.zeros_like(x)
        out[:, :-1, :fold] = x[:, 1:, :fold]
        out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]
        out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
        return out.view(nt, c, h, w)


@pytest.mark.parametrize("variant", ["r18-blockres-tpool", "mbv2-w0.5", "r18-block-div4"])
def test_onnx_export_computes_on_any_clip(variant):
    """Traced on one clip, the exported model answers correctly for another: nothing of the tracing
    clip became a constant, and the graph holds no scatter or runtime shape arithmetic."""
    import onnxruntime as ort

    model = seeded_model(**SMALL_VARIANTS[variant])
    traced_on, other = clip_of(model, 10), clip_of(model, 11)
    assert not any(torch.allclose(other[0, t], other[0, s]) for t in range(T) for s in range(t))  # all frames differ
    data = export(model, traced_on)
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto, full_check=True)
    assert _dynamic_ops(proto) == set()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(None, {"clip": other.numpy()})[0]
    with torch.no_grad():
        want, traced_logits = model(other).numpy(), model(traced_on).numpy()
    assert np.abs(want).max() > 0.1  # O(1) logits: the tolerance below means something
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert np.abs(want - traced_logits).max() > 2e-3  # a traced-constant export would be caught


def test_the_graph_check_catches_the_originals_slice_assignment():
    proto = onnx.load_from_string(export(OriginalSliceAssignmentShift(), torch.randn(T, 16, 2, 2)))
    assert "ScatterND" in _dynamic_ops(proto)


def _tvm_logits(model: TSN, clip: torch.Tensor) -> np.ndarray:
    import tvm
    from tvm import relax

    from tsm_deploy.frontend.relax import check_static_shift, import_onnx

    mod = import_onnx(onnx.load_from_string(export(model, clip_of(model, 20))))
    check_static_shift(mod, model.n_shifts, "bidirectional")
    executable = tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(clip.numpy()))
    return (out if hasattr(out, "numpy") else out[0]).numpy()


def test_tvm_runs_temporal_pool_and_shift():
    model = seeded_model(arch="tsm_resnet18", temporal_pool=True, n_segment=8)
    clip = clip_of(model, 21)
    with torch.no_grad():
        want = model(clip).numpy()
    np.testing.assert_allclose(_tvm_logits(model, clip), want, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_tvm_matches_pytorch_mobilenet_v2():
    model = seeded_model(arch="tsm_mobilenet_v2", n_segment=8, input_size=96)
    clip = clip_of(model, 22)
    with torch.no_grad():
        want = model(clip).numpy()
    np.testing.assert_allclose(_tvm_logits(model, clip), want, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_resnet50_onnx_and_tvm_match_pytorch():
    """ResNet-50 TSM (blockres, 8 segments) through ONNX Runtime and TVM on a clip it was not traced with."""
    import onnxruntime as ort

    model = seeded_model(arch="tsm_resnet50", n_segment=8)
    assert model.n_shifts == 16
    clip = clip_of(model, 23)
    with torch.no_grad():
        want = model(clip).numpy()
    session = ort.InferenceSession(export(model, clip_of(model, 24)), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"clip": clip.numpy()})[0], want, rtol=0, atol=1e-3)
    np.testing.assert_allclose(_tvm_logits(model, clip), want, rtol=0, atol=1e-3)


@pytest.mark.slow
@pytest.mark.heavy  # 66 s in CI; make test-all runs it
def test_resnet50_224_8_segments_original_checkpoint_compiles_and_matches(tmp_path):
    """The paper's model at full size through the product path: an original training checkpoint
    (DataParallel prefix, original file name) -> load -> compile for x86 -> verify one clip."""
    from tsm_deploy.checkpoint import default_checkpoint, load_checkpoint
    from tsm_deploy.compiler.artifact import compile_artifact
    from tsm_deploy.evaluate.verify import verify_artifact
    from tsm_deploy.models import ModelConfig
    from tsm_deploy.target.targets import load_target

    seeded = default_checkpoint(ModelConfig(arch="tsm_resnet50", n_class=400, input_size=224, n_segment=8), seed=5)
    path = tmp_path / "TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in seeded.state_dict.items()}, "epoch": 50,
                "arch": "resnet50"}, path)
    loaded = load_checkpoint(path)
    assert loaded.layout == "tsm-original" and loaded.config.n_segment == 8 and loaded.config.n_class == 400
    out = tmp_path / "r50"
    compile_artifact(loaded, load_target("x86"), out, database=None)
    report = verify_artifact(out, loaded, frames=1, tolerance=1e-3)
    assert report.kind == "clip" and report.passed, report.table()
