"""arnas_zoo.atomic: a write that fails leaves the old file whole and no temporary file behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from arnas_zoo.atomic import atomic_write_json, replacing, temporary_path


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"clean": 0.5})
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_text('{"clean": 0.')  # half written, then the writer dies
        raise RuntimeError("killed")
    assert target.read_text() == '{\n "clean": 0.5\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_the_temporary_name_is_hidden_beside_the_target_and_keeps_its_suffix(tmp_path: Path) -> None:
    tmp = temporary_path(tmp_path / "alphas.npz")  # numpy appends .npz to a name without it
    assert tmp.parent == tmp_path and tmp.name.startswith(".alphas.tmp-") and tmp.suffix == ".npz"
    with replacing(tmp_path / "plot.png") as out:
        out.write_bytes(b"png")
    assert (tmp_path / "plot.png").read_bytes() == b"png" and not out.exists()
