"""Adversarial training: recipes, augmentation, the training attack, outputs, resume and corruption."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from arnas_zoo import create_model
from arnas_zoo.checkpoint import load_folder
from arnas_zoo.errors import CheckpointError, ConfigError
from arnas_zoo.training import (
    RECIPES,
    STATE_FILE,
    Recipe,
    TrainingInterrupted,
    augment,
    get_recipe,
    load_train_state,
    lr_at,
    perturb,
    read_log,
    train,
)

REPO = Path(__file__).resolve().parents[1]


class Data:
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y


def digits(n: int, offset: int = 0) -> Data:
    """First rows of scikit-learn's 8x8 digits (offline), as [0, 1] NCHW."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[offset : offset + n], dtype=torch.float32).div(16)[:, None]
    return Data(x, torch.tensor(d.target[offset : offset + n]))


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("arnas", in_channels=1, input_size=8, init_channels=4, layers=3)


TINY = dict(
    epochs=3,
    batch_size=16,
    lr=0.05,
    schedule="cosine",
    eps=0.1,
    step_size=0.05,
    steps=2,
    crop_padding=1,
    cutout=3,
    val_steps=2,
    seed=3,
)


def tiny_recipe(**kw) -> Recipe:
    return get_recipe("arnas", **{**TINY, **kw})


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---- recipes ------------------------------------------------------------------------------------
def test_presets_carry_published_settings():
    arnas = get_recipe("arnas")
    assert (arnas.lr, arnas.momentum, arnas.weight_decay, arnas.grad_clip) == (0.1, 0.9, 1e-4, 5.0)
    assert (arnas.epochs, arnas.batch_size, arnas.milestones, arnas.cutout) == (200, 32, (100.0, 150.0), 16)
    assert (arnas.steps, arnas.step_size, arnas.start, arnas.start_sigma) == (7, 0.01, "gaussian", 0.001)
    assert arnas.eps == pytest.approx(8 / 255) and arnas.attack_eval_mode
    advrush = get_recipe("advrush")
    assert (advrush.batch_size, advrush.cutout, advrush.auxiliary_weight, advrush.eps) == (64, 0, 0.0, 0.031)
    for name, recipe in RECIPES.items():
        assert recipe.name == name
        assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe


def test_overrides_are_coerced_and_checked():
    r = get_recipe("arnas", eps="8/255", epochs="3", flip="false", milestones="1,2", grad_clip="none")
    assert r.eps == pytest.approx(8 / 255) and r.epochs == 3 and r.flip is False
    assert r.milestones == (1.0, 2.0) and r.grad_clip is None
    with pytest.raises(ConfigError, match="unknown field"):
        get_recipe("arnas", learning_rate=0.1)
    with pytest.raises(ConfigError, match="method"):
        get_recipe("arnas", method="cw")
    with pytest.raises(ConfigError, match="epochs"):
        get_recipe("arnas", epochs=0)
    with pytest.raises(ConfigError, match="cannot read"):
        get_recipe("arnas", lr="fast")
    with pytest.raises(ConfigError, match="unknown recipe"):
        get_recipe("arnass")


def test_recipe_json_file(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(get_recipe("trades", epochs=2).to_dict()))
    assert get_recipe(str(path)) == get_recipe("trades", epochs=2)


def test_learning_rate_schedules():
    r = get_recipe("arnas")
    assert lr_at(r, 0) == 0.1 and lr_at(r, 99.99) == 0.1
    assert lr_at(r, 100) == pytest.approx(0.01) and lr_at(r, 150) == pytest.approx(0.001)
    c = get_recipe("arnas", schedule="cosine", epochs=10, lr_min=0.001)
    assert (
        lr_at(c, 0) == pytest.approx(0.1)
        and lr_at(c, 5) == pytest.approx(0.0505)
        and lr_at(c, 10) == pytest.approx(0.001)
    )
    f = get_recipe("fast", epochs=10)
    assert lr_at(f, 0) == 0 and lr_at(f, 4) == pytest.approx(0.2) and lr_at(f, 10) == pytest.approx(0)


