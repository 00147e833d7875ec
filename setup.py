"""A wheel of the project carries its scoring core compiled by mypyc, as black's and mypy's
wheels carry theirs (scripts/compile_scoring.py names the modules).

ENGAGEMENT_COMPILE chooses: ``auto`` (the default) compiles where a C compiler and Python's
headers are found and warns where they are not; ``1`` requires them; ``0`` builds a
pure-Python wheel. An editable install (``make install``) is not compiled here: a source
checkout compiles in place with ``make compile``, which records what it compiled.
Everything else about the project is in pyproject.toml.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def ext_modules() -> list[Any]:
    mode = os.environ.get("ENGAGEMENT_COMPILE", "auto")
    if mode not in {"auto", "0", "1"}:
        sys.exit(f"ENGAGEMENT_COMPILE: expected auto, 0 or 1, got {mode!r}")
    # setuptools runs this file for metadata and editable installs too: only a wheel
    # (bdist_wheel) carries the extensions.
    if mode == "0" or "bdist_wheel" not in sys.argv:
        return []
    sys.path.insert(0, str(ROOT / "scripts"))
    from compile_scoring import missing_toolchain, mypyc_extensions

    missing = missing_toolchain()
    if missing is not None:
        if mode == "1":
            sys.exit(f"ENGAGEMENT_COMPILE=1, but {missing}")
        print(f"WARNING: {missing}: the scoring core is built as plain Python", file=sys.stderr)
        return []
    return mypyc_extensions(Path("build") / "mypyc")


setup(ext_modules=ext_modules())
