"""Property-based fuzzing of every input reader: checkpoints, artifact manifests, target files.

The property, for generated and mutated inputs alike: a reader either accepts the input (and what it
returns is usable) or raises ``TsmDeployError`` with a one-line message; never another exception
type, never a warning. Through the CLI a rejected input is exit code 2, one ``error: ...`` line on
stderr, nothing written to the output path. Inputs start from real files (a saved small checkpoint,
a compiled artifact's manifest, the committed target files) and are truncated, bit-flipped or
structurally mutated; others are random bytes, text and pickles.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import os
import pickle
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tsm_deploy.checkpoint import load_checkpoint
from tsm_deploy.cli import main
from tsm_deploy.errors import TsmDeployError
from tsm_deploy.runtime.manifest import MANIFEST_NAME, Manifest, read_manifest
from tsm_deploy.target.targets import TARGETS_DIR, available_targets, load_target

# No example database (hypothesis still caches constants in .hypothesis/, which it gitignores itself).
# Fixtures are module-scoped folders reused across examples: what the function-scoped-fixture health
# check warns about.
# Derandomized: the quick suite sees the same inputs every run (a red CI is a real finding, not
# luck). TSM_FUZZ_RANDOM=1 draws new inputs each run; TSM_FUZZ_SCALE=N runs N times as many.
_SCALE = max(1, int(os.environ.get("TSM_FUZZ_SCALE", "1")))
_BASE = settings(
    deadline=None,
    database=None,
    derandomize=not os.environ.get("TSM_FUZZ_RANDOM"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz(examples: int, shrink: bool = True) -> settings:
    """``examples`` inputs; ``shrink=False`` where each input is a whole state dict: shrinking one
    takes minutes, and the failure report already lists every mutation drawn."""
    phases = list(Phase) if shrink else [Phase.explicit, Phase.generate]
    return settings(_BASE, max_examples=examples * _SCALE, phases=phases)


_counter = itertools.count()  # unique file names across examples


class Seed:
    """A real input the mutations start from; its short repr keeps hypothesis' failure reports (which
    print every argument, fixtures included) readable instead of megabytes of bytes and tensors."""

    def __init__(self, value: Any, label: str) -> None:
        self.value, self.label = value, label

    def __repr__(self) -> str:
        return f"<{self.label}>"


# ---------------------------------------------------------------------------------------------
# The property


def read_or_reject(call: Callable[[], Any]) -> Any:
    """Run one reader: its result if it accepts, the ``TsmDeployError`` if it rejects (one line, no
    warning). Any other exception propagates and fails the example with its own traceback."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = call()
        except TsmDeployError as exc:
            result = exc
    leaked = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught]
    assert not leaked, f"warning leaked: {leaked[0]}"
    if isinstance(result, TsmDeployError):
        message = str(result)
        assert message.strip(), "empty error message"
        assert len(message.splitlines()) == 1, f"multi-line error message: {message!r}"
    return result


def cli_rejects(args: list[Any], out_dir: Path) -> str:
    """The CLI on a bad input: exit 2, stderr exactly one 'error: ...' line, ``out_dir`` left empty."""
    before = sorted(os.listdir(out_dir))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, [str(a) for a in args])
    trace = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info and result.exc_info[0] is not SystemExit else ""
    assert result.exit_code == 2, f"exit code {result.exit_code}; stderr {result.stderr!r}\n{trace}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr is not one error line: {result.stderr!r}"
    assert not caught, f"warning leaked through the CLI: {caught[0].category.__name__}: {caught[0].message}"
    assert sorted(os.listdir(out_dir)) == before, f"the CLI wrote {sorted(set(os.listdir(out_dir)) - set(before))}"
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Mutating JSON documents


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(min_value=-3, max_value=3), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a JSON tree (the root excluded)."""
    out = []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in children:
        out.append(prefix + (key,))
        out.extend(_paths(value, prefix + (key,)))
    return out


def _at(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _swap_type(value: Any) -> Any:
    """The same content as another JSON type: what a hand-edited file gets wrong."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else 0
        except ValueError:
            return [value]
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    if isinstance(value, dict):
        return list(value.values())
    return "null"


