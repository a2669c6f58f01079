"""The installed console scripts (``tfmtnas-train`` ...): ``--helpshort`` lists the
binary's own flags and its usage text, exactly as ``python -m tfmtnas.pipelines.<binary>``.
"""

import ast
import os
import re
import subprocess
import sysconfig
from pathlib import Path

import pytest

from tests.pipelines.conftest import run_module

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
FLAG_LINE = re.compile(r"^\s+--(?:\[no\])?(\w+):", re.MULTILINE)


def _listed_flags(help_text: str) -> set[str]:
    return set(FLAG_LINE.findall(help_text))


def _summary(module: str) -> str:
    path = ROOT / (module.replace(".", "/") + ".py")
    return ast.get_docstring(ast.parse(path.read_text())).splitlines()[0]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_helpshort_of_the_console_script_lists_the_binary_flags(script):
    path = Path(sysconfig.get_path("scripts")) / script
    assert path.is_file(), f"{script} is not installed in this environment: run `make install`."
    module = SCRIPTS[script].split(":")[0]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    installed = subprocess.run([str(path), "--helpshort"], capture_output=True, text=True,
                               timeout=600, env=env)
    expected = _listed_flags(run_module(module, "--helpshort").stdout)
    # Every binary has flags but the cluster server, which reads TF_CONFIG only.
    assert bool(expected) == (script != "tfmtnas-server"), f"python -m {module} --helpshort"
    assert _listed_flags(installed.stdout) == expected, installed.stdout
    assert _summary(module) in installed.stdout
