"""Nothing on disk is trusted: job results signed and checked against their inputs, one writer per run
folder, and one bounded typed JSON reader (issue findings 1, 2, 4 and 5, reproduced and refused)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arnas_zoo.errors import ConfigError, RunFolderBusyError, UntrustedFileError
from arnas_zoo.jobs import Job, read_result, register_kind, result_path, run_jobs
from arnas_zoo.runs.lock import RunFolderLock
from arnas_zoo.safe_json import read_json

REPO = Path(__file__).resolve().parents[1]
register_kind("test-square", "job_kinds:square")


@pytest.fixture(autouse=True)
def _own_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a fresh signing key per test
    monkeypatch.delenv("ARNAS_ZOO_JOB_KEY", raising=False)


def _done(tmp_path: Path, x: int = 7) -> tuple[Path, Job]:
    run = tmp_path / "run"
    job = Job("test-square", {"x": x})
    assert run_jobs([job], run, progress=False).ran == 1
    return run, job


def test_an_edited_result_is_recomputed_not_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run, job = _done(tmp_path)
    path = result_path(run, job)
    record = json.loads(path.read_text())
    record["result"]["square"] = 50  # the forger's figure
    path.write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING, logger="arnas_zoo.jobs"):
        again = run_jobs([job], run, progress=False)
    assert again.ran == 1 and again.results[job.key]["square"] == 49  # recomputed, never 50
    assert "digest does not match" in caplog.text and "recomputing" in caplog.text


def test_a_forger_who_recomputes_a_plain_digest_is_still_refused(tmp_path: Path) -> None:
    run, job = _done(tmp_path)
    path = result_path(run, job)
    record = json.loads(path.read_text())
    record["result"]["square"] = 50
    body = json.dumps({"job": record["job"], "inputs": record["inputs"], "result": record["result"]}, sort_keys=True)
    record["digest"] = hashlib.sha256(body.encode()).hexdigest()  # no key: the digest cannot be forged
    path.write_text(json.dumps(record))
    assert read_result(run, job) is None


def test_results_of_a_changed_model_folder_are_stale(tmp_path: Path) -> None:
    """Finding 2: the same --run-dir and model path, new weights: the old figures must not come back."""
    import torch

    from arnas_zoo import create_model
    from arnas_zoo.checkpoint import save_folder
    from arnas_zoo.evaluate.shards import shard_jobs

    torch.manual_seed(0)
    folder = save_folder(create_model("resnet18", init_channels=4, in_channels=1, input_size=16), tmp_path / "m")
    jobs = shard_jobs(str(folder), dataset="digits", n_points=8, attacks=["fgsm"], eps=0.1, batch_size=8, device="cpu")
    run = tmp_path / "run"
    first = run_jobs(jobs, run, progress=False)
    assert first.ran == 1 and read_result(run, jobs[0]) is not None
    torch.manual_seed(1)
    save_folder(create_model("resnet18", init_channels=4, in_channels=1, input_size=16), folder)  # replaced in place
    assert read_result(run, jobs[0]) is None  # its input changed: not trusted
    assert run_jobs(jobs, run, progress=False).ran == 1


def test_results_on_changed_data_are_stale(tmp_path: Path) -> None:
    """The same model and run folder, another data file under the same name: the old figures must not come back."""
    import numpy as np
    import torch

    from arnas_zoo import create_model
    from arnas_zoo.checkpoint import save_folder
    from arnas_zoo.evaluate.shards import shard_inputs, shard_jobs

    torch.manual_seed(0)
    folder = save_folder(create_model("resnet18", init_channels=4, in_channels=1, input_size=16), tmp_path / "m")
    data = tmp_path / "points.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.integers(0, 256, (8, 16, 16, 1), dtype=np.uint8), y=rng.integers(0, 10, 8))
    jobs = shard_jobs(str(folder), dataset=str(data), n_points=8, attacks=["fgsm"], eps=0.1, batch_size=8, device="cpu")
    assert data in shard_inputs(jobs[0].args, tmp_path)  # the data file is an input, digested like the weights
    run = tmp_path / "run"
    assert run_jobs(jobs, run, progress=False).ran == 1 and read_result(run, jobs[0]) is not None
    np.savez(data, x=rng.integers(0, 256, (8, 16, 16, 1), dtype=np.uint8), y=rng.integers(0, 10, 8))  # new points
    assert read_result(run, jobs[0]) is None
    assert run_jobs(jobs, run, progress=False).ran == 1


_GENUINE = {"x": 7, "square": 49, "digest": hashlib.sha256(b"7").hexdigest()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edit=st.one_of(
        st.tuples(st.just("flip"), st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=7)),
        st.tuples(st.just("truncate"), st.integers(min_value=0, max_value=10_000), st.just(0)),
        st.tuples(st.just("append"), st.binary(min_size=1, max_size=64), st.just(0)),
        st.tuples(st.just("replace"), st.binary(max_size=256), st.just(0)),
        st.tuples(
            st.just("json"), st.recursive(st.none() | st.integers() | st.text(), st.lists, max_leaves=8), st.just(0)
        ),
    )
)
def test_no_corruption_of_a_result_file_is_trusted_or_crashes(tmp_path: Path, edit: tuple) -> None:
    """Property: whatever is done to a result file, reading gives the genuine result or None, never another value
    and never an untyped error."""
    run = tmp_path / "fuzz"
    job = Job("test-square", {"x": 7})
    if not result_path(run, job).is_file():
        run_jobs([job], run, progress=False)
    path = result_path(run, job)
    genuine = path.read_bytes()
    kind, arg, bit = edit
    if kind == "flip":
        data = bytearray(genuine)
        data[arg % len(data)] ^= 1 << bit
        path.write_bytes(bytes(data))
    elif kind == "truncate":
        path.write_bytes(genuine[: arg % len(genuine)])
    elif kind == "append":
        path.write_bytes(genuine + arg)
    elif kind == "replace":
        path.write_bytes(arg)
    else:
        path.write_text(json.dumps(arg))
    try:
        got = read_result(run, job)
        assert got is None or got == _GENUINE
    finally:
        path.write_bytes(genuine)


def test_safe_json_types_every_hostile_file(tmp_path: Path) -> None:
    cases = {
        "binary": bytes(range(256)) * 8,  # not UTF-8
        "deep": b"[" * 100_000,  # RecursionError in the parser
        "text": b"not json at all",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(UntrustedFileError, match=str(path)):
            read_json(path)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2048)
    with pytest.raises(UntrustedFileError, match="exceeds the limit of 1,024"):
        read_json(big, max_bytes=1024)
    (tmp_path / "ok.json").write_text('{"a": [1]}')
    assert read_json(tmp_path / "ok.json") == {"a": [1]}


def test_cli_status_on_a_hostile_plan_is_one_line(tmp_path: Path) -> None:
    from arnas_zoo.cli import main

    run, job = _done(tmp_path)
    (run / "jobs" / "plan.json").write_bytes(b"[" * 100_000)
    result = CliRunner().invoke(main, ["status", str(run)])
    assert result.exit_code == 0 and "1 done" in result.output and "Traceback" not in result.output


# ---- one writer per run folder ----------------------------------------------------------------------
_HOLD = """
import sys, time
from arnas_zoo.runs.lock import RunFolderLock
with RunFolderLock(sys.argv[1], "training"):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(folder: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    """Finding 4: two runs into one folder; the second is refused at once, naming the first."""
    run = tmp_path / "run"
    proc = _holder(run, 30)
    try:
        with pytest.raises(RunFolderBusyError, match=rf"in use by another training \(pid {proc.pid} on "):
            run_jobs([Job("test-square", {"x": 1})], run, progress=False)
        assert not (run / "jobs" / f"{Job('test-square', {'x': 1}).key}.json").exists()
    finally:
        proc.kill()
        proc.wait()
    # the kernel released the lock of the killed holder: the next run goes ahead
    assert run_jobs([Job("test-square", {"x": 1})], run, progress=False).ran == 1


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path: Path) -> None:
    with RunFolderLock(tmp_path / "r"):
        with RunFolderLock(tmp_path / "r"):
            pass
        assert run_jobs([Job("test-square", {"x": 2})], tmp_path / "r", progress=False).ran == 1
    proc = _holder(tmp_path / "r", 0.2)  # released: another process can take it
    proc.wait(timeout=30)
    assert proc.returncode == 0  # it took and released the lock this process had released
    with RunFolderLock(tmp_path / "r"):  # and this process takes it again after the other one exited
        assert json.loads((tmp_path / "r" / ".lock").read_text())["pid"] == os.getpid()