@st.composite
def mutated_json(draw: st.DrawFn, base: Any) -> Any:
    """``base`` with one to three mutations: a field removed, a value replaced by junk, its type
    swapped, it wrapped in a list/object, or a junk field added."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _at(doc, path[:-1]), path[-1]
        op = draw(st.sampled_from(["remove", "junk", "swap", "wrap", "add"]))
        if op == "remove":
            del parent[key]
        elif op == "junk":
            parent[key] = draw(JUNK)
        elif op == "swap":
            parent[key] = _swap_type(parent[key])
        elif op == "wrap":
            parent[key] = draw(st.sampled_from([[parent[key]], {"value": parent[key]}]))
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(JUNK)
        else:
            parent.insert(key, draw(JUNK))
    return doc


@st.composite
def text_mutation(draw: st.DrawFn, text: str) -> bytes:
    """The file's bytes truncated, bit-flipped, or with junk spliced in (invalid UTF-8 included)."""
    data = text.encode()
    op = draw(st.sampled_from(["truncate", "flip", "splice"]))
    if op == "truncate":
        return data[: draw(st.integers(min_value=0, max_value=len(data) - 1))]
    if op == "flip":
        out = bytearray(data)
        for _ in range(draw(st.integers(min_value=1, max_value=4))):
            i = draw(st.integers(min_value=0, max_value=len(out) - 1))
            out[i] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        return bytes(out)
    i = draw(st.integers(min_value=0, max_value=len(data)))
    return data[:i] + draw(st.binary(min_size=1, max_size=8)) + data[i:]


# ---------------------------------------------------------------------------------------------
# (a) checkpoints: tsm_deploy.checkpoint.load_checkpoint and `tsm-deploy export --checkpoint`


@pytest.fixture(scope="module")
def real_checkpoint(small_checkpoint_file: Path) -> Seed:
    read_or_reject(lambda: load_checkpoint(small_checkpoint_file))  # warm imports outside the property
    data = small_checkpoint_file.read_bytes()
    return Seed(data, f"the small checkpoint, {len(data)} bytes (conftest.SMALL_CONFIG saved with save_checkpoint)")


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-ckpt")


def check_checkpoint(data: bytes, folder: Path, cli: bool = True) -> None:
    """The checkpoint property for one file's bytes: library, then (for a rejected file) the CLI.
    ``cli=False`` where loading costs ~0.2-0.6 s (a whole state dict) and the CLI would load it again."""
    path = folder / f"c{next(_counter)}.pth"
    path.write_bytes(data)
    result = read_or_reject(lambda: load_checkpoint(path))
    if isinstance(result, TsmDeployError) and cli:
        out = folder / f"out{next(_counter)}"
        out.mkdir()
        cli_rejects(["export", "--checkpoint", path, "--output", out / "model.onnx"], out)
    elif not isinstance(result, TsmDeployError):
        # accepted: the weights must build the model it claims (what export/compile do next)
        read_or_reject(result.model)
    path.unlink()


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@fuzz(150)
@given(data=st.binary(max_size=2048))
@example(data=b"")
@example(data=b"hello")
@example(data=b"PK\x03\x04")
@example(data=b"\x80\x02")
def test_checkpoint_random_bytes(data: bytes, ckpt_dir: Path) -> None:
    check_checkpoint(data, ckpt_dir)


@fuzz(100)
@given(text=st.text(max_size=200))
@example(text="hello")
@example(text="hello\n")
@example(text='{"state_dict": {}}')
def test_checkpoint_text_files(text: str, ckpt_dir: Path) -> None:
    check_checkpoint(text.encode(), ckpt_dir)


@fuzz(150, shrink=False)
@given(data=st.data())
def test_checkpoint_truncated_or_flipped(data: st.DataObject, real_checkpoint: Seed, ckpt_dir: Path) -> None:
    real = real_checkpoint.value
    size = len(real)
    if data.draw(st.booleans(), label="truncate"):
        mutated = real[: data.draw(st.integers(min_value=0, max_value=size - 1), label="length")]
    else:
        out = bytearray(real)
        # flips near the start hit the zip headers and the pickle; elsewhere, tensor bytes
        for _ in range(data.draw(st.integers(min_value=1, max_value=6), label="flips")):
            i = data.draw(st.one_of(st.integers(0, min(size - 1, 4096)), st.integers(0, size - 1)), label="at")
            out[i] ^= data.draw(st.integers(min_value=1, max_value=255), label="mask")
        mutated = bytes(out)
    check_checkpoint(mutated, ckpt_dir)


