"""The search wing's one interface: the strategy registry, the command line generated from it, the shared
config base and the run-folder claim every strategy uses. Nothing here trains: a registered stand-in
strategy records what the generic ``run`` hands it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from arnas_zoo.errors import ConfigError, DuplicateNameError
from arnas_zoo.settings import Settings, parse_overrides
from search import strategy as registry
from search.cli import main, run_command
from search.strategy import Outcome, RunOptions, Strategy, load_from, strategies, strategy_for

BUILTIN = {"arnas", "robnet", "roco", "evolve"}


def test_every_strategy_registers_its_presets_once_and_owns_them() -> None:
    found = strategies()
    assert set(found) >= BUILTIN
    owners: dict[str, str] = {}
    for name, strategy in found.items():
        presets = strategy.presets()
        assert strategy.default_preset in presets and Path(strategy.home).parts[0] == "search"
        for preset in presets:
            assert preset not in owners, f"{preset} belongs to {owners[preset]} and {name}"
            owners[preset] = name
            assert strategy_for(preset) is strategy
    assert owners["dsrna-cb-tiny"] == "arnas" and owners["robnet-tiny"] == "robnet"
    assert owners["roco-tiny"] == "roco" and owners["evolve-darts-tiny"] == "evolve"
    with pytest.raises(ConfigError, match="neither a preset.*roco: roco, roco-2obj"):
        strategy_for("no-such-preset")


def test_every_preset_loads_through_its_strategy_and_presets_lists_them_grouped() -> None:
    runner = CliRunner()
    listed = runner.invoke(main, ["presets"])
    as_json = runner.invoke(main, ["presets", "--json"])
    assert listed.exit_code == 0 and as_json.exit_code == 0, listed.output + as_json.output
    table = json.loads(as_json.output)
    headers = [line.split(":")[0] for line in listed.output.splitlines() if not line.startswith(" ")]
    assert headers == list(strategies())
    for name, strategy in strategies().items():
        assert table[name] == json.loads(json.dumps(dict(strategy.presets())))
        for preset in strategy.presets():
            assert f"  {preset} " in listed.output
            config = strategy.load(preset, [])
            assert config.seed == 0 and strategy.default_out(preset, config).name.endswith("-seed0")


@dataclass(frozen=True)
class FakeConfig(Settings):
    what = "fake"

    width: int = 4
    sizes: tuple[int, ...] = (1, 2)
    note: str | None = None
    seed: int = 0

    def validate(self) -> None:
        if self.width < 1:
            raise ConfigError(f"width: expected >= 1, got {self.width}")


@pytest.fixture
def fake_strategy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[FakeConfig, Path, RunOptions]]:
    calls: list[tuple[FakeConfig, Path, RunOptions]] = []

    def run(config: FakeConfig, out: Path, options: RunOptions) -> Outcome:
        calls.append((config, out, options))
        return Outcome([out / "genotype.json"], {"width": config.width}, [f"ran {config.width} into {out}"])

    presets = {"fake-tiny": FakeConfig(width=2)}
    strategies()  # the built-in ones first, so that the stand-in is the last and then removed
    monkeypatch.setattr(registry, "_STRATEGIES", dict(registry._STRATEGIES))
    registry.register_strategy(
        Strategy(
            name="fake",
            title="stand-in",
            papers="none",
            home="search/fake/",
            presets=lambda: {name: {"width": c.width} for name, c in presets.items()},
            load=load_from(presets, FakeConfig, "fake"),
            run=run,
            default_preset="fake-tiny",
            takes=frozenset({"device"}),
        )
    )
    return calls


def test_the_generic_run_hands_the_owner_its_config_folder_and_options(
    fake_strategy: list[tuple[FakeConfig, Path, RunOptions]], tmp_path: Path
) -> None:
    runner = CliRunner()
    out = tmp_path / "o"
    result = runner.invoke(run_command(None), ["fake-tiny", "--set", "sizes=[3,4]", "--device", "cpu", "-o", str(out),
                                               "--resume", "--no-plots", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"ran 2 into {out}"
    config, folder, options = fake_strategy[0]
    assert config == FakeConfig(width=2, sizes=(3, 4)) and folder == out
    assert options.resume and options.device == "cpu" and not options.plots and options.backend == "local"
    # a JSON file of fields through the strategy's own group; the default folder runs/<preset>-seed<N>
    spec = tmp_path / "fake.json"
    spec.write_text(json.dumps({"width": 7, "sizes": [5]}))
    assert strategies()["fake"].load(str(spec), ["note=none"]) == FakeConfig(width=7, sizes=(5,), note=None)
    assert strategies()["fake"].default_out("fake-tiny", config) == Path("runs/fake-tiny-seed0")


def test_options_a_strategy_does_not_honour_are_refused_with_who_takes_them(
    fake_strategy: list[tuple[FakeConfig, Path, RunOptions]], tmp_path: Path
) -> None:
    runner = CliRunner()
    for argv, fragment in (
        (["fake-tiny", "--backend", "ray"], "--backend is for the RobNets search, the RoCo-NAS search and the"),
        (["fake-tiny", "--name", "x"], "--name is for the ARNAS search"),
        (["tiny", "--max-parallel", "2"], "ARNAS (arnas) does not take it: --max-parallel is for the RobNets"),
    ):
        result = runner.invoke(main, ["run", *argv, "-o", str(tmp_path / "x")])
        assert result.exit_code == 2 and fragment in result.output, result.output
    assert fake_strategy == []  # nothing ran
    with pytest.raises(ConfigError, match="--device is for"):
        strategies()["roco"].start(None, tmp_path, RunOptions(device="cpu"))
    with pytest.raises(ConfigError, match="unknown run options"):
        Strategy(
            "bad", "bad", "", "", dict, lambda s, o: None, lambda c, o, r: Outcome([], {}), "x", frozenset({"gpu"})
        )


def test_a_second_strategy_of_a_name_or_a_taken_preset_is_refused(
    fake_strategy: list[tuple[FakeConfig, Path, RunOptions]],
) -> None:
    fake = strategies()["fake"]
    with pytest.raises(DuplicateNameError, match="already registered"):
        registry.register_strategy(fake)
    from dataclasses import replace

    with pytest.raises(DuplicateNameError, match=r"\['roco-tiny'\] already belong to roco"):
        registry.register_strategy(replace(fake, name="other", presets=lambda: {"roco-tiny": {}}))


def test_the_config_base_refuses_unknown_keys_and_reads_json_lists_as_tuples() -> None:
    config = FakeConfig.from_dict({"width": 3, "sizes": [1, 2, 3]})
    assert config.sizes == (1, 2, 3) and FakeConfig.from_dict(config.to_dict()) == config
    assert config.with_overrides(["note=none", "sizes=[9]"]) == FakeConfig(width=3, sizes=(9,))
    assert config.replace(width=5).width == 5
    with pytest.raises(ConfigError, match="fake.widht: unknown key 'widht'; expected one of"):
        config.with_overrides(["widht=3"])
    with pytest.raises(ConfigError, match="expected a JSON object"):
        FakeConfig.from_dict([1, 2])  # type: ignore[arg-type]
    assert parse_overrides(["a=null", "b=none", "c=text", "d=[1]"]) == {"a": None, "b": None, "c": "text", "d": [1]}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["novalue"])
    # the four strategies' configs share it
    from search.arnas.config import SearchConfig
    from search.evolve.config import EvolveConfig
    from search.robnet.config import RobNetConfig
    from search.roco.config import RocoConfig

    for cls in (SearchConfig, RobNetConfig, RocoConfig, EvolveConfig):
        assert issubclass(cls, Settings)
        with pytest.raises(ConfigError, match="unknown key 'no_such_key'"):
            cls().with_overrides(["no_such_key=1"])


def test_a_run_task_folder_is_judged_by_its_state_and_a_job_folder_by_its_config(tmp_path: Path) -> None:
    from arnas_zoo.runs.folder import changed_keys, claim_run_folder

    assert changed_keys({"a": (1, 2), "b": 1}, {"a": [1, 2], "c": 2}) == ["b", "c"]
    task = tmp_path / "task"
    claim_run_folder(task, {"x": 1}, "training", False, state="state.safetensors", file="recipe.json")
    assert json.loads((task / "recipe.json").read_text()) == {"x": 1}
    claim_run_folder(task, {"x": 2}, "training", False, state="state.safetensors", file="recipe.json")
    assert json.loads((task / "recipe.json").read_text()) == {"x": 2}  # killed before its first save: afresh
    (task / "state.safetensors").write_bytes(b"saved")
    claim_run_folder(task, {"x": 3}, "training", False, state="state.safetensors", file="recipe.json")
    assert json.loads((task / "recipe.json").read_text()) == {"x": 2}  # the state decides: nothing written
    jobs = tmp_path / "jobs"
    claim_run_folder(jobs, {"x": 1}, "search", False)
    with pytest.raises(ConfigError, match="already there"):
        claim_run_folder(jobs, {"x": 1}, "search", False)
    with pytest.raises(ConfigError, match=r"changed: \['x'\]"):
        claim_run_folder(jobs, {"x": 2}, "search", True)
