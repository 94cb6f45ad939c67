"""A wheel that works away from the checkout.

The wheel is built from a copy of the working tree (what a clone would hold), offline, and installed
with ``--no-deps`` into a fresh virtual environment that sees the project's dependencies (a ``.pth``
line pointing at this environment's site-packages) but not this checkout: the editable install's
``__editable__*.pth`` finder is never processed there, and every command runs from an empty folder.
It must list every committed target, find the committed tuning records it carries, and compile.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TARGET_NAMES = sorted(p.stem for p in (REPO / "targets").glob("*.json"))
_SKIP = {".git", ".venv", "build", "dist", "out", "artifacts", "__pycache__", ".pytest_cache", ".hypothesis"}


def _source_files() -> list[Path]:
    """The files a clone would have: tracked plus untracked-but-not-ignored (git), else a filtered walk."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            check=True, capture_output=True,
        ).stdout.decode().split("\0")  # fmt: skip
        return [Path(name) for name in listed if name and (REPO / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        return [
            p.relative_to(REPO)
            for p in REPO.rglob("*")
            if p.is_file() and not any(part in _SKIP or part.endswith(".egg-info") for part in p.relative_to(REPO).parts)
        ]


def _clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "TSM_DEPLOY_TARGETS", "TSM_DEPLOY_TUNING_LOGS"}}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(args: list, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, args))} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _fresh_venv(path: Path) -> Path:
    """A venv without this project that imports the project's dependencies from this environment."""
    _run([sys.executable, "-m", "venv", "--without-pip", path], cwd=path.parent)
    site = Path(_run([path / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=path).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # A plain path line: the .pth files *in* that folder (the editable finder) are not processed.
    (site / "_tsm_deploy_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return site


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("wheel-src") / "tsm-deploy"
    for relative in _source_files():
        (src / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, src / relative)
    return src


@pytest.fixture(scope="module")
def wheel(source_copy: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel-dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", out, source_copy], cwd=out)
    (built,) = out.glob("tsm_deploy-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory) -> tuple[Path, Path]:
    """(venv, its site-packages) with the wheel installed."""
    venv = tmp_path_factory.mktemp("wheel-venv") / "venv"
    site = _fresh_venv(venv)
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index", wheel], cwd=venv)
    return venv, site


@pytest.mark.slow
def test_wheel_carries_the_data(wheel: Path) -> None:
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    for name in TARGET_NAMES:
        assert f"tsm_deploy/_data/targets/{name}.json" in names
    committed = [p.relative_to(REPO) for p in (REPO / "tuning_logs").rglob("*") if p.is_file()]
    assert committed, "no committed tuning records to package"
    for relative in committed:
        assert f"tsm_deploy/_data/{relative.as_posix()}" in names, relative
    support = [p.relative_to(REPO) for p in (REPO / "tsm_deploy/deploy/runtime_support").rglob("*") if p.is_file()]
    device_c = [p.relative_to(REPO) for p in (REPO / "tsm_deploy/emulation").glob("*.c")]
    assert support and device_c, "the package data this test looks for has moved"
    default_model = [
        p.relative_to(REPO)
        for pattern in ("*.pth", "*.txt", "*.json", "*.png")
        for p in (REPO / "tsm_deploy/default_model").glob(pattern)
    ]
    for relative in support + device_c + default_model:
        assert relative.as_posix() in names, f"{relative} is not in the wheel"
    assert not (REPO / "tsm_deploy" / "_data").exists(), "the packaged copy must not appear in the checkout"


@pytest.mark.slow
def test_installed_wheel_resolves_its_packaged_data(installed: tuple[Path, Path], tmp_path: Path) -> None:
    venv, site = installed
    probe = (
        "import json, tsm_deploy\n"
        "from tsm_deploy.support import resources\n"
        "from tsm_deploy.target.targets import PROJECT_ROOT, TARGETS_DIR, available_targets\n"
        "print(json.dumps({'package': tsm_deploy.__file__, 'targets': str(resources.targets_dir()),\n"
        "    'tuning_logs': str(resources.tuning_logs_dir()), 'default_model': str(resources.default_model_dir()),\n"
        "    'project_root': str(PROJECT_ROOT), 'targets_dir': str(TARGETS_DIR), 'names': available_targets()}))\n"
    )
    found = json.loads(_run([venv / "bin" / "python", "-c", probe], cwd=tmp_path, env=_clean_env(venv)).stdout)
    package = site / "tsm_deploy"
    assert Path(found["package"]).parent == package, "the checkout's tsm_deploy was imported, not the wheel's"
    assert Path(found["targets"]) == Path(found["targets_dir"]) == package / "_data" / "targets"
    assert Path(found["tuning_logs"]) == package / "_data" / "tuning_logs"
    assert Path(found["project_root"]) == package / "_data"
    assert Path(found["default_model"]) == package / "default_model"
    assert found["names"] == TARGET_NAMES
    committed = sorted(p.relative_to(REPO / "tuning_logs") for p in (REPO / "tuning_logs").rglob("*.json"))
    packaged = sorted(p.relative_to(Path(found["tuning_logs"])) for p in Path(found["tuning_logs"]).rglob("*.json"))
    assert packaged == committed


@pytest.mark.slow
def test_installed_cli_lists_every_target_with_records(installed: tuple[Path, Path], tmp_path: Path) -> None:
    venv, site = installed
    result = _run([venv / "bin" / "tsm-deploy", "targets", "--json", "-"], cwd=tmp_path, env=_clean_env(venv))
    listed = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert sorted(listed) == TARGET_NAMES
    records = listed["x86-avx2"]["tuning_records"]
    assert records["present"], records
    assert Path(records["path"]).is_relative_to(site / "tsm_deploy" / "_data" / "tuning_logs"), records
    for name, entry in listed.items():
        assert Path(entry["source"]).is_relative_to(site / "tsm_deploy" / "_data" / "targets"), (name, entry["source"])


@pytest.mark.slow
def test_installed_cli_compiles_with_the_packaged_records_folder(
    installed: tuple[Path, Path], tmp_path: Path, small_checkpoint_file: Path
) -> None:
    """The small test model differs from the default model only in its class count: the wheel's own
    record library (for this CPU's x86 level), not a checkout's, covers its convolutions."""
    venv, site = installed
    env = _clean_env(venv)
    x86 = json.loads(_run([venv / "bin" / "tsm-deploy", "targets", "x86", "--json", "-"], cwd=tmp_path, env=env).stdout)[0]
    result = _run(
        [venv / "bin" / "tsm-deploy", "compile", "--checkpoint", small_checkpoint_file, "--target", "x86", "--output", "art"],
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert (tmp_path / "art" / "manifest.json").is_file() and (tmp_path / "art" / "module.so").is_file()
    if x86["tuning_records"]["path"] is None:
        pytest.skip("this CPU has neither AVX2 nor AVX-512: the x86 target uses no committed records")
    packaged = site / "tsm_deploy" / "_data" / "tuning_logs"
    assert Path(x86["tuning_records"]["path"]).is_relative_to(packaged)
    tuning = json.loads((tmp_path / "art" / "manifest.json").read_text())["tuning"]
    assert tuning["libraries"] and all(Path(p).is_relative_to(packaged) for p in tuning["libraries"]), tuning
    assert tuning["tuned_fraction"] >= 0.95 and "library)" in result.stdout, result.stdout


@pytest.mark.slow
def test_editable_install_uses_the_checkout(source_copy: Path, tmp_path_factory, tmp_path: Path) -> None:
    """`make setup`'s `pip install -e .` still works with setup.py, and reads the checkout's folders."""
    venv = tmp_path_factory.mktemp("editable-venv") / "venv"
    _fresh_venv(venv)
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-build-isolation",
          "--no-index", "-e", source_copy], cwd=venv)  # fmt: skip
    probe = "from tsm_deploy.support import resources; print(resources.targets_dir()); print(resources.tuning_logs_dir())"
    lines = _run([venv / "bin" / "python", "-c", probe], cwd=tmp_path, env=_clean_env(venv)).stdout.split()
    assert [Path(line) for line in lines] == [source_copy / "targets", source_copy / "tuning_logs"]
    assert not (source_copy / "tsm_deploy" / "_data").exists()


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment override, else the checkout's folder, else the packaged copy (quick: no build)."""
    from tsm_deploy.support import resources

    assert resources.targets_dir() == REPO / "targets" or os.environ.get(resources.TARGETS_ENV)
    checkout, package = tmp_path / "checkout", tmp_path / "checkout" / "tsm_deploy"
    package.mkdir(parents=True)
    monkeypatch.setattr(resources, "CHECKOUT_ROOT", checkout)
    monkeypatch.setattr(resources, "PACKAGED_DATA", package / "_data")
    monkeypatch.delenv(resources.TARGETS_ENV, raising=False)
    monkeypatch.delenv(resources.TUNING_LOGS_ENV, raising=False)
    # no pyproject.toml beside the package: an installed wheel, even if a "targets" folder is there
    (checkout / "targets").mkdir()
    assert resources.targets_dir() == package / "_data" / "targets"
    assert resources.data_root() == package / "_data"
    (checkout / "pyproject.toml").write_text("")
    assert resources.targets_dir() == checkout / "targets"
    assert resources.data_root() == checkout
    assert resources.tuning_logs_dir() == package / "_data" / "tuning_logs"  # not in this checkout
    monkeypatch.setenv(resources.TARGETS_ENV, str(tmp_path / "mine"))
    monkeypatch.setenv(resources.TUNING_LOGS_ENV, str(tmp_path / "logs"))
    assert resources.targets_dir() == tmp_path / "mine"
    assert resources.tuning_logs_dir() == tmp_path / "logs"


def test_missing_targets_folder_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from tsm_deploy.target import targets as targets_module
    from tsm_deploy.cli import main

    monkeypatch.setattr(targets_module, "TARGETS_DIR", tmp_path / "nowhere")
    result = CliRunner().invoke(main, ["targets"])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: targets folder not found: {tmp_path / 'nowhere'} (set TSM_DEPLOY_TARGETS to a folder of target .json files)"]