PICKLABLE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10), st.binary(max_size=10)),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(st.one_of(st.text(max_size=10), st.integers()), children, max_size=4),
    ),
    max_leaves=12,
)


@fuzz(150)
@given(obj=PICKLABLE, how=st.sampled_from(["torch.save", "pickle-2", "pickle-4", "pickle-5"]))
@example(obj=[1, 2, 3], how="pickle-4")
@example(obj=[1, 2, 3], how="torch.save")
@example(obj=7, how="pickle-2")
@example(obj={"state_dict": [1]}, how="torch.save")
@example(obj={"tsm_deploy_format": 1}, how="torch.save")
@example(obj={"tsm_deploy_format": 1, "config": 3, "state_dict": {}}, how="torch.save")
@example(obj={"tsm_deploy_format": 1, "config": {}, "state_dict": 5}, how="torch.save")
def test_checkpoint_pickles_of_junk(obj: Any, how: str, ckpt_dir: Path) -> None:
    data = _torch_bytes(obj) if how == "torch.save" else pickle.dumps(obj, protocol=int(how.split("-")[1]))
    check_checkpoint(data, ckpt_dir)


def _junk_tensor(draw: st.DrawFn, like: Any) -> Any:
    like = like if isinstance(like, torch.Tensor) else torch.zeros(1)  # an earlier mutation put junk there
    kind = draw(st.sampled_from(["shape", "dtype", "scalar", "not-a-tensor", "empty"]))
    if kind == "shape":
        shape = draw(st.lists(st.integers(min_value=0, max_value=5), max_size=4))
        return torch.zeros(shape)
    if kind == "dtype":
        dtype = draw(st.sampled_from([torch.int64, torch.int8, torch.bool, torch.complex64, torch.float64, torch.float16]))
        return torch.zeros(like.shape, dtype=dtype)
    if kind == "scalar":
        return torch.tensor(1.0)
    if kind == "empty":
        return torch.empty(0)
    return draw(st.one_of(st.integers(), st.text(max_size=5), st.lists(st.floats(), max_size=3), st.none()))


