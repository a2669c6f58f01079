"""Only binaries define absl flags, each once at import, all through one module.

Library modules are imported by binaries, tests and users alike; a flag defined at import
would clash with a binary's flag of the same name. So, in a fresh process: importing every
module of the package except the binaries adds no flag to those of absl and the
dependencies (TensorFlow defines a few), and every ``DEFINE_*`` call of the package is in
``tfmtnas/pipelines/flags.py``.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "tfmtnas"
FLAGS_MODULE = "tfmtnas.pipelines.flags"
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
# The console scripts' modules and the parameter-server worker (``python -m`` only).
BINARIES = sorted({target.split(":")[0] for target in SCRIPTS.values()}
                  | {"tfmtnas.pipelines.server"})

_IMPORT_ALL = """
import importlib, json, pkgutil, sys
from absl import app, flags, logging  # noqa: F401
import tensorflow  # noqa: F401
import tf_keras  # noqa: F401

binaries = set(sys.argv[1:])
baseline = set(flags.FLAGS)
import tfmtnas
modules = ["tfmtnas"] + [m.name for m in pkgutil.walk_packages(tfmtnas.__path__, "tfmtnas.")
                         if m.name not in binaries]
for name in modules:
    importlib.import_module(name)
added = {n: flags.FLAGS.find_module_defining_flag(n) for n in set(flags.FLAGS) - baseline}
# The check sees flags: one binary's import adds its own, defined in tfmtnas.pipelines.flags.
train = {}
if not added:
    importlib.import_module("tfmtnas.pipelines.train")
    train = {n: flags.FLAGS.find_module_defining_flag(n) for n in set(flags.FLAGS) - baseline}
print(json.dumps({"modules": modules, "added": added, "train": train}))
"""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_modules() -> dict[str, ast.Module]:
    return {_module_name(path): ast.parse(path.read_text())
            for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _has_main_guard(tree: ast.Module) -> bool:
    return any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
               for node in tree.body)


def test_importing_library_modules_defines_no_flag():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", _IMPORT_ALL, *BINARIES], capture_output=True,
                          text=True, timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["added"] == {}, "library modules defined flags (flag: defining module)"
    assert set(result["modules"]) == set(_package_modules()) - set(BINARIES)
    assert {"dataset", "model", "epochs", "model_dir", "strategy"} <= set(result["train"])
    assert set(result["train"].values()) == {FLAGS_MODULE}


def test_binaries_are_the_modules_with_a_main_guard():
    modules = _package_modules()
    assert {name for name, tree in modules.items() if _has_main_guard(tree)} == set(BINARIES)


def test_flags_are_defined_only_in_the_flags_module():
    """No binary (the demo included) or library module calls ``DEFINE_*`` itself."""
    defining = {}
    for name, tree in _package_modules().items():
        calls = sorted({node.func.attr for node in ast.walk(tree)
                        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and (node.func.attr.startswith("DEFINE")
                             or node.func.attr in ("mark_flag_as_required", "set_default"))})
        if calls:
            defining[name] = calls
    assert set(defining) == {FLAGS_MODULE}, defining
