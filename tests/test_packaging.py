"""Layout rules of DESIGN.md: package list, layering, runnable-file convention."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_ROOTS = {"samspt": "samspt", "runtime": "samspt.runtime", "training": "samspt.training",
                 "export": "samspt.export", "benchmarks": "samspt.benchmarks",
                 "serve": "samspt.serve"}


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_in_the_package_list():
    setup = _pyproject()["tool"]["setuptools"]
    listed = set(setup["packages"])
    found = set()
    for folder, package in PACKAGE_ROOTS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *rel.parts]))
    assert found == listed, f"unlisted: {found - listed}, listed but absent: {listed - found}"
    assert setup["package-dir"] == {v: k for k, v in PACKAGE_ROOTS.items()}


def test_runtime_never_imports_torch_or_the_other_stages():
    code = ("import sys, samspt.runtime, samspt.runtime.preprocess, samspt.runtime.samples, "
            "samspt.runtime.files, samspt.runtime.logs\n"
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('samspt.training', "
            "'samspt.export'))]\nprint(bad)\nsys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _runnable_files():
    for folder in ("training", "export", "runtime", "benchmarks", "serve"):
        for path in (ROOT / folder).rglob("*.py"):
            if '__name__ == "__main__"' in path.read_text():
                yield path


def test_runnable_files_have_build_parser_and_main_and_a_console_script():
    scripts = set(_pyproject()["project"]["scripts"].values())
    files = list(_runnable_files())
    assert files
    for path in files:
        tree = ast.parse(path.read_text())
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert {"build_parser", "main"} <= names, path
        module = PACKAGE_ROOTS[path.relative_to(ROOT).parts[0]] + "." + path.stem
        assert f"{module}:main" in scripts, f"{path} has no console script"


@pytest.mark.integration
@pytest.mark.parametrize("how", ["file", "module"])
def test_runnable_files_run_as_file_and_as_module(how):
    for path in _runnable_files():
        module = PACKAGE_ROOTS[path.parts[len(ROOT.parts)]] + "." + path.stem
        cmd = [sys.executable, str(path), "--help"] if how == "file" else \
            [sys.executable, "-m", module, "--help"]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert result.returncode == 0, result.stderr
        assert "usage:" in result.stdout