@st.composite
def wrong_state_dicts(draw: st.DrawFn, state: dict[str, torch.Tensor], config: dict[str, Any]) -> Seed:
    """The real weights with keys dropped, renamed or added, tensors of the wrong shape/dtype, or
    non-tensors, in each layout the reader knows, with the config mutated too. The result's repr
    lists the changes (not the megabytes of weights)."""
    state = dict(state)
    keys = sorted(state)
    changes = []

    def shown(value: Any) -> str:
        return f"tensor{tuple(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor) else repr(value)

    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        op = draw(st.sampled_from(["drop", "rename", "add", "retensor"]))
        key = draw(st.sampled_from(keys))
        if op == "drop":
            state.pop(key, None)
            changes.append(f"dropped {key}")
        elif op == "rename":
            if key in state:
                new = draw(st.sampled_from(["module.", "base_model.", "x", ""])) + key + draw(st.sampled_from(["", "_", ".0"]))
                state[new] = state.pop(key)
                changes.append(f"renamed {key} -> {new}")
        elif op == "add":
            new = draw(st.text(max_size=12))
            state[new] = _junk_tensor(draw, state.get(key, torch.zeros(1)))
            changes.append(f"added {new!r} = {shown(state[new])}")
        else:
            state[key] = _junk_tensor(draw, state.get(key, torch.zeros(1)))
            changes.append(f"{key} = {shown(state[key])}")
    layout = draw(st.sampled_from(["bare", "training", "tsm-deploy", "tsm-deploy-bad-config"]))
    if layout == "bare":
        obj: Any = state
    elif layout == "training":
        obj = {"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3}
    elif layout == "tsm-deploy":
        obj = {"tsm_deploy_format": 1, "config": config, "state_dict": state}
    else:
        obj = {"tsm_deploy_format": 1, "config": draw(mutated_json(config)), "state_dict": state}
        changes.append(f"config {obj['config']!r}")
    return Seed(obj, f"{layout} layout: " + "; ".join(changes))


@pytest.fixture(scope="module")
def real_state(real_checkpoint: Seed) -> Seed:
    obj = torch.load(io.BytesIO(real_checkpoint.value), weights_only=True)
    return Seed((obj["state_dict"], obj["config"]), f"the small checkpoint's state dict and config {obj['config']}")


@fuzz(40, shrink=False)
@given(data=st.data())
def test_checkpoint_wrong_tensors(data: st.DataObject, real_state, ckpt_dir: Path) -> None:
    state, config = real_state.value
    check_checkpoint(_torch_bytes(data.draw(wrong_state_dicts(state, config)).value), ckpt_dir, cli=False)


@fuzz(40, shrink=False)
@given(data=st.data())
def test_checkpoint_wrong_config(data: st.DataObject, real_state, ckpt_dir: Path) -> None:
    """Only the stored config mutated (types swapped, fields removed, junk values)."""
    state, config = real_state.value
    obj = {"tsm_deploy_format": 1, "config": data.draw(mutated_json(config)), "state_dict": state}
    check_checkpoint(_torch_bytes(obj), ckpt_dir, cli=False)


def _with_tensor(state: dict[str, torch.Tensor], key: str, make: Callable[[torch.Tensor], Any]) -> dict[str, Any]:
    return {**state, key: make(state[key])}


# Cases the fuzzer found, pinned so that they are checked on every run (the fuzzer draws anew each time).
KNOWN_CASES: dict[str, Callable[[dict[str, torch.Tensor], dict[str, Any]], Any]] = {
    "complex weight": lambda s, c: {"tsm_deploy_format": 1, "config": c,
                                    "state_dict": _with_tensor(s, "classifier.weight", lambda t: t.to(torch.complex64))},
    "unknown arch in the stored config": lambda s, c: {"tsm_deploy_format": 1, "config": {**c, "arch": "tsm_mobileoet_v2_online"},
                                                        "state_dict": s},
    "arch of the wrong type": lambda s, c: {"tsm_deploy_format": 1, "config": {**c, "arch": ["tsm_mobilenet_v2_online"]}, "state_dict": s},
    "huge width_mult": lambda s, c: {"tsm_deploy_format": 1, "config": {**c, "width_mult": 27651858}, "state_dict": s},
    "n_class a string": lambda s, c: {"tsm_deploy_format": 1, "config": {**c, "n_class": "10"}, "state_dict": s},
    "weight replaced by an int": lambda s, c: {"state_dict": {"module." + k: v for k, v in {**s, "classifier.bias": 3}.items()}},
    "format version a list": lambda s, c: {"tsm_deploy_format": [1], "config": c, "state_dict": s},
    "state_dict a list": lambda s, c: {"tsm_deploy_format": 1, "config": c, "state_dict": list(s.values())},
    "unexpected key with a line break": lambda s, c: {**s, "junk\nkey": torch.zeros(1)},
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(KNOWN_CASES))
def test_checkpoint_known_cases(case: str, real_state: Seed, ckpt_dir: Path) -> None:
    state, config = real_state.value
    check_checkpoint(_torch_bytes(KNOWN_CASES[case](state, config)), ckpt_dir)


class _RunsCode:
    """A pickle whose loading would call ``os.system`` (the classic malicious .pth)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch.save", "torch.save-in-dict", "pickle"])
def test_checkpoint_that_would_run_code(how: str, ckpt_dir: Path) -> None:
    marker = ckpt_dir / f"pwned-{how}"
    evil = _RunsCode(marker)
    data = {
        "torch.save": lambda: _torch_bytes(evil),
        "torch.save-in-dict": lambda: _torch_bytes({"state_dict": {"w": evil}}),
        "pickle": lambda: pickle.dumps(evil, protocol=2),
    }[how]()
    path = ckpt_dir / f"evil-{how}.pth"
    path.write_bytes(data)
    result = read_or_reject(lambda: load_checkpoint(path))
    assert isinstance(result, TsmDeployError), "a pickle that calls os.system was accepted"
    out = ckpt_dir / f"evil-out-{how}"
    out.mkdir()
    cli_rejects(["export", "--checkpoint", path, "--output", out / "model.onnx"], out)
    assert not marker.exists(), "loading the checkpoint ran its code"


# ---------------------------------------------------------------------------------------------
# (b) manifests: Manifest.from_json, read_manifest and `tsm-deploy verify ARTIFACT`


@pytest.fixture(scope="module")
def real_manifest(small_artifact: Path) -> Seed:
    return Seed(json.loads((small_artifact / MANIFEST_NAME).read_text()), "the small artifact's manifest.json")


@pytest.fixture(scope="module")
def fuzz_artifact(small_artifact: Path, tmp_path_factory) -> Path:
    """A copy of the small artifact whose manifest.json each example overwrites (module.so stays)."""
    folder = tmp_path_factory.mktemp("fuzz-artifact") / "art"
    folder.mkdir()
    for item in small_artifact.iterdir():
        if item.is_file():
            (folder / item.name).write_bytes(item.read_bytes())
    read_or_reject(lambda: read_manifest(folder))
    return folder


def _tensor_specs(doc: Any) -> list[dict[str, Any]]:
    """Every object in the manifest that describes a tensor (has a shape and a dtype)."""
    found = []
    if isinstance(doc, dict):
        if "shape" in doc and "dtype" in doc:
            found.append(doc)
        for value in doc.values():
            found.extend(_tensor_specs(value))
    elif isinstance(doc, list):
        for value in doc:
            found.extend(_tensor_specs(value))
    return found


KNOWN_DTYPES = {
    "float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool",
}  # fmt: skip


def assert_manifest_usable(manifest: Manifest) -> None:
    """What the runtime, verify and bench rely on once a manifest is accepted."""
    assert manifest.inputs and manifest.outputs, "no inputs or no outputs"
    for spec in (*manifest.inputs, *manifest.outputs):
        assert isinstance(spec.name, str) and spec.name, f"tensor name {spec.name!r}"
        assert isinstance(spec.shape, tuple) and spec.shape and all(type(d) is int and d > 0 for d in spec.shape), (
            f"{spec.name!r}: shape {spec.shape!r}"
        )
        assert isinstance(spec.dtype, str) and spec.dtype in KNOWN_DTYPES, f"{spec.name!r}: dtype {spec.dtype!r}"
    inputs, outputs = {s.name for s in manifest.inputs}, {s.name for s in manifest.outputs}
    in_place = getattr(manifest.io, "state_in_place", False)
    assert isinstance(in_place, bool), f"state_in_place {in_place!r}"
    for out, inp in manifest.state:  # in place: the state is written into the input, not returned
        assert isinstance(out, str) and isinstance(inp, str) and (out not in outputs if in_place else out in outputs) \
            and inp in inputs, f"state pair {out!r} -> {inp!r} names no tensor"
    assert isinstance(manifest.module_file, str) and manifest.module_file, "module file"
    assert Path(manifest.module_file).name == manifest.module_file, f"module file {manifest.module_file!r} leaves the artifact"
    for section in ("model", "target", "preprocess"):
        assert isinstance(getattr(manifest, section), dict), f"{section} is not an object"
    for key in ("name", "arch", "device"):
        assert isinstance(manifest.target.get(key), str), f"target.{key} is {manifest.target.get(key)!r}"
    if manifest.labels is not None:  # one name per class: the logits' last dimension
        assert all(isinstance(label, str) for label in manifest.labels), f"labels {manifest.labels!r}"
        assert len(manifest.labels) == manifest.outputs[0].shape[-1], f"{len(manifest.labels)} labels for {manifest.outputs[0].shape}"


def check_manifest_text(raw: bytes, artifact: Path) -> None:
    """The manifest property for one manifest.json: from_json, read_manifest, then the CLI."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        text = None
    if text is not None:
        result = read_or_reject(lambda: Manifest.from_json(text))
        if not isinstance(result, TsmDeployError):
            assert_manifest_usable(result)
    (artifact / MANIFEST_NAME).write_bytes(raw)
    result = read_or_reject(lambda: read_manifest(artifact, check_module=False))
    if isinstance(result, TsmDeployError):
        out = artifact.parent / f"out{next(_counter)}"
        out.mkdir()
        cli_rejects(["verify", artifact, "--frames", 1, "--json", out / "report.json"], out)
    else:
        assert_manifest_usable(result)


def _dump(doc: Any) -> bytes:
    return json.dumps(doc, indent=2).encode()


@fuzz(200)
@given(data=st.data())
def test_manifest_mutated_fields(data: st.DataObject, real_manifest, fuzz_artifact: Path) -> None:
    check_manifest_text(_dump(data.draw(mutated_json(real_manifest.value))), fuzz_artifact)


@fuzz(100)
@given(data=st.data())
def test_manifest_mutated_text(data: st.DataObject, real_manifest, fuzz_artifact: Path) -> None:
    check_manifest_text(data.draw(text_mutation(_dump(real_manifest.value).decode())), fuzz_artifact)


@fuzz(60)
@given(doc=JUNK | st.lists(JUNK, max_size=3))
@example(doc=[])
@example(doc={"format_version": 1})
def test_manifest_not_an_object(doc: Any, fuzz_artifact: Path) -> None:
    check_manifest_text(_dump(doc), fuzz_artifact)


BAD_DIMS = st.one_of(
    st.integers(max_value=0),
    st.floats(allow_nan=True, allow_infinity=True),  # 3.0 too: the compiler writes integers
    st.text(max_size=4),
    st.booleans(),
    st.none(),
    st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=2),
)


