"""The plugin manager: built-ins, entry points, config modules, and the errors they can cause."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from archsearch.architecture import Architecture, ArchSpace
from archsearch.cli import main
from archsearch.errors import PluginError
from archsearch.plugin.manager import KINDS, get_plugin_manager
from archsearch.space.grid import get_architectures_for_budget

REPO = Path(__file__).resolve().parents[1]

THROWAWAY = """
from archsearch import hookimpl
from archsearch.plugin.registry import ArchitectureGenerator, ModelVariant


def count(arch, spec):
    return arch.d_model * arch.n_layers


def every_other(request):
    from archsearch.space.grid import generate_architecture_grid, filter_by_budget
    grid = generate_architecture_grid(request.space, request.spec, request.estimate)
    return filter_by_budget(grid, request.budget, request.tolerance)[::2]


@hookimpl
def archsearch_register_generators():
    return [ArchitectureGenerator("every-other", every_other, "half the band")]


@hookimpl
def archsearch_register_estimators():
    return [ModelVariant("toy", count, lambda arch, spec: None, "d_model * n_layers")]
"""


@pytest.fixture
def throwaway(tmp_path, monkeypatch):
    (tmp_path / "throwaway_plugin.py").write_text(THROWAWAY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "throwaway_plugin"
    sys.modules.pop("throwaway_plugin", None)


def make_distribution(root: Path, dist: str, ep_name: str, module: str, source: str) -> None:
    (root / f"{module}.py").write_text(source)
    info = root / f"{dist}-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text(f"[archsearch]\n{ep_name} = {module}\n")


def test_builtins_registered_through_the_hooks(pm):
    assert pm.names("generator") == ["budget-grid"]
    assert pm.names("estimator") == ["patchtst", "patchtst-ci"]
    sources = {i.name: i.source for i in pm.info()}
    assert sources["archsearch.plugins.budget_grid"] == "built-in"


def test_every_hook_has_a_spec_with_docstring_and_prefix():
    from archsearch.plugin import spec as hookspecs

    names = [n for n in dir(hookspecs) if n.startswith("archsearch_")]
    assert sorted(names) == sorted(KINDS.values())
    for n in names:
        assert len(getattr(hookspecs, n).__doc__.split()) > 15


def test_throwaway_generator_and_estimator_work_end_to_end(throwaway):
    pm = get_plugin_manager([throwaway], autoload=False)
    info = {i.name: i for i in pm.info()}[throwaway]
    assert info.source == "config"
    assert info.provides == {"generator": ["every-other"], "estimator": ["toy"]}
    space = ArchSpace(d_model=(64, 128), n_layers=(1, 2, 3, 4), n_heads=(2,), d_ff_ratios=(2,))
    archs = get_architectures_for_budget(
        300, space, tolerance=0.5, variant="toy", generator="every-other", plugins=pm
    )
    # toy counts d_model*n_layers: in 150..450 are 64x3=192, 64x4=256, 128x2=256, 128x3=384; every other
    assert [(a.d_model, a.n_layers, a.param_count) for a in archs] == [(64, 3, 192), (128, 2, 256)]
    assert all(isinstance(a, Architecture) for a in archs)


def test_duplicate_name_names_both_plugins(tmp_path, monkeypatch):
    (tmp_path / "dup_plugin.py").write_text(
        "from archsearch import hookimpl\n"
        "from archsearch.plugin.registry import ModelVariant\n"
        "@hookimpl\n"
        "def archsearch_register_estimators():\n"
        "    return [ModelVariant('patchtst', lambda a, s: 1, lambda a, s: None)]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as info:
        get_plugin_manager(["dup_plugin"], autoload=False)
    text = str(info.value)
    assert "estimator 'patchtst' is offered by two plugins" in text
    assert "'archsearch.plugins.patchtst' (built-in)" in text and "'dup_plugin' (config)" in text


def test_broken_config_module_is_named(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin.py").write_text("import not_a_real_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as info:
        get_plugin_manager(["broken_plugin"], autoload=False)
    assert str(info.value) == (
        "plugin 'broken_plugin' (listed under 'plugins' in the config) failed to import: "
        "ModuleNotFoundError: No module named 'not_a_real_module_xyz'"
    )


def test_misspelled_hook_is_caught(tmp_path, monkeypatch):
    (tmp_path / "typo_plugin.py").write_text(
        "from archsearch import hookimpl\n@hookimpl\ndef archsearch_register_sampler():\n    return []\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"typo_plugin.*archsearch_register_sampler"):
        get_plugin_manager(["typo_plugin"], autoload=False)


def test_entry_point_plugin_is_loaded_with_its_distribution(tmp_path, monkeypatch):
    make_distribution(tmp_path, "fake-dist", "fancy", "fancy_plugin", THROWAWAY)
    monkeypatch.syspath_prepend(str(tmp_path))
    pm = get_plugin_manager()
    info = {i.name: i for i in pm.info()}["fancy"]
    assert info.source == "entry point fancy_plugin, from distribution fake-dist 1.2"
    assert "toy" in pm.names("estimator")
    monkeypatch.setenv("ARCHSEARCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "toy" not in get_plugin_manager().names("estimator")
    sys.modules.pop("fancy_plugin", None)


def test_broken_entry_point_names_plugin_module_and_distribution(tmp_path, monkeypatch, capsys):
    make_distribution(tmp_path, "bad-dist", "bad", "bad_plugin", "raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as info:
        get_plugin_manager()
    assert str(info.value) == (
        "plugin 'bad' (bad_plugin, from distribution bad-dist 1.2) failed to import: "
        "RuntimeError: boom at import; uninstall or fix it, or set ARCHSEARCH_DISABLE_PLUGIN_AUTOLOAD=1 "
        "to load no entry points"
    )
    # `archsearch plugins` still lists everything, the broken one as broken.
    capsys.readouterr()
    assert main(["plugins"]) == 0
    out, err = capsys.readouterr()
    assert "archsearch.plugins.budget_grid" in out
    assert "bad\n    source:   entry point bad_plugin, from distribution bad-dist 1.2" in out
    assert "BROKEN:   failed to import: RuntimeError: boom at import" in out
    assert "ARCHSEARCH_DISABLE_PLUGIN_AUTOLOAD=1" in err


def test_plugins_cli_lists_builtins(capsys):
    assert main(["plugins", "--format", "json"]) == 0
    data = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert data["archsearch.plugins.budget_grid"]["provides"] == {"generator": ["budget-grid"]}
    assert data["archsearch.plugins.patchtst_ci"]["provides"] == {"estimator": ["patchtst-ci"]}


@pytest.mark.slow
def test_non_editable_install_lists_builtins_and_has_no_top_level_plugins(tmp_path):
    """Build a wheel, install it (no deps) into a fresh venv's folder, run the CLI outside the repo."""
    wheel_dir, venv = tmp_path / "wheel", tmp_path / "venv"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(REPO),
            "-w",
            wheel_dir,
        ],
        check=True,
        cwd=tmp_path,
    )
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    wheel = next(wheel_dir.glob("archsearch-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", venv / "site", wheel],
        check=True,
    )
    # The dependencies (pluggy, attrs, ...) come from this environment's site-packages, appended
    # after the fresh install; the editable finder of this checkout is not activated there.
    deps = next(p for p in sys.path if p.endswith("site-packages"))
    code = textwrap.dedent(
        """
        import sys, archsearch, archsearch.plugins, importlib.util
        assert archsearch.__file__.startswith(sys.argv[1]), archsearch.__file__
        assert importlib.util.find_spec("plugins") is None, "a top-level 'plugins' module was installed"
        from archsearch.cli import main
        raise SystemExit(main(["plugins"]))
        """
    )
    env = {"PYTHONPATH": f"{venv / 'site'}:{deps}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [venv / "bin/python", "-S", "-c", code, str(venv / "site")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "archsearch.plugins.budget_grid" in out.stdout and "estimator: patchtst-ci" in out.stdout
    assert not (venv / "site" / "plugins").exists()
    assert (venv / "site" / "archsearch" / "plugins" / "patchtst" / "__init__.py").exists()
    # The tabular benchmark's table is package data: `bench architectures` runs from a wheel too.
    assert (venv / "site" / "archsearch" / "bench" / "data" / "architectures_spy_100K.csv").exists()


def test_grid_loads_plugin_modules_and_documents_every_flag(throwaway, capsys):
    import json

    from archsearch.cli import build_parser, main

    argv = ["grid", "--budget", "300", "--tolerance", "0.5", "--model", "toy", "--generator", "every-other"]
    assert main([*argv, "--plugin", throwaway, "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["model"] == "toy" and listed["count"] >= 1
    assert all(150 <= a["param_count"] <= 450 for a in listed["architectures"])
    grid = build_parser()._subparsers._group_actions[0].choices["grid"]
    assert all(a.help for a in grid._actions), [a.dest for a in grid._actions if not a.help]
