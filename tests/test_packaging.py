"""Packaging: portable imports, one version source, the wheel's packages and data."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import archsearch

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
POSIX_ONLY = {"fcntl", "termios", "pwd", "grp", "resource", "posix", "tty", "pty"}


def _module_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_posix_only_module_level_imports():
    files = [*(REPO / "archsearch").rglob("*.py"), *(REPO / "plugins").rglob("*.py")]
    bad = {str(p.relative_to(REPO)): sorted(_module_level_imports(p) & POSIX_ONLY) for p in files}
    assert not {k: v for k, v in bad.items() if v}
    assert any(d.startswith("filelock") for d in PYPROJECT["project"]["dependencies"])


def test_csv_sink_locks_what_filelock_locks(tmp_path):
    """The sink's lock excludes filelock's on the same file (``export`` and other processes take
    that one) and is re-entrant; released, filelock gets it."""
    from filelock import FileLock, Timeout

    from archsearch.plugins.sinks import CsvSink

    sink = CsvSink(tmp_path)
    assert isinstance(sink.lock, FileLock) and sink.lock_path.name == "experiment_results.csv.lock"
    other = FileLock(sink.lock_path, thread_local=False)
    with sink._locked(), sink._locked():  # re-entrant in one process
        with pytest.raises(Timeout):
            other.acquire(timeout=0.2)
    with sink._locked():
        pass
    with pytest.raises(Timeout):  # still held after the inner one was left
        with sink._locked():
            with sink._locked():
                pass
            other.acquire(timeout=0.2)
    other.acquire(timeout=1)
    other.release()
    sink.close()


def test_version_comes_from_the_distribution():
    assert PYPROJECT["project"]["version"] == importlib.metadata.version("archsearch")
    assert archsearch.__version__ == PYPROJECT["project"]["version"]
    assert 'version = "' not in (REPO / "archsearch" / "__init__.py").read_text()
    out = subprocess.run(
        [sys.executable, "-m", "archsearch", "--version"], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0 and out.stdout.strip() == f"archsearch {archsearch.__version__}"


def _tree_packages() -> set[str]:
    """Every folder of archsearch/ and plugins/ holding Python modules or data files."""
    found = set()
    for root, prefix in ((REPO / "archsearch", "archsearch"), (REPO / "plugins", "archsearch.plugins")):
        for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
            if folder.name == "__pycache__" or not any(f.is_file() for f in folder.iterdir()):
                continue
            found.add(".".join([prefix, *folder.relative_to(root).parts]))
    return found


def test_pyproject_lists_every_package_and_its_data():
    tool = PYPROJECT["tool"]["setuptools"]
    assert set(tool["packages"]) == _tree_packages()
    assert tool["package-dir"] == {"archsearch": "archsearch", "archsearch.plugins": "plugins"}
    data = tool["package-data"]
    assert "py.typed" in data["archsearch"] and (REPO / "archsearch" / "py.typed").exists()
    assert {"*.csv", "LICENSE", "README.md"} <= set(data["archsearch.data.builtin"])
    assert "scikit-optimize" in " ".join(PYPROJECT["project"]["dependencies"])


def test_pyproject_classifiers_and_urls():
    project = PYPROJECT["project"]
    classifiers = set(project["classifiers"])
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert {"Operating System :: OS Independent", "Typing :: Typed"} <= classifiers
    assert "Topic :: Scientific/Engineering :: Artificial Intelligence" in classifiers
    assert project["license"] == "MIT"  # License-Expression; a License classifier beside it is an error
    urls = project["urls"]
    assert {"Documentation", "Source"} <= set(urls)
    assert all(u.startswith("https://github.com/archsearch/archsearch") for u in urls.values())
