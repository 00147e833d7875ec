"""The scoring core compiled with mypyc: for a wheel (setup.py) and in place (make compile).

The hot path of every event and of the sweep is scoring/: folding an event into the
state, decoding and encoding the stored form, scoring, deciding. mypyc turns those
modules, already typed under mypy strict, into C extensions next to their sources
(BENCHMARKS.md measures the gain).

- A wheel (``pip install .``, the Docker image) is built with them by setup.py, which
  calls :func:`mypyc_extensions`; ``ENGAGEMENT_COMPILE=0`` builds it pure.
- A source checkout compiles in place: ``python scripts/compile_scoring.py`` (run by
  ``make``) records the digests of the sources it compiled, and scoring/__init__.py
  refuses to import when any source differs: Python imports an extension before a source
  of the same name, so an edited module would otherwise run as its stale compiled self.
  ``make pure`` removes the extensions.

Run from the repository root: python scripts/compile_scoring.py
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
import sysconfig
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

from mypyc.build import mypycify
from setuptools import Distribution

# The modules an event and a sweep pass through. state.py stays pure Python: it builds a
# state as a plain draft and switches its __class__, which compiled classes do not allow.
COMPILED = (
    "scores",
    "thresholds",
    "schedule",
    "stored",
    "engagement",
    "codec",
    "features",
    "engine",
    "shards",
    "value",
    "kpis",
    "names",
)
BUILD_DIR = Path(".engagement/compiled")
MANIFEST = Path("scoring/compiled.json")


def type_checked_sources() -> list[Path]:
    """Every source mypyc reads types from: a change in any of them can change the C."""
    return sorted([*Path("scoring").glob("*.py"), *Path("schemas").rglob("*.py")])


def remove_compiled() -> None:
    MANIFEST.unlink(missing_ok=True)
    for suffix in EXTENSION_SUFFIXES:
        for extension in Path("scoring").glob(f"*{suffix}"):
            extension.unlink()


def missing_toolchain() -> str | None:
    """What a C build of an extension lacks here (a compiler, Python's headers), if anything."""
    # CC in the environment overrides Python's own, as in the build itself.
    configured = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    compiler = shlex.split(str(configured))[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        return f"no Python headers ({headers})"
    return None


def mypyc_extensions(build_dir: Path) -> list[Any]:
    """The compiled modules as setuptools extensions (C written under ``build_dir``)."""
    return list(
        mypycify(
            [
                # The project's own [tool.mypy] (strict, pydantic plugin) applies; the
                # cache is kept apart from `make typecheck`'s, whose targets differ.
                "--cache-dir",
                str(build_dir / "mypy-cache"),
                *(f"scoring/{name}.py" for name in COMPILED),
            ],
            opt_level="3",
            target_dir=str(build_dir / "c"),
            # Inside the package, not a top-level module: an editable install maps only
            # the packages, so a top-level shared library would not be importable.
            group_name="scoring._native",
        )
    )


def main() -> None:
    if not Path("scoring/__init__.py").is_file():
        sys.exit("run from the repository root")
    # The old extensions go first: a failed build must leave pure Python, not a stale mix.
    remove_compiled()
    digests = {
        path.as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in type_checked_sources()
    }
    missing = missing_toolchain()
    if missing is not None:
        # The same code runs as Python, only slower: the demo and the tests still run.
        MANIFEST.write_text(json.dumps({"modules": [], "sources": digests, "skipped": missing}))
        print(
            f"WARNING: {missing}: the scoring core runs as plain Python (slower: "
            "BENCHMARKS.md). Install one, then `make compile`.",
            file=sys.stderr,
        )
        return
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    extensions = mypyc_extensions(BUILD_DIR)
    # A bare Distribution reads no project configuration: the build needs only the
    # extensions, and older setuptools in a virtualenv cannot read this pyproject.toml.
    distribution = Distribution({"name": "engagement-scorer-compiled", "ext_modules": extensions})
    distribution.script_args = [
        "build_ext",
        "--inplace",
        "--build-temp",
        str(BUILD_DIR / "temp"),
        "--build-lib",
        str(BUILD_DIR / "lib"),
    ]
    if os.environ.get("ENGAGEMENT_COMPILE_VERBOSE") != "1":
        distribution.script_args.insert(0, "--quiet")
    distribution.parse_command_line()
    distribution.run_commands()
    shutil.rmtree(BUILD_DIR / "temp", ignore_errors=True)
    manifest = {"modules": [f"scoring.{name}" for name in COMPILED], "sources": digests}
    MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"compiled {len(COMPILED)} scoring modules with mypyc ({MANIFEST})")


if __name__ == "__main__":
    main()
