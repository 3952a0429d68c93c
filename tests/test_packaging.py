"""Packaging: declared dependencies match what the code imports; the default model ships as package data."""

from __future__ import annotations

import ast
import fnmatch
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    """Normalised distribution names of requirement strings (PEP 503: case, ``-``/``_``/``.``)."""
    return {re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]).lower() for r in requirements}


def _third_party_imports(paths: list[Path]) -> set[str]:
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name != "mfmjt"}


def _distributions(modules: set[str]) -> set[str]:
    """The installed distributions that provide ``modules`` (normalised names)."""
    provided = packages_distributions()
    missing = sorted(m for m in modules if m not in provided)
    assert not missing, f"imported but not installed: {missing}"
    return _names([dist for m in modules for dist in provided[m]])


def _library_files() -> list[Path]:
    """mfmjt's modules, less the demo's service package (mfmjt/demo: the demo extra's) and the scoring
    package (mfmjt/scoring: the eval extra's)."""
    extras = {"demo", "scoring"}
    return sorted(
        p for p in (REPO / "mfmjt").rglob("*.py") if not extras & set(p.relative_to(REPO).parts[1:2])
    )


def test_the_library_declares_exactly_what_it_imports():
    imported = _distributions(_third_party_imports(_library_files()))
    assert imported == _names(PYPROJECT["project"]["dependencies"])


def test_the_demo_extra_covers_what_app_py_and_mfmjt_demo_add():
    demo_files = [REPO / "app.py", *sorted((REPO / "mfmjt" / "demo").rglob("*.py"))]
    imported = _distributions(_third_party_imports(demo_files))
    declared = _names(
        PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["demo"]
    )
    assert imported <= declared
    assert _names(PYPROJECT["project"]["optional-dependencies"]["demo"]) <= imported


def test_the_eval_extra_covers_what_mfmjt_scoring_adds():
    imported = _distributions(_third_party_imports(sorted((REPO / "mfmjt" / "scoring").rglob("*.py"))))
    project = PYPROJECT["project"]
    assert imported <= _names(project["dependencies"] + project["optional-dependencies"]["eval"])
    # and nothing declared there is unused (matplotlib: the benchmarks' plots)
    assert _names(project["optional-dependencies"]["eval"]) - {"matplotlib"} <= imported


def test_requirements_txt_is_the_library_plus_the_demo():
    lines = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in lines if line and not line.startswith("#")]
    project = PYPROJECT["project"]
    assert sorted(requirements) == sorted(project["dependencies"] + project["optional-dependencies"]["demo"])


def test_the_default_model_is_declared_package_data():
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["mfmjt"]
    shipped = [p.relative_to(REPO / "mfmjt").as_posix() for p in (REPO / "mfmjt/assets/default").iterdir()]
    assert {"assets/default/config.json", "assets/default/model.safetensors"} <= set(shipped)
    assert all(any(fnmatch.fnmatch(name, pattern) for pattern in patterns) for name in shipped)