@fuzz(120)
@given(data=st.data())
def test_manifest_rejects_bad_shapes(data: st.DataObject, real_manifest, fuzz_artifact: Path) -> None:
    """A negative, zero, fractional, string, boolean or null dimension is bad input, not a shape."""
    doc = copy.deepcopy(real_manifest.value)
    spec = data.draw(st.sampled_from(_tensor_specs(doc)), label="tensor")
    if data.draw(st.booleans(), label="whole shape"):
        spec["shape"] = data.draw(st.one_of(JUNK.filter(lambda v: not isinstance(v, list)), st.just([])), label="shape")
    else:
        spec["shape"][data.draw(st.integers(0, len(spec["shape"]) - 1), label="dim")] = data.draw(BAD_DIMS, label="value")
    raw = _dump(doc)
    (fuzz_artifact / MANIFEST_NAME).write_bytes(raw)
    result = read_or_reject(lambda: read_manifest(fuzz_artifact, check_module=False))
    assert isinstance(result, TsmDeployError), f"accepted {spec['name']!r} with shape {spec['shape']!r}"
    out = fuzz_artifact.parent / f"out{next(_counter)}"
    out.mkdir()
    cli_rejects(["verify", fuzz_artifact, "--frames", 1, "--json", out / "report.json"], out)


