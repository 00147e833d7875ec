"""Pure scoring: the customer state, the scores, the decisions. No I/O, no clock read.

The modules an event passes through run compiled by mypyc where they were built so: in
an installed wheel (setup.py), or in a source checkout compiled in place by `make`
(scripts/compile_scoring.py). Python imports an extension before a source of the same
name, so in a checkout an edited source would silently run as its stale compiled self;
there this package refuses to import instead, naming the command that rebuilds.
"""

from __future__ import annotations

import hashlib
import json
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


class StaleCompiledModuleError(ImportError):
    """A compiled module is older than a source it was built from."""


def _in_source_checkout() -> bool:
    """Whether this package runs from the project's source tree, where extensions are
    built in place next to sources that may be edited (not from an installed wheel,
    whose extensions were built from the sources installed beside them)."""
    return (_PACKAGE.parent / "scripts" / "compile_scoring.py").is_file()


def _compiled_modules() -> frozenset[str]:
    extensions = [path for suffix in EXTENSION_SUFFIXES for path in _PACKAGE.glob(f"*{suffix}")]
    if not extensions:
        return frozenset()
    built = {path.name.split(".", 1)[0] for path in extensions}
    if not _in_source_checkout():
        return frozenset(f"scoring.{name}" for name in built if not name.startswith("_"))
    manifest_path = _PACKAGE / "compiled.json"
    if not manifest_path.is_file():
        raise StaleCompiledModuleError(
            f"{extensions[0]} has no record of the sources it was compiled from: run "
            "`make compile` to rebuild the compiled scoring core, or `make pure` to remove it"
        )
    manifest = json.loads(manifest_path.read_text())
    root = _PACKAGE.parent
    for source, digest in manifest["sources"].items():
        path = root / source
        actual = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
        if actual != digest:
            raise StaleCompiledModuleError(
                f"{source} changed since the scoring core was compiled: run `make compile` "
                "to rebuild it, or `make pure` to remove the compiled modules"
            )
    return frozenset(name for name in manifest["modules"] if name.rsplit(".", 1)[1] in built)


COMPILED: frozenset[str] = _compiled_modules()
"""The scoring modules running as mypyc-compiled extensions (empty: all pure Python)."""
