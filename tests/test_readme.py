"""The README's two set-up commands are exactly the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"^(python3 -m venv \.venv && .+)$", text, flags=re.MULTILINE)


def test_readme_has_exactly_two_setup_commands_and_ci_runs_both() -> None:
    commands = readme_commands()
    assert len(commands) == 2, commands
    ci = (REPO / ".ci" / "run").read_text()
    for command in commands:
        assert command in ci.splitlines(), f"{command!r} is not run by .ci/run"
    assert any("pytest" in c for c in commands)


def test_readme_python_one_liners_run() -> None:
    """Every ``python -c "import arnas_zoo; ..."`` line of the README runs (offline, bundled models)."""
    import subprocess
    import sys

    text = (REPO / "README.md").read_text()
    snippets = re.findall(r'^python -c "(import arnas_zoo;[^"]+)"$', text, flags=re.MULTILINE)
    assert snippets, "the README shows how to load a pretrained model in one line"
    for code in snippets:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
        assert done.returncode == 0, done.stderr[-2000:]