@fuzz(80)
@given(data=st.data())
def test_manifest_rejects_unknown_dtypes(data: st.DataObject, real_manifest, fuzz_artifact: Path) -> None:
    doc = copy.deepcopy(real_manifest.value)
    spec = data.draw(st.sampled_from(_tensor_specs(doc)), label="tensor")
    spec["dtype"] = data.draw(
        st.one_of(st.text(max_size=10).filter(lambda s: s not in KNOWN_DTYPES), st.sampled_from(["float33", "tensor", "Float32", "f4"]), JUNK.filter(lambda v: not isinstance(v, str))),
        label="dtype",
    )
    (fuzz_artifact / MANIFEST_NAME).write_bytes(_dump(doc))
    result = read_or_reject(lambda: read_manifest(fuzz_artifact, check_module=False))
    assert isinstance(result, TsmDeployError), f"accepted {spec['name']!r} with dtype {spec['dtype']!r}"


# ---------------------------------------------------------------------------------------------
# (c) target files: tsm_deploy.target.targets.load_target and `tsm-deploy targets FILE`


COMMITTED_TARGETS = {name: json.loads((TARGETS_DIR / f"{name}.json").read_text()) for name in available_targets()}


@pytest.fixture(scope="module")
def target_dir(tmp_path_factory) -> Path:
    read_or_reject(lambda: load_target("x86"))  # warm TVM's imports outside the property
    return tmp_path_factory.mktemp("fuzz-targets")


def check_target_file(raw: bytes, folder: Path) -> None:
    """The target property for one file: load_target, then `tsm-deploy targets FILE` (0 or 2)."""
    from tsm_deploy.target.status import format_target_status, target_status

    path = folder / f"t{next(_counter)}.json"
    path.write_bytes(raw)
    result = read_or_reject(lambda: load_target(str(path)))
    if isinstance(result, TsmDeployError):
        out = folder / f"out{next(_counter)}"
        out.mkdir()
        cli_rejects(["targets", path], out)
    else:
        # accepted: the listing must be able to describe it
        format_target_status(read_or_reject(lambda: target_status(result)))
        assert "\n" not in result.name and result.name.strip(), f"target name {result.name!r}"
    path.unlink()