# ---- augmentation and the training attack -------------------------------------------------------
def test_augment_crop_flip_cutout():
    x = torch.rand(64, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    out = augment(x, gen, crop_padding=2, flip=False, cutout=0)
    # every output is a shifted copy of its input (zeros where the shift leaves the image)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(x.shape[0]):
        assert any(torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8]) for dy in range(5) for dx in range(5))
    shifted = sum(not torch.equal(out[i], x[i]) for i in range(64))
    assert shifted > 40  # 24 of 25 offsets move the image
    flipped = augment(x, torch.Generator().manual_seed(1), crop_padding=0, flip=True, cutout=0)
    n_flip = sum(torch.equal(flipped[i], x[i].flip(2)) for i in range(64))
    assert 15 < n_flip < 49 and all(
        torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2)) for i in range(64)
    )
    cut = augment(x, torch.Generator().manual_seed(2), crop_padding=0, flip=False, cutout=4)
    zeroed = (cut == 0).all(1).flatten(1).sum(1)
    assert (zeroed <= 16).all() and (zeroed >= 4).all()  # a 4x4 hole, clipped by the border at worst to 2x2
    assert torch.equal(cut[cut != 0], x[cut != 0])
    again = augment(x, torch.Generator().manual_seed(2), crop_padding=0, flip=False, cutout=4)
    assert torch.equal(cut, again)


