"""The compiled scoring core: what `make` builds is what runs, and never a stale build."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import scoring
import scoring.codec
import scoring.engagement
import scoring.engine
import scoring.features
import scoring.kpis
import scoring.names
import scoring.schedule
import scoring.scores
import scoring.shards
import scoring.stored
import scoring.thresholds
import scoring.value

ROOT = Path(scoring.__file__).resolve().parent.parent
COMPILED_BY_MAKE = {
    scoring.codec,
    scoring.engagement,
    scoring.engine,
    scoring.features,
    scoring.kpis,
    scoring.names,
    scoring.schedule,
    scoring.scores,
    scoring.shards,
    scoring.stored,
    scoring.thresholds,
    scoring.value,
}


def test_make_runs_the_scoring_core_compiled() -> None:
    # `make test` compiles first; a bare pytest run without it fails here, saying so.
    manifest = ROOT / "scoring" / "compiled.json"
    assert manifest.is_file(), "run `make compile` first"
    skipped = json.loads(manifest.read_text()).get("skipped")
    if skipped:
        pytest.skip(f"make could not compile here: {skipped}")
    assert {module.__name__ for module in COMPILED_BY_MAKE} == scoring.COMPILED
    for module in COMPILED_BY_MAKE:
        assert module.__file__ is not None
        assert module.__file__.endswith(tuple(EXTENSION_SUFFIXES)), module.__file__
    assert not (scoring.__file__ or "").endswith(tuple(EXTENSION_SUFFIXES))


def _package(tmp_path: Path, *, compiled: bool, manifest: bool, checkout: bool = True) -> Path:
    """A copy of the package's guard with one module, its source and a stand-in extension
    (the guard runs before any extension loads, so the stand-in is never executed), in a
    source checkout (with the in-place compiler beside it) or installed (without)."""
    package = tmp_path / "scoring"
    package.mkdir()
    if checkout:
        (tmp_path / "scripts").mkdir()
        (tmp_path / "scripts" / "compile_scoring.py").write_text("")
    shutil.copy(ROOT / "scoring" / "__init__.py", package / "__init__.py")
    (package / "scores.py").write_text("SCORE = 1\n")
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "events.py").write_text("EVENT = 1\n")
    if compiled:
        (package / f"scores{EXTENSION_SUFFIXES[0]}").write_bytes(b"stand-in")
    if manifest:
        sources = {
            path: hashlib.sha256((tmp_path / path).read_bytes()).hexdigest()
            for path in ("scoring/__init__.py", "scoring/scores.py", "schemas/events.py")
        }
        record = {"modules": ["scoring.scores"], "sources": sources}
        (package / "compiled.json").write_text(json.dumps(record))
    return tmp_path


def _import_guard(root: Path) -> subprocess.CompletedProcess[str]:
    # -S: no site-packages, so the project's own editable install cannot answer instead.
    code = (
        f"import sys; sys.path.insert(0, {str(root)!r}); "
        "import scoring; print(sorted(scoring.COMPILED))"
    )
    return subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60
    )


def test_a_current_build_is_reported_as_compiled(tmp_path: Path) -> None:
    result = _import_guard(_package(tmp_path, compiled=True, manifest=True))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['scoring.scores']"


def test_without_extensions_everything_is_pure_python(tmp_path: Path) -> None:
    result = _import_guard(_package(tmp_path, compiled=False, manifest=False))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "edited", ["scoring/scores.py", "schemas/events.py"], ids=["compiled", "type-source"]
)
def test_an_edited_source_refuses_its_stale_compiled_module(tmp_path: Path, edited: str) -> None:
    root = _package(tmp_path, compiled=True, manifest=True)
    with (root / edited).open("a") as source:
        source.write("EDITED = True\n")
    result = _import_guard(root)
    assert result.returncode != 0
    assert "StaleCompiledModuleError" in result.stderr
    assert f"{edited} changed since the scoring core was compiled" in result.stderr
    assert "make compile" in result.stderr


def test_a_deleted_source_refuses_too(tmp_path: Path) -> None:
    root = _package(tmp_path, compiled=True, manifest=True)
    (root / "schemas" / "events.py").unlink()
    result = _import_guard(root)
    assert "schemas/events.py changed since the scoring core was compiled" in result.stderr


def test_an_extension_without_its_record_refuses(tmp_path: Path) -> None:
    result = _import_guard(_package(tmp_path, compiled=True, manifest=False))
    assert result.returncode != 0
    assert "has no record of the sources it was compiled from" in result.stderr
    assert "make pure" in result.stderr


def test_an_installed_wheels_extensions_need_no_record(tmp_path: Path) -> None:
    # Built from the sources installed beside them (setup.py): nothing to compare with.
    result = _import_guard(_package(tmp_path, compiled=True, manifest=False, checkout=False))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['scoring.scores']"


def test_a_machine_without_a_c_toolchain_is_told_what_it_lacks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # make then leaves the core as plain Python with a warning (the demo and tests still run).
    path = ROOT / "scripts" / "compile_scoring.py"
    spec = importlib.util.spec_from_file_location("compile_scoring", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script.sysconfig, "get_paths", lambda: {"include": str(tmp_path)})
    monkeypatch.setenv("CC", "/nonexistent/cc -O2")
    assert script.missing_toolchain() == "no C compiler (/nonexistent/cc)"
    monkeypatch.setenv("CC", sys.executable)  # a program that exists
    assert script.missing_toolchain() == f"no Python headers ({tmp_path / 'Python.h'})"
    (tmp_path / "Python.h").write_text("")
    assert script.missing_toolchain() is None


def _wheel(tmp_path: Path, compile_mode: str) -> list[str]:
    """The files of a wheel of this checkout, built as pip builds it (setup.py), with the
    dev environment's build tools instead of an isolated one (no downloads)."""
    out = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
        env={**os.environ, "ENGAGEMENT_COMPILE": compile_mode},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return [wheel.name, *archive.namelist()]


@pytest.mark.timeout(300)
def test_a_wheel_carries_the_compiled_core_and_no_record(tmp_path: Path) -> None:
    # What `pip install .` and the Docker image install: the core compiled, nothing to
    # check it against (an installed wheel's sources are the ones it was built from).
    name, *files = _wheel(tmp_path, "1")
    assert "-cp311-" in name
    extensions = {f.split("/")[1].split(".")[0] for f in files if f.endswith(".so")}
    assert extensions == {m.__name__.split(".")[1] for m in COMPILED_BY_MAKE} | {"_native__mypyc"}
    assert "scoring/compiled.json" not in files
    assert {"streams/state/commit_shard.lua", "schemas/json/purchase-event.json"} <= set(files)


@pytest.mark.timeout(120)
def test_engagement_compile_0_builds_a_pure_wheel(tmp_path: Path) -> None:
    name, *files = _wheel(tmp_path, "0")
    assert name.endswith("-py3-none-any.whl")
    assert not [f for f in files if f.endswith(".so")]
