"""Parking runs where they outlive the machine (``arnas-zoo park`` / ``unpark``; arnas_zoo/runs/park.py).

The end-to-end test is the promise itself: a training killed after its first saved state, parked, brought
back into another folder (another machine) and resumed there ends with the weights of a run never
interrupted. The rest checks what a park leaves out, what an unpark refuses (damage, extra files, paths
that escape, local files that differ) and the Hub round trip through the loopback servers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from arnas_zoo.checkpoint import load_folder, sha256_file
from arnas_zoo.cli import main
from arnas_zoo.errors import CheckpointError, ConfigError, RunFolderBusyError, UntrustedFileError
from arnas_zoo.run_status import run_position
from arnas_zoo.runs.park import MANIFEST, NothingParkedError, park, unpark, verify_snapshot
from arnas_zoo.runs.state import save_state
from tests.hub_servers import HubUploadDouble, OlahServer

ROOT_DIR = Path(__file__).resolve().parents[1]
TRAIN = [
    "train", "arnas", "--recipe", "cpu_digits", "--dataset", "digits", "--val-rows", "100",
    "--set", "epochs=2", "--set", "train_n=64", "--set", "batch_size=32", "--set", "steps=1",
    "--set", "val_n=32", "--set", "val_steps=1", "--model-set", "init_channels=4", "--model-set", "layers=5",
    "--eval-attacks", "none", "--no-progress",
]  # fmt: skip


def _train(out: Path, *extra: str, kill_after: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT_DIR)}
    env.pop("ARNAS_ZOO_KILL_AFTER", None)
    if kill_after:
        env["ARNAS_ZOO_KILL_AFTER"] = kill_after
    cmd = [sys.executable, "-m", "arnas_zoo.cli", *TRAIN, "--out", str(out), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_folder(folder).state_dict()


def _state(path: Path, value: float = 1.0, epoch: int = 1) -> None:
    header = {"schema": "test", "epoch": epoch, "step": 3, "history": [], "settings": {}}
    save_state(path, {"w": torch.full((4,), value)}, header)


def _root(tmp_path: Path) -> Path:
    """A folder of runs as the pool leaves it: a run, its locks, a claim, a marker, a shard result."""
    root = tmp_path / "root"
    _state(root / "a" / "train_state.safetensors", 1.0)
    _state(root / "a" / "train_state.safetensors", 2.0)  # the first becomes train_state.prev.safetensors
    (root / "a" / ".lock").write_text("{}")
    (root / "a" / "log.jsonl").write_text('{"epoch": 1}\n')
    (root / "a" / "jobs").mkdir()
    (root / "a" / "jobs" / "k1.json").write_text('{"result": 1}')
    (root / "a" / "jobs" / "k1.claim").write_text("")
    (root / ".a.lock").write_text("")
    (root / "a.done").write_text("")
    (root / "x.tmp").write_text("half")
    return root


def test_a_run_parked_mid_training_resumes_elsewhere_to_the_uninterrupted_weights(tmp_path):
    root, dest, other, whole = tmp_path / "root", tmp_path / "dest", tmp_path / "machine2", tmp_path / "whole"
    killed = _train(root / "run", kill_after="state:1")
    assert killed.returncode == -9, killed.stderr[-2000:]
    parked = park(root, str(dest))
    assert parked.runs["run"]["epoch"] == run_position(root / "run").epoch
    shutil.rmtree(root)  # the first machine is gone
    back = unpark(str(dest), other)
    assert back.added and not back.replaced
    resumed = _train(other / "run", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    full = _train(whole)
    assert full.returncode == 0, full.stderr[-2000:]
    a, b = _weights(other / "run" / "last"), _weights(whole / "last")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_park_leaves_out_locks_claims_temporaries_and_previous_states(tmp_path):
    root = _root(tmp_path)
    parked = park(root, str(tmp_path / "dest"))
    snap = tmp_path / "dest" / "parks" / (tmp_path / "dest" / "LATEST").read_text().strip()
    manifest = json.loads((snap / MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["a.done", "a/jobs/k1.json", "a/log.jsonl", "a/train_state.safetensors"]
    assert manifest["runs"]["a"]["epoch"] == 1 and manifest["runs"]["a"]["step"] == 3
    assert parked.files == 4 and "a: training epoch 2 of ?, step 3 of ?" in parked.format()
    assert not (root / ".park.lock").read_text()  # the lock file exists only as a lock
    verify_snapshot(snap)


def test_unpark_adds_missing_files_skips_identical_and_refuses_differences_unless_forced(tmp_path):
    root = _root(tmp_path)
    park(root, str(tmp_path / "dest"))
    (root / "a" / "log.jsonl").unlink()
    (root / "a" / "jobs" / "k1.json").write_text('{"result": 2}')
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    dry = unpark(str(tmp_path / "dest"), root, dry_run=True)
    assert dry.added == ["a/log.jsonl"] and dry.replaced == ["a/jobs/k1.json"] and "nothing written" in dry.format()
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    with pytest.raises(ConfigError, match="differ from the parked ones"):
        unpark(str(tmp_path / "dest"), root)
    assert not (root / "a" / "log.jsonl").exists()  # a refused unpark writes nothing
    done = unpark(str(tmp_path / "dest"), root, force=True)
    assert done.added == ["a/log.jsonl"] and done.replaced == ["a/jobs/k1.json"]
    assert sorted(done.identical) == ["a.done", "a/train_state.safetensors"]
    assert (root / "a" / "jobs" / "k1.json").read_text() == '{"result": 1}'
    assert (Path(done.set_aside) / "a" / "jobs" / "k1.json").read_text() == '{"result": 2}'  # nothing lost


@pytest.mark.parametrize("damage", ["flip", "extra", "missing", "escape", "state", "position"])
def test_unpark_refuses_a_damaged_park_before_writing_anything(tmp_path, damage):
    root = _root(tmp_path)
    park(root, str(tmp_path / "dest"))
    snap = tmp_path / "dest" / "parks" / (tmp_path / "dest" / "LATEST").read_text().strip()
    manifest = json.loads((snap / MANIFEST).read_text())
    if damage == "flip":
        data = bytearray((snap / "a" / "log.jsonl").read_bytes())
        data[0] ^= 1
        (snap / "a" / "log.jsonl").write_bytes(bytes(data))
    elif damage == "extra":
        (snap / "a" / "evil.py").write_text("print(1)")
    elif damage == "missing":
        (snap / "a.done").unlink()
    elif damage == "escape":
        manifest["files"]["../outside"] = manifest["files"].pop("a.done")
        (snap / MANIFEST).write_text(json.dumps(manifest))
    elif damage == "position":
        manifest["runs"]["a"]["epoch"] = "9"
        (snap / MANIFEST).write_text(json.dumps(manifest))
    else:  # a state whose bytes and listed digest agree but whose own digest does not: re-listed after editing
        path = snap / "a" / "train_state.safetensors"
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))
        manifest["files"]["a/train_state.safetensors"]["sha256"] = sha256_file(path)
        (snap / MANIFEST).write_text(json.dumps(manifest))
    target = tmp_path / "new"
    with pytest.raises((UntrustedFileError, CheckpointError)):
        unpark(str(tmp_path / "dest"), target)
    assert not target.exists() or not any(target.iterdir())


def test_a_state_that_does_not_verify_is_not_parked(tmp_path):
    root = _root(tmp_path)
    path = root / "a" / "train_state.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="did not verify"):
        park(root, str(tmp_path / "dest"))
    assert not (tmp_path / "dest" / "LATEST").exists()


def test_folder_parks_keep_the_newest_and_earlier_ones_can_be_unparked(tmp_path):
    root, dest = _root(tmp_path), tmp_path / "dest"
    names = []
    for epoch in (1, 2, 3):
        _state(root / "a" / "train_state.safetensors", float(epoch), epoch=epoch)
        names.append(park(root, str(dest), keep=2).revision)
    assert sorted(os.listdir(dest / "parks")) == names[1:]
    assert (dest / "LATEST").read_text().strip() == names[2]
    assert unpark(str(dest), tmp_path / "n2", at=names[1]).runs["a"]["epoch"] == 2
    assert unpark(str(dest), tmp_path / "n3").runs["a"]["epoch"] == 3
    with pytest.raises(ConfigError, match="no snapshot"):
        unpark(str(dest), tmp_path / "n1", at=names[0])


def test_a_destination_inside_root_is_refused(tmp_path):
    root = _root(tmp_path)
    for dest in (root, root / "parks"):
        with pytest.raises(ConfigError, match="every park would hold the ones before it"):
            park(root, str(dest))


def test_one_park_of_a_folder_at_a_time(tmp_path):
    import fcntl

    root = _root(tmp_path)
    with open(root / ".park.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(RunFolderBusyError, match="another park"):
            park(root, str(tmp_path / "dest"))


def test_cli_park_and_unpark(tmp_path):
    root = _root(tmp_path)
    runner = CliRunner()
    out = runner.invoke(main, ["park", str(root), str(tmp_path / "dest"), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["files"] == 4
    back = runner.invoke(main, ["unpark", str(tmp_path / "dest"), str(tmp_path / "new")])
    assert back.exit_code == 0 and "4 files added" in back.output, back.output
    for command, says in (("park", "Snapshot the runs under ROOT"), ("unpark", "Bring runs parked at SOURCE")):
        helped = runner.invoke(main, [command, "--help"])
        assert helped.exit_code == 0 and says in helped.output, helped.output
    again = runner.invoke(main, ["unpark", str(tmp_path / "nothing"), str(tmp_path / "new2")])
    assert again.exit_code != 0 and "nothing has been parked here" in again.output


# ---- the Hub: uploads through the test double, downloads through olah ---------------------------------
TOKEN = "hf_park_token"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OlahServer, HubUploadDouble]]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed (olah serves git repositories)")
    pytest.importorskip("olah", reason="olah (the local Hub mirror) is a dev dependency: pip install -e '.[dev]'")
    olah = OlahServer(tmp_path_factory.mktemp("olah"))
    olah.start()
    double = HubUploadDouble(olah.mirrors, token=TOKEN, read_from=olah.endpoint)
    double.start()
    yield olah, double
    double.stop()
    olah.stop()


def test_hub_park_round_trip_latest_and_earlier(hub, tmp_path, monkeypatch):
    olah, double = hub
    root = _root(tmp_path)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", double.endpoint)
    first = park(root, "hf://lab/runs")
    assert double.created["lab/runs"]["visibility"] == "private"
    _state(root / "a" / "train_state.safetensors", 5.0, epoch=2)
    second = park(root, "hf://lab/runs")
    assert first.revision != second.revision
    monkeypatch.setenv("HF_ENDPOINT", olah.endpoint)
    latest = unpark("hf://lab/runs", tmp_path / "latest")
    assert latest.runs["a"]["epoch"] == 2
    assert sorted(latest.added) == ["a.done", "a/jobs/k1.json", "a/log.jsonl", "a/train_state.safetensors"]
    assert not (tmp_path / "latest" / ".cache").exists() and not (tmp_path / "latest" / MANIFEST).exists()
    earlier = unpark("hf://lab/runs", tmp_path / "earlier", at=first.revision)
    assert earlier.runs["a"]["epoch"] == 1
    with pytest.raises(NothingParkedError, match="no repo lab/none"):
        unpark("hf://lab/none", tmp_path / "none")
    monkeypatch.setenv("HF_ENDPOINT", double.endpoint)  # reads through the double pass on to olah
    with pytest.raises(ConfigError, match="behind the last park"):
        park(tmp_path / "earlier", "hf://lab/runs")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    from arnas_zoo.runs.park_hub import ParkTransferError

    with pytest.raises(ParkTransferError, match="unparking from lab/runs failed"):
        unpark("hf://lab/runs", tmp_path / "none")


def test_a_park_that_would_go_back_is_refused_unless_forced(tmp_path):
    root, dest = _root(tmp_path), str(tmp_path / "dest")
    _state(root / "a" / "train_state.safetensors", 3.0, epoch=3)
    park(root, dest)
    fresh = tmp_path / "fresh"  # a new machine that started the run again instead of unparking it
    _state(fresh / "a" / "train_state.safetensors", 1.0, epoch=1)
    with pytest.raises(ConfigError, match=r"behind the last park .*a: parked at epoch 3 step 3, here epoch 1"):
        park(fresh, dest)
    (fresh / "a.done").write_text("")
    _state(fresh / "a" / "train_state.safetensors", 4.0, epoch=4)
    park(fresh, dest)  # further along now: parked
    (fresh / "a.done").unlink()
    with pytest.raises(ConfigError, match=r"a.done: parked, not here"):
        park(fresh, dest)
    assert park(fresh, dest, force=True).runs["a"]["epoch"] == 4


def test_unpark_missing_ok_is_a_first_start(tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["unpark", str(tmp_path / "never"), str(tmp_path / "root"), "--missing-ok"])
    assert out.exit_code == 0 and "nothing to unpark" in out.output, out.output


def test_unpark_says_when_finished_shards_were_signed_with_another_key(tmp_path, monkeypatch):
    from arnas_zoo.jobs import Job, _record, read_result

    job = Job("counted", {"i": 1})
    root = _root(tmp_path)
    other_machine, this_machine = bytes(range(32)), bytes(range(1, 33))
    (root / "a" / "jobs" / f"{job.key}.json").write_text(json.dumps(_record(job, {}, {"ok": 1}, other_machine)))
    park(root, str(tmp_path / "dest"))
    monkeypatch.setenv("ARNAS_ZOO_JOB_KEY", this_machine.hex())
    here = unpark(str(tmp_path / "dest"), tmp_path / "new")
    assert here.foreign_results == 1 and "computed again" in here.format()
    assert read_result(tmp_path / "new" / "a", job) is None  # what the message warns of: not reused
    monkeypatch.setenv("ARNAS_ZOO_JOB_KEY", other_machine.hex())
    same = unpark(str(tmp_path / "dest"), tmp_path / "new2")
    assert same.foreign_results == 0 and "computed again" not in same.format()
    assert read_result(tmp_path / "new2" / "a", job) == {"ok": 1}  # the same key: reused