def test_cli_train_into_a_folder_in_use_is_refused_before_writing(tmp_path: Path) -> None:
    """Finding 4 through the command line: the second training exits 2 naming the first; nothing of its own lands."""
    from arnas_zoo.cli import main

    out = tmp_path / "run"
    proc = _holder(out, 60)
    try:
        args = ["train", "resnet18", "--recipe", "cpu_digits", "--dataset", "digits", "--out", str(out)]
        args += ["--set", "epochs=1", "--set", "train_n=32", "--set", "batch_size=32", "--no-progress"]
        result = CliRunner().invoke(main, [*args, "--model-set", "init_channels=4", "--eval-attacks", "none"])
        assert result.exit_code == 2, result.output
        assert f"in use by another training (pid {proc.pid}" in result.output and result.output.count("\n") == 1
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # no recipe.json, no state, no log
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(256)) * 8, "is not UTF-8 text"),
        (b"[" * 100_000, "is nested too deeply to parse"),
        (b'{"schema": "arnas-zoo/genotype@1", "space": "darts"', "is not valid JSON"),
    ],
)
def test_cli_info_on_hostile_files_is_one_typed_line(tmp_path: Path, content: bytes, message: str) -> None:
    """Finding 5: `arnas-zoo info` on random bytes or '['*100000 exited 70 (UnicodeDecodeError, RecursionError)."""
    from arnas_zoo.cli import main

    path = tmp_path / "hostile.json"
    path.write_bytes(content)
    result = CliRunner().invoke(main, ["info", str(path)])
    assert result.exit_code == 2 and message in result.output and result.output.count("\n") == 1