@fuzz(200)
@given(data=st.data())
def test_target_mutated_fields(data: st.DataObject, target_dir: Path) -> None:
    base = COMMITTED_TARGETS[data.draw(st.sampled_from(sorted(COMMITTED_TARGETS)), label="target")]
    check_target_file(_dump(data.draw(mutated_json(base))), target_dir)


@fuzz(100)
@given(data=st.data())
def test_target_mutated_text(data: st.DataObject, target_dir: Path) -> None:
    base = COMMITTED_TARGETS[data.draw(st.sampled_from(sorted(COMMITTED_TARGETS)), label="target")]
    check_target_file(data.draw(text_mutation(_dump(base).decode())), target_dir)


TARGET_STRINGS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "\n", "a\nb", "x\x00y", "../../etc", "/abs/path", "cortex-a72\n", "llvm -mcpu=x"]),
)


@fuzz(150)
@given(data=st.data())
def test_target_junk_in_the_fields_tvm_reads(data: st.DataObject, target_dir: Path) -> None:
    """The values handed to TVM and LLVM (kind, mcpu, mtriple, mattr, host), the detectors, and the
    strings used in paths and messages (name, cross compiler, tuning-log folder, RPC key)."""
    name = data.draw(st.sampled_from(sorted(COMMITTED_TARGETS)), label="target")
    doc = copy.deepcopy(COMMITTED_TARGETS[name])
    where = data.draw(st.sampled_from(["tvm_target", "host", "top"]), label="where")
    if where == "top":
        field_name = data.draw(st.sampled_from(["name", "cross_compiler", "tuning_logs", "rpc_key", "detect"]), label="field")
        value = data.draw(st.lists(TARGET_STRINGS, max_size=2) if field_name == "detect" else TARGET_STRINGS, label="value")
        doc[field_name] = value
    else:
        spec = doc.get(where) or {"kind": "llvm"}
        field_name = data.draw(st.sampled_from(["kind", "mcpu", "mtriple", "mattr", "num-cores", "arch", "keys"]), label="field")
        spec[field_name] = data.draw(st.one_of(TARGET_STRINGS, JUNK, st.lists(TARGET_STRINGS, max_size=2)), label="value")
        doc[where] = spec
        if data.draw(st.booleans(), label="detect host-cpu"):
            doc["detect"] = ["host-cpu", "num-cores"]
    check_target_file(_dump(doc), target_dir)


@pytest.mark.parametrize(
    "raw",
    [b"", b"hello", b"\xff\xfe\x00", b"[" * 100_000, b'{"a":' * 50_000, b"null", b"[]", b'"x86"', b"NaN"],
    ids=["empty", "text", "not-utf8", "deep-list", "deep-object", "null", "list", "string", "nan"],
)
def test_target_file_not_a_target(raw: bytes, target_dir: Path) -> None:
    check_target_file(raw, target_dir)
    path = target_dir / "once.json"
    path.write_bytes(raw)
    assert isinstance(read_or_reject(lambda: load_target(str(path))), TsmDeployError)


def test_target_path_is_a_directory(target_dir: Path) -> None:
    folder = target_dir / "dir.json"
    folder.mkdir()
    assert isinstance(read_or_reject(lambda: load_target(str(folder))), TsmDeployError)
    out = target_dir / "out-dir"
    out.mkdir()
    cli_rejects(["targets", folder], out)


@fuzz(100)
@given(name=st.text(max_size=20))
@example(name="")
@example(name="x86\n")
@example(name="a\x00b")
@example(name="../targets/x86")
def test_target_names(name: str, target_dir: Path) -> None:
    """Any string as a target name: a committed target loads, anything else is one line."""
    result = read_or_reject(lambda: load_target(name))
    if isinstance(result, TsmDeployError):
        assert name not in COMMITTED_TARGETS
        out = target_dir / f"out{next(_counter)}"
        out.mkdir()
        if "\x00" not in name:  # click cannot pass NUL in argv either
            cli_rejects(["targets", "--", name], out)  # "--": a name is never read as an option