@pytest.mark.parametrize("start", ["uniform", "gaussian", "none"])
def test_perturb_stays_in_ball_raises_loss_and_restores_mode(start):
    model = tiny_model()
    data = digits(64)
    model.train()
    x_adv = perturb(
        model, data.x, data.y, eps=0.1, step_size=0.03, steps=5, start=start, generator=torch.Generator().manual_seed(0)
    )
    assert model.training
    assert (x_adv - data.x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    model.eval()
    with torch.no_grad():
        clean = torch.nn.functional.cross_entropy(model(data.x), data.y)
        adv = torch.nn.functional.cross_entropy(model(x_adv), data.y)
    assert adv > clean


def test_gaussian_start_is_tiny_and_kl_loss_runs():
    model = tiny_model().eval()
    x = digits(32).x
    start_only = perturb(
        model, x, None, eps=0.1, step_size=0.03, steps=0, start="gaussian", generator=torch.Generator().manual_seed(0)
    )
    assert 0 < (start_only - x).abs().max() < 0.01
    kl_adv = perturb(
        model,
        x,
        None,
        eps=0.1,
        step_size=0.03,
        steps=3,
        start="gaussian",
        loss="kl",
        generator=torch.Generator().manual_seed(0),
    )
    assert (kl_adv - x).abs().max() > 0.05


# ---- a run: outputs, resume, corruption ---------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run") / "full"
    model = tiny_model()
    result = train(
        model, tiny_recipe(), digits(96), digits(32, offset=1000), out, device="cpu", progress=False, run_name="tiny"
    )
    return out, result, weights(model)


def test_run_folder_outputs(finished_run):
    out, result, final = finished_run
    records = list(read_log(out))
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(0 <= r["val_robust_acc"] <= r["val_clean_acc"] + 0.2 for r in records)
    best_epoch = max(records, key=lambda r: r["val_robust_acc"])["epoch"]
    assert result.best["epoch"] == best_epoch
    best = load_folder(out / "best")
    assert best.metrics["training"]["epoch"] == best_epoch
    last = load_folder(out / "last")
    assert last.config.name == "tiny" and last.config.eps == pytest.approx(0.1) and last.config.threat_model == "linf"
    for key, value in last.state_dict().items():
        assert torch.equal(value, final[key]), key
    assert (out / "curves.png").stat().st_size > 1000
    assert json.loads((out / "recipe.json").read_text())["epochs"] == 3
    _, meta = load_train_state(out / STATE_FILE)
    assert meta["finished"] and meta["epoch"] == 3


def test_resume_mid_epoch_gives_identical_weights(finished_run, tmp_path):
    _, _, final = finished_run
    out = tmp_path / "interrupted"
    model = tiny_model()
    with pytest.raises(TrainingInterrupted, match="resume"):
        train(
            model,
            tiny_recipe(),
            digits(96),
            digits(32, offset=1000),
            out,
            device="cpu",
            progress=False,
            run_name="tiny",
            stop_after_steps=8,
        )  # 6 steps per epoch: stops inside epoch 2
    _, meta = load_train_state(out / STATE_FILE)
    assert (meta["epoch"], meta["step"]) == (1, 2)
    resumed = tiny_model()  # fresh weights: everything must come from the state file
    train(
        resumed,
        tiny_recipe(),
        digits(96),
        digits(32, offset=1000),
        out,
        resume=True,
        device="cpu",
        progress=False,
        run_name="tiny",
    )
    for key, value in resumed.state_dict().items():
        assert torch.equal(value, final[key]), key
    assert [r.get("epoch") for r in read_log(out) if "event" not in r] == [1, 2, 3]


WORKER = """
import sys, torch
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from test_training import tiny_model, tiny_recipe, digits
from arnas_zoo.training import train, TrainingInterrupted
try:
    train(tiny_model(), tiny_recipe(epochs={epochs}), digits(96), digits(32, offset=1000), {out!r}, device="cpu",
          progress=False, run_name="tiny")
except TrainingInterrupted:
    sys.exit(143)
"""


def _spawn(out: Path, epochs: int) -> subprocess.Popen:
    code = WORKER.format(repo=str(REPO), tests=str(REPO / "tests"), out=str(out), epochs=epochs)
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stderr=subprocess.PIPE)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_process_resumes_to_identical_weights(finished_run, tmp_path, sig):
    _, _, reference = finished_run  # the same recipe (3 epochs), data and seed, never interrupted
    torch.set_num_threads(1)
    epochs = 3
    out = tmp_path / "killed"
    proc = _spawn(out, epochs)
    deadline = time.time() + 120
    while not (out / STATE_FILE).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)  # the state file appears after the first epoch
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 143), proc.stderr.read().decode()[-2000:]
    _, meta = load_train_state(out / STATE_FILE)
    assert meta["epoch"] < epochs and not meta["finished"]
    if sig == signal.SIGTERM:  # saved at the next batch boundary, not only at the epoch's end
        assert any(r.get("event") == "interrupted" and r["signal"] == "SIGTERM" for r in read_log(out))
    resumed = tiny_model()
    train(
        resumed,
        tiny_recipe(epochs=epochs),
        digits(96),
        digits(32, offset=1000),
        out,
        resume=True,
        device="cpu",
        progress=False,
        run_name="tiny",
    )
    for key, value in reference.items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_corrupt_or_mismatched_state_is_refused(finished_run, tmp_path):
    out, _, _ = finished_run
    data = (out / STATE_FILE).read_bytes()
    for name, damaged in (
        ("flipped", data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:]),
        ("truncated", data[: len(data) // 2]),
        ("garbage", b"not a checkpoint"),
    ):
        folder = tmp_path / name
        folder.mkdir()
        (folder / STATE_FILE).write_bytes(damaged)
        with pytest.raises(CheckpointError, match="corrupt"):
            load_train_state(folder / STATE_FILE)
        with pytest.raises(CheckpointError, match="corrupt"):
            train(
                tiny_model(),
                tiny_recipe(),
                digits(96),
                None,
                folder,
                resume=True,
                device="cpu",
                progress=False,
                run_name="tiny",
            )
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / STATE_FILE).write_bytes(data)
    with pytest.raises(CheckpointError, match="different recipe.*lr"):
        train(
            tiny_model(),
            tiny_recipe(lr=0.2),
            digits(96),
            None,
            copy,
            resume=True,
            device="cpu",
            progress=False,
            run_name="tiny",
        )
    other_model = create_model("arnas", in_channels=1, input_size=8, init_channels=6, layers=3)
    with pytest.raises(CheckpointError, match="different model"):
        train(
            other_model,
            tiny_recipe(),
            digits(96),
            None,
            copy,
            resume=True,
            device="cpu",
            progress=False,
            run_name="tiny",
        )
    with pytest.raises(CheckpointError, match="already exists"):
        train(tiny_model(), tiny_recipe(), digits(96), None, copy, device="cpu", progress=False, run_name="tiny")
    with pytest.raises(CheckpointError, match="no training state"):
        train(
            tiny_model(), tiny_recipe(), digits(96), None, tmp_path / "empty", resume=True, device="cpu", progress=False
        )


@pytest.mark.parametrize("method", ["fgsm", "trades", "standard"])
def test_other_methods_train(method, tmp_path):
    torch.set_num_threads(1)
    model = tiny_model()
    before = weights(model)
    recipe = tiny_recipe(method=method, epochs=1, steps=1 if method == "fgsm" else 2, start="uniform")
    result = train(model, recipe, digits(64), digits(32, offset=1000), tmp_path / method, device="cpu", progress=False)
    record = result.history[-1]
    assert math.isfinite(record["train_loss"]) and record["train_acc_on"] == (
        "clean" if method == "standard" else "training adversarial examples"
    )
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
