"""The installable package: what the wheel holds, the command line's lazy imports, the stored counts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def test_every_arnas_zoo_subpackage_is_in_the_wheel_and_no_generic_name() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = set(config["packages"])
    found = {".".join(p.relative_to(REPO).parts[:-1]) for p in (REPO / "arnas_zoo").rglob("__init__.py")}
    assert found <= packages, f"add {sorted(found - packages)} to [tool.setuptools] packages"
    assert "export" not in packages and "search" not in packages  # generic top-level names stay out
    # the export tooling, the search and the torch-free runtime, each under its own name
    assert config["package-dir"] == {
        "arnas_zoo_export": "export",
        "arnas_zoo_search": "search",
        "arnas_zoo_runtime": "runtime/arnas_zoo_runtime",
    }
    search = {".".join(("arnas_zoo_search", *p.relative_to(REPO / "search").parts[:-1])).rstrip(".")
              for p in (REPO / "search").rglob("__init__.py")}  # fmt: skip
    assert search <= packages, f"add {sorted(search - packages)} to [tool.setuptools] packages"


def test_the_installed_search_runs_under_its_own_name_and_through_arnas_zoo(tmp_path: Path) -> None:
    """``arnas_zoo_search`` imports nothing under the checkout's name ``search`` (its imports are relative), and
    ``arnas-zoo search`` (the entry point) lists every strategy's presets."""
    code = """
import sys
from arnas_zoo_search.strategy import strategies
print(sorted(strategies()))
print(sorted(m for m in sys.modules if m == "search" or m.startswith("search.")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["['arnas', 'evolve', 'robnet', 'roco']", "[]"]
    listed = subprocess.run(
        [sys.executable, "-m", "arnas_zoo.cli", "search", "presets"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert listed.returncode == 0, listed.stderr
    for strategy, preset in (("arnas", "dsrna-cb-tiny"), ("robnet", "robnet-tiny"), ("roco", "roco-tiny"),
                             ("evolve", "evolve-darts-tiny")):  # fmt: skip
        assert f"{strategy}: " in listed.stdout and f"  {preset} " in listed.stdout


def _imported_modules(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_help_list_and_info_do_not_import_torch() -> None:
    for argv in (["--help"], ["list"], ["info", "arnas"], ["pretrained"], ["eval", "--help"]):
        code = f"""
import sys
from click.testing import CliRunner
from arnas_zoo.cli import main
result = CliRunner().invoke(main, {argv!r})
assert result.exit_code == 0, result.output
"""
        assert "torch" not in _imported_modules(code), argv


def test_stored_architecture_counts_equal_a_fresh_count() -> None:
    from arnas_zoo.introspect import architecture_table, stored_stats

    fresh = {
        row["name"]: {k: row[k] for k in ("params", "params_with_aux", "macs", "flops_paper")}
        for row in architecture_table(fresh=True)
    }
    assert fresh == stored_stats(), "run scripts/update_registry_stats.py"


def test_the_thread_policy_sleeps_instead_of_spinning_unless_told_otherwise() -> None:
    for env, expected in (
        ({}, "PASSIVE"),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"),
        ({"ARNAS_ZOO_THREAD_POLICY": "default"}, "unset"),
    ):
        code = "import os, arnas_zoo; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
        import os

        clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "ARNAS_ZOO_THREAD_POLICY")}
        out = subprocess.run(
            [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=60, cwd=REPO
        )
        assert out.stdout.strip() == expected, (env, out.stdout, out.stderr)
