"""Publishing and loading through Hub servers on 127.0.0.1 (never the internet).

Downloads go through **olah**, a real self-hosted Hugging Face Hub mirror (offline mode, serving
local git repositories). Uploads go through :class:`tests.hub_servers.HubUploadDouble`, a TEST
DOUBLE of the Hub's write endpoints (create repo, validate-yaml, preupload, NDJSON commit, tag) that
turns each commit into a git commit olah then serves. See tests/hub_servers.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import arnas_zoo
from arnas_zoo import create_model
from arnas_zoo.checkpoint import save_folder, sha256_file
from arnas_zoo.errors import CheckpointError, UnknownModelError
from arnas_zoo.hub import HubUnavailableError
from arnas_zoo.pretrained import PretrainedSpec, register, unregister
from tests.hub_servers import HubUploadDouble, OlahServer, commit_files, make_git_repo

TOKEN = "hf_test_token"


@pytest.fixture(scope="module")
def olah(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OlahServer]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed (olah serves git repositories)")
    pytest.importorskip("olah", reason="olah (the local Hub mirror) is a dev dependency: pip install -e '.[dev]'")
    server = OlahServer(tmp_path_factory.mktemp("olah"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def double(olah: OlahServer) -> Iterator[HubUploadDouble]:
    server = HubUploadDouble(olah.mirrors, token=TOKEN)
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def hub_env(olah: OlahServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Downloads from olah into a fresh cache; HF_HUB_OFFLINE unset."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_ENDPOINT", olah.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return cache


def _tiny(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("arnas", init_channels=4, layers=5, input_size=16, threat_model="linf", eps=8 / 255)


def _folder(tmp_path: Path, seed: int, name: str = "ck") -> Path:
    metrics = {
        "data": {"dataset": "cifar10", "split": "validation", "n": 16},
        "attacks": [
            {"name": "pgd-20", "norm": "linf", "eps": 8 / 255, "steps": 20, "restarts": 1, "robust_accuracy": 0.25}
        ],
    }
    return save_folder(_tiny(seed), tmp_path / name, metrics=metrics)


def _publish(
    folder: Path, repo_id: str, double: HubUploadDouble, monkeypatch: pytest.MonkeyPatch, tag: str | None = None
):
    from export.hub_publish import build_hub_folder, publish

    monkeypatch.setenv("HF_ENDPOINT", double.endpoint)
    hub_folder = build_hub_folder(folder, folder.parent / f"{folder.name}-hub", repo_id=repo_id)
    return publish(hub_folder, repo_id, tag=tag, token=TOKEN)


def test_publish_then_load_by_id_and_tag(
    olah: OlahServer, double: HubUploadDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _folder(tmp_path, seed=1)
    result = _publish(folder, "zoo/round-trip", double, monkeypatch, tag="v1.0")
    assert len(result.commit) == 40 and result.sha256 == sha256_file(folder / "model.safetensors")
    assert any(r.startswith("POST /api/models/zoo/round-trip/commit/main") for r in double.requests)
    monkeypatch.setenv("HF_ENDPOINT", olah.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    x = torch.rand(4, 3, 16, 16)
    expected = arnas_zoo.load(str(folder))(x)
    for spec in ("zoo/round-trip", "zoo/round-trip@v1.0", f"zoo/round-trip@{result.commit}"):
        model = arnas_zoo.load(spec)
        assert not model.training
        assert torch.equal(model(x), expected), spec
        assert model.metrics["attacks"][0]["robust_accuracy"] == 0.25
    assert arnas_zoo.load("zoo/round-trip", revision="v1.0").config == model.config


def test_revisions_tags_and_pinned_registry_entry(
    olah: OlahServer, double: HubUploadDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _publish(_folder(tmp_path, seed=2, name="a"), "zoo/versions", double, monkeypatch, tag="v1")
    second = _publish(_folder(tmp_path, seed=3, name="b"), "zoo/versions", double, monkeypatch, tag="v2")
    assert first.commit != second.commit
    monkeypatch.setenv("HF_ENDPOINT", olah.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    x = torch.rand(2, 3, 16, 16)
    old, new = arnas_zoo.load(str(tmp_path / "a"))(x), arnas_zoo.load(str(tmp_path / "b"))(x)
    assert torch.equal(arnas_zoo.load("zoo/versions@v1")(x), old)
    assert torch.equal(arnas_zoo.load(f"zoo/versions@{first.commit}")(x), old)
    assert torch.equal(arnas_zoo.load("zoo/versions")(x), new)  # main follows the latest commit
    assert torch.equal(arnas_zoo.load("zoo/versions@v2")(x), new)
    # olah answers an unknown revision as "repository not found" (the Hub: "revision not found").
    with pytest.raises(UnknownModelError, match="(has no revision 'v3'|at revision 'v3' not found)"):
        arnas_zoo.load("zoo/versions@v3")

    # A registry entry pinned at the first commit keeps loading the old weights, sha256-checked.
    pinned = PretrainedSpec(
        name="arnas.versions_linf",
        arch="arnas",
        sha256=first.sha256,
        dataset="cifar10",
        threat_model="linf",
        eps=8 / 255,
        description="t",
        repo_id="zoo/versions",
        revision=first.commit,
    )
    register(pinned)
    try:
        assert torch.equal(arnas_zoo.load("arnas.versions_linf")(x), old)
    finally:
        unregister(pinned.name)
    wrong = PretrainedSpec(
        name="arnas.versions_linf",
        arch="arnas",
        sha256=first.sha256,
        dataset="cifar10",
        threat_model="linf",
        eps=8 / 255,
        description="t",
        repo_id="zoo/versions",
        revision=second.commit,
    )
    register(wrong)
    try:
        with pytest.raises(CheckpointError, match="does not match the pinned"):
            arnas_zoo.load("arnas.versions_linf")
    finally:
        unregister(wrong.name)


def test_cache_and_offline_mode(
    olah: OlahServer, tmp_path: Path, hub_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_git_repo(olah.mirrors, "zoo/offline")
    folder = _folder(tmp_path, seed=4)
    commit_files(
        repo, {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}, "add model"
    )
    x = torch.rand(2, 3, 16, 16)
    expected = arnas_zoo.load("zoo/offline")(x)  # first download fills the cache
    assert any(hub_env.rglob("model.safetensors"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert torch.equal(arnas_zoo.load("zoo/offline")(x), expected)  # served from the cache
    with pytest.raises(HubUnavailableError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE=1"):
        arnas_zoo.load("zoo/never-downloaded")
    # Online but the server is gone: cached models still load, others fail with the typed error.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(HubUnavailableError, match="cannot reach http://127.0.0.1:9"):
        arnas_zoo.load("zoo/never-downloaded")


def test_repo_errors(olah: OlahServer, tmp_path: Path, hub_env: Path) -> None:
    repo = make_git_repo(olah.mirrors, "zoo/not-a-model")
    commit_files(repo, {"README.md": b"# just text\n"}, "readme only")
    with pytest.raises(CheckpointError, match="has no config.json: it is not an arnas-zoo model"):
        arnas_zoo.load("zoo/not-a-model")
    with pytest.raises(UnknownModelError, match="not found at"):
        arnas_zoo.load("zoo/does-not-exist")
    # weights that do not fit their config
    bad = make_git_repo(olah.mirrors, "zoo/misfit")
    small, large = (
        _folder(tmp_path, seed=5, name="small"),
        save_folder(create_model("arnas", init_channels=8, layers=5, input_size=16), tmp_path / "large"),
    )
    commit_files(
        bad,
        {
            "config.json": (small / "config.json").read_bytes(),
            "model.safetensors": (large / "model.safetensors").read_bytes(),
        },
        "mismatch",
    )
    with pytest.raises(CheckpointError, match="weights do not fit the config"):
        arnas_zoo.load("zoo/misfit")


def test_hub_cli_dry_run_publish_and_auth(
    olah: OlahServer, double: HubUploadDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from export.cli import main

    folder = _folder(tmp_path, seed=6)
    runner = CliRunner()
    dry = runner.invoke(main, ["hub", str(folder), "--repo-id", "zoo/cli", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "dry run" in dry.output and (folder / "hub" / "README.md").is_file()
    assert not (olah.mirrors / "models" / "zoo" / "cli").exists()  # nothing uploaded

    monkeypatch.setenv("HF_ENDPOINT", double.endpoint)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    denied = runner.invoke(
        main, ["hub", str(folder), "--repo-id", "zoo/cli", "--out", str(tmp_path / "o1"), "--token", "wrong"]
    )
    assert denied.exit_code == 2 and "failed with HTTP 401" in denied.output
    published = runner.invoke(
        main,
        ["hub", str(folder), "--repo-id", "zoo/cli", "--tag", "v1.0", "--private", "--out", str(tmp_path / "o2")],
        env={"HF_TOKEN": TOKEN},
    )
    assert published.exit_code == 0, published.output
    assert "tag v1.0" in published.output and "--revision " in published.output
    assert double.created["zoo/cli"]["visibility"] == "private"
    monkeypatch.setenv("HF_ENDPOINT", olah.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(arnas_zoo.load("zoo/cli@v1.0")(x), arnas_zoo.load(str(folder))(x))
    readme = olah.mirrors / "models" / "zoo" / "cli" / "README.md"
    from huggingface_hub import ModelCard

    assert ModelCard(readme.read_text()).data.library_name == "arnas-zoo"


def test_hub_cli_reuse_publishes_the_folder_built_before_and_refuses_a_stale_one(
    olah: OlahServer, double: HubUploadDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scripts/zoo_add.py --hub-folder builds FOLDER/hub for review; `export hub --reuse` then publishes it."""
    from export.cli import main

    folder = _folder(tmp_path, seed=7)
    runner = CliRunner()
    assert runner.invoke(main, ["hub", str(folder), "--repo-id", "zoo/reuse", "--dry-run"]).exit_code == 0
    again = runner.invoke(main, ["hub", str(folder), "--repo-id", "zoo/reuse", "--dry-run"])
    assert again.exit_code == 2 and "not empty" in again.output  # without --reuse it is never overwritten
    other = runner.invoke(main, ["hub", str(folder), "--repo-id", "zoo/other", "--reuse", "--dry-run"])
    assert other.exit_code == 2 and "not for zoo/other" in other.output
    monkeypatch.setenv("HF_ENDPOINT", double.endpoint)
    published = runner.invoke(
        main, ["hub", str(folder), "--repo-id", "zoo/reuse", "--reuse", "--tag", "v1.0"], env={"HF_TOKEN": TOKEN}
    )
    assert published.exit_code == 0, published.output
    monkeypatch.setenv("HF_ENDPOINT", olah.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(arnas_zoo.load("zoo/reuse@v1.0")(x), arnas_zoo.load(str(folder))(x))
    (folder / "hub" / "metrics.json").write_text("{}")  # the copy no longer holds the checkpoint's file
    stale = runner.invoke(main, ["hub", str(folder), "--repo-id", "zoo/reuse", "--reuse", "--dry-run"])
    assert stale.exit_code == 2 and "rebuild the Hub-ready folder" in stale.output


def test_hub_spec_works_where_folders_and_zoo_names_do(olah: OlahServer, tmp_path: Path, hub_env: Path) -> None:
    """info, genotype show, export card and create_model(pretrained=True) take 'org/name[@rev]' (one resolver)."""
    from click.testing import CliRunner

    from arnas_zoo.cli import main
    from export.cli import main as export_main

    folder = _folder(tmp_path, seed=7)
    repo = make_git_repo(olah.mirrors, "zoo/named")
    commit = commit_files(
        repo, {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}, "add model"
    )
    runner = CliRunner()
    info = runner.invoke(main, ["info", "zoo/named", "--json"])
    assert info.exit_code == 0, info.output
    assert json.loads(info.stdout)["init_channels"] == 4 and json.loads(info.stdout)["input_shape"] == [3, 16, 16]
    shown = runner.invoke(main, ["genotype", "show", f"zoo/named@{commit}"])
    assert shown.exit_code == 0 and "space=arnas" in shown.stdout
    card = runner.invoke(export_main, ["card", "zoo/named"])
    assert card.exit_code == 0 and "the robustness of these weights is unknown" in card.stdout
    model = arnas_zoo.create_model("zoo/named", pretrained=True)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(model(x), arnas_zoo.load("zoo/named")(x))
    missing = runner.invoke(main, ["info", "zoo/not-there"])
    assert missing.exit_code == 2 and "not found at" in missing.output


def test_a_tampered_refs_file_in_the_cache_is_not_followed(
    olah: OlahServer, tmp_path: Path, hub_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache whose refs/main says '../..' pointed the offline loader outside the snapshots; refused now."""
    repo = make_git_repo(olah.mirrors, "zoo/tampered")
    folder = _folder(tmp_path, seed=8)
    commit_files(
        repo, {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}, "add model"
    )
    arnas_zoo.load("zoo/tampered")  # fills the cache
    refs = next(hub_env.rglob("models--zoo--tampered/refs/main"))
    refs.write_text("../..")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="not a snapshot folder"):
        arnas_zoo.load("zoo/tampered")