def test_jobs_with_tuple_arguments_are_found_again_on_resume(tmp_path: Path) -> None:
    """Finding 6: a config with tuples (RoCo/evolve with compare=[]) never matched its saved job, so every
    finished candidate was trained again on --resume."""
    run = tmp_path / "run"
    job = Job("test-square", {"x": 3, "compare": (), "pair": (1, 2)})
    assert run_jobs([job], run, progress=False).ran == 1
    again = run_jobs([Job("test-square", {"x": 3, "compare": (), "pair": (1, 2)})], run, progress=False)
    assert again.ran == 0 and again.skipped == 1
    with pytest.raises(ConfigError, match="JSON-able"):
        Job("test-square", {"x": object()})


@pytest.mark.parametrize(("key", "value", "message"), [
    ("init_channels", 512, "the config describes about"),
    ("layers", 1000, "the config describes about"),
    ("init_channels", 8, "256 misshapen"),
])  # fmt: skip
def test_config_that_does_not_fit_its_weights_is_refused_before_building(
    tmp_path: Path, key: str, value: int, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 3: config.json alone decided the allocation (C=512: 2.2 GB before 'misshapen'; layers=1000: 16 s).
    Now no network is built on a real device: at most one on PyTorch's meta device (no memory) for the shapes."""
    import shutil

    import torch

    import arnas_zoo
    from arnas_zoo import models
    from arnas_zoo.errors import CheckpointError
    from arnas_zoo.pretrained import get_pretrained

    devices: list[str] = []
    real_build = models.build_model

    def recording_build(config):  # type: ignore[no-untyped-def]
        devices.append(torch.empty(0).device.type)  # the default device the network would be allocated on
        return real_build(config)

    monkeypatch.setattr(models, "build_model", recording_build)

    folder = tmp_path / "m"
    shutil.copytree(get_pretrained("darts_v2.cifar10_linf_cpu_c4l5_mix").bundled_path(), folder)
    config = json.loads((folder / "config.json").read_text())
    config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        arnas_zoo.load(str(folder))
    assert all(device == "meta" for device in devices)  # nothing allocated for the misfit config
    assert devices == ([] if "describes about" in message else ["meta"])  # the count refuses before any build


def test_safetensors_header_is_read_bounded(tmp_path: Path) -> None:
    from arnas_zoo.checkpoint import safetensors_shapes
    from arnas_zoo.errors import CheckpointError

    bomb = tmp_path / "bomb.safetensors"
    bomb.write_bytes((2**62).to_bytes(8, "little") + b"{}")  # a header length larger than the file
    with pytest.raises(CheckpointError, match="unreadable safetensors file"):
        safetensors_shapes(bomb)
    deep = tmp_path / "deep.safetensors"
    body = b"[" * 50_000
    deep.write_bytes(len(body).to_bytes(8, "little") + body)
    with pytest.raises(UntrustedFileError, match="nested too deeply"):
        safetensors_shapes(deep)


def test_a_truncated_run_config_on_resume_is_one_typed_error(tmp_path: Path) -> None:
    """Finding 5: a truncated run-folder config.json (RoCo/evolve --resume) was an untyped JSONDecodeError."""
    from arnas_zoo.runs.folder import claim_run_folder

    out = claim_run_folder(tmp_path / "run", {"a": 1, "b": (2, 3)}, "search", resume=False)
    assert claim_run_folder(out, {"a": 1, "b": (2, 3)}, "search", resume=True) == out  # tuples compare as JSON
    text = (out / "config.json").read_text()
    (out / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(UntrustedFileError, match="saved search config is not valid JSON"):
        claim_run_folder(out, {"a": 1, "b": (2, 3)}, "search", resume=True)
    (out / "config.json").write_text('"just a string"')  # valid JSON, wrong shape (found by the long fuzz)
    with pytest.raises(UntrustedFileError, match="must be a JSON object"):
        claim_run_folder(out, {"a": 1, "b": (2, 3)}, "search", resume=True)


def test_a_changed_or_unrecorded_transfer_set_is_rebuilt_not_used(tmp_path: Path) -> None:
    """Finding 5: a corrupt transfer_set.npz failed every RoCo job after retries ('rerun', which could not help)."""
    import numpy as np

    from arnas_zoo.checkpoint import sha256_file
    from search.roco.transfer import _sign, _transfer_set_problem

    npz, meta = tmp_path / "transfer_set.npz", tmp_path / "transfer_set.json"
    np.savez_compressed(npz, x=np.zeros((2, 1, 4, 4), np.float32), y=np.array([1, 2]), half=np.array([0, 1]))
    meta.write_text(json.dumps({"n": 2, "sha256": sha256_file(npz), "signature": _sign(sha256_file(npz))}))
    assert _transfer_set_problem(npz, meta) is None
    np.savez_compressed(npz, x=np.zeros((2, 1, 4, 4), np.float32), y=np.array([7, 7]), half=np.array([0, 1]))
    assert "not the file its record names" in str(_transfer_set_problem(npz, meta))  # forged labels
    meta.write_text(json.dumps({"n": 2, "sha256": sha256_file(npz), "signature": "0" * 64}))  # record edited too
    assert "not signed with this user's job key" in str(_transfer_set_problem(npz, meta))
    meta.write_text('{"n": 2, "sha')
    assert "not valid JSON" in str(_transfer_set_problem(npz, meta))


_SAVE = """
import sys, torch
from arnas_zoo import create_model
from arnas_zoo.checkpoint import save_folder
torch.manual_seed(0)
save_folder(create_model("resnet18", init_channels=4), sys.argv[1])
"""


def test_the_same_training_saves_the_same_bytes(tmp_path: Path) -> None:
    """Finding 7: safetensors wrote its metadata in hash-map order, so a retrained file's sha256 varied by process."""
    digests = set()
    for i in range(6):  # two metadata keys: without the fix, six processes agree by chance 1 time in 32
        subprocess.run([sys.executable, "-c", _SAVE, str(tmp_path / str(i))], check=True, cwd=REPO)
        digests.add(hashlib.sha256((tmp_path / str(i) / "model.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1


def test_canonical_header_sorts_a_header_written_in_any_order(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from arnas_zoo.checkpoint import canonical_header

    header = {"__metadata__": {"zz": "1", "format": "pt"}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path = tmp_path / "x.safetensors"
    path.write_bytes(len(text).to_bytes(8, "little") + text + torch.tensor([2.5]).numpy().tobytes())
    canonical_header(path)
    raw = path.read_bytes()
    written = raw[8 : 8 + len(text)].decode().rstrip()
    assert written == json.dumps(header, sort_keys=True, separators=(",", ":")) and len(raw) == 8 + len(text) + 4
    assert load_file(str(path))["b"].item() == 2.5


def test_eval_strict_exits_3_when_a_sanity_check_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 7: `eval` exited 0 when a sanity check failed; --strict lets scripts and CI act on it."""
    import torch

    from arnas_zoo import create_model
    from arnas_zoo.checkpoint import save_folder
    from arnas_zoo.cli import main
    from arnas_zoo.evaluate import runner
    from arnas_zoo.evaluate.report import SanityCheck

    torch.manual_seed(0)
    folder = save_folder(create_model("resnet18", init_channels=4, in_channels=1, input_size=16), tmp_path / "m")
    args = ["eval", str(folder), "--dataset", "digits", "--n", "16", "--eps", "0.1", "--attacks", "fgsm", "-q"]
    real = runner.sanity_checks

    def with_a_failure(*a, **k):  # type: ignore[no-untyped-def]
        return [*real(*a, **k), SanityCheck("in_ball", False, "largest perturbation 0.5 > eps 0.1")]

    monkeypatch.setattr(runner, "sanity_checks", with_a_failure)
    lenient = CliRunner().invoke(main, [*args, "--json", str(tmp_path / "a.json")])
    assert lenient.exit_code == 0 and "in_ball" in lenient.output
    strict = CliRunner().invoke(main, [*args, "--json", str(tmp_path / "b.json"), "--strict"])
    assert strict.exit_code == 3 and "sanity checks failed: " in strict.output and "in_ball" in strict.output
    assert "in_ball" in json.loads((tmp_path / "b.json").read_text())["failed_checks"]  # the report is kept
    assert CliRunner().invoke(main, [*args, "--strict", "--no-checks"]).exit_code == 0  # nothing failed: 0


def test_a_model_without_a_gradient_path_is_a_typed_error() -> None:
    """Finding 7: a model with no gradient path to the input raised an untyped RuntimeError in PGD."""
    import torch

    from arnas_zoo.data import load_dataset
    from arnas_zoo.errors import NoGradientPathError
    from arnas_zoo.evaluate import evaluate

    class _Detached(torch.nn.Module):  # classifies a detached copy of its input
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(256, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x.detach().flatten(1))

    data = load_dataset("digits", "test", n=8)
    with pytest.raises(NoGradientPathError, match="no gradient path to its input"):
        evaluate(_Detached().eval(), data, ["pgd3"], eps=0.1, device="cpu", progress=False, checks=False)
    frozen = _Detached().eval().requires_grad_(False)  # nothing requires grad at all: the other branch
    with pytest.raises(NoGradientPathError):
        evaluate(frozen, data, ["fgsm"], eps=0.1, device="cpu", progress=False, checks=False)


def test_a_weight_free_op_swap_in_config_json_is_refused(tmp_path: Path) -> None:
    """Finding 7: max_pool <-> avg_pool in an unpinned config.json loaded silently (no weight changes shape)."""
    import torch

    import arnas_zoo
    from arnas_zoo.checkpoint import save_folder
    from arnas_zoo.errors import CheckpointError

    torch.manual_seed(0)
    model = arnas_zoo.create_model("darts_v1", init_channels=4, layers=3, input_size=16)  # has max_pool_3x3 edges
    folder = save_folder(model, tmp_path / "m")
    text = (folder / "config.json").read_text()
    assert "max_pool_3x3" in text
    config = json.loads(text)
    config["name"], config["eps"] = "renamed", 0.5  # not architecture: still loads
    (folder / "config.json").write_text(json.dumps(config))
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(arnas_zoo.load(str(folder))(x), model.eval()(x))
    (folder / "config.json").write_text(text.replace("max_pool_3x3", "avg_pool_3x3", 1))
    with pytest.raises(CheckpointError, match="describes another network than the one these weights were saved"):
        arnas_zoo.load(str(folder))


@pytest.mark.parametrize("content", [b"[" * 100_000, b"\xff\xfe\x00 not utf-8", b'{"epochs": ', b"[]"])
def test_hostile_recipe_and_index_files_are_typed_one_line_errors(tmp_path: Path, content: bytes) -> None:
    from arnas_zoo.errors import ConfigError
    from arnas_zoo.pretrained import read_index
    from arnas_zoo.training import get_recipe

    path = tmp_path / "recipe.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        get_recipe(str(path))
    assert "recipe" in str(caught.value) and "\n" not in str(caught.value)
    if content != b"[]":  # an empty list is a valid (empty) index
        with pytest.raises(ConfigError):
            read_index(path)
