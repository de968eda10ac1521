"""Rehearse a zoo model's Hub publish on a loopback Hub before publishing it for real.

    python scripts/rehearse_hub_publish.py runs/zoo/resnet18_w27-zoo \\
        --repo-id arnas-zoo/resnet18.cifar10_linf_cpu_w27_mix --name resnet18.cifar10_linf_cpu_w27_mix

For a folder written by ``scripts/zoo_add.py --hub-folder`` (its reviewed Hub-ready copy in ``FOLDER/hub``).
Everything runs on 127.0.0.1 and in a temporary folder; the real Hub, the package's index and the user's
Hugging Face cache are never touched. The steps are the real ones a token holder will run:

1. ``arnas-zoo export hub FOLDER --repo-id R --reuse --tag v1.0`` into the upload double of the Hub tests
   (``tests/hub_servers.py``), which turns the upload into a git commit;
2. ``arnas-zoo export register FOLDER --name N --repo-id R --revision COMMIT --index TMP/index.json``;
3. ``arnas_zoo.load(N)`` with that entry, downloading through olah (a real Hub mirror, the tests' dev
   dependency), then again with ``HF_HUB_OFFLINE=1`` from the cache: the weights must be FOLDER's;
4. ``arnas-zoo eval R@COMMIT`` (offline) on the card's points with the card's seed and batch sizes: the
   clean outcomes and every re-run attack's per-point outcomes must be the card's, bit for bit.

AutoAttack is not re-run unless named in ``--attacks`` (it takes hours). Exit status 0 when every check
held, 1 when one did not (each printed with what differed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
TOKEN = "loopback-rehearsal"
HUB_ENV = ("HF_ENDPOINT", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_TOKEN")


def cli(args: list[str]) -> str:
    """Run one ``arnas-zoo`` command in this process (the environment as it is now); its output, or raise."""
    from click.testing import CliRunner

    from arnas_zoo.cli import main

    result = CliRunner().invoke(main, args, catch_exceptions=False)
    print(f"$ arnas-zoo {' '.join(args)}\n{result.output.rstrip()}", flush=True)
    if result.exit_code != 0:
        raise SystemExit(f"arnas-zoo {args[0]} {args[1]} exited {result.exit_code}")
    return result.output


def eval_groups(card: dict[str, Any], attacks: list[str] | None) -> list[tuple[int, list[str]]]:
    """(batch size, attacks) per eval run that re-creates the card's rows: a merged card's attacks with
    the batch size of the report each came from; AutoAttack families left out unless asked for."""
    sources = card.get("merged_from") or [
        {"attacks": [r["attack"] for r in card["results"]], "batch_size": card["batch_size"]}
    ]
    wanted = set(attacks) if attacks is not None else None
    groups = []
    for source in sources:
        names = [
            r["attack"]
            for r in card["results"]
            if r["attack"] in source["attacks"]
            and (r["attack"] in wanted if wanted is not None else r.get("family") != "autoattack")
        ]
        if names:
            groups.append((int(source["batch_size"]), names))
    return groups


def compare(card: dict[str, Any], again: dict[str, Any], attacks: list[str]) -> list[str]:
    """What differs between the card and a re-run on its points (empty: nothing)."""
    problems = []
    if again["data"].get("indices") != card["data"].get("indices"):
        problems.append(f"points: card {card['data'].get('indices')}, re-run {again['data'].get('indices')}")
    if again.get("clean_bits") != card.get("clean_bits"):
        problems.append(f"clean outcomes differ: card {card['clean_accuracy']}, re-run {again['clean_accuracy']}")
    mine = {r["attack"]: r for r in card["results"]}
    theirs = {r["attack"]: r for r in again["results"]}
    for name in attacks:
        a, b = mine[name], theirs.get(name)
        if b is None or a.get("correct_bits") != b.get("correct_bits"):
            got = None if b is None else b["robust_accuracy"]
            problems.append(f"{name}: per-point outcomes differ (card {a['robust_accuracy']}, re-run {got})")
        else:
            print(f"  {name}: {a['robust_accuracy']:.4f} on the card, {b['robust_accuracy']:.4f} again, same points")
    return problems


def rehearse(args: argparse.Namespace, root: Path) -> list[str]:
    """Steps 1 and 2 on the loopback servers, then :func:`check_load_and_eval`; what failed."""
    from hub_servers import HubUploadDouble, OlahServer, running

    from arnas_zoo.pretrained import read_index, register, unregister

    folder = args.folder.resolve()
    card = json.loads((folder / "metrics.json").read_text())
    with running(OlahServer(root)) as olah:
        with running(HubUploadDouble(olah.mirrors, token=TOKEN)) as double:
            os.environ.update(HF_ENDPOINT=double.endpoint, HF_TOKEN=TOKEN)
            out = cli(["export", "hub", str(folder), "--repo-id", args.repo_id, "--reuse", "--tag", "v1.0"])
        commit = re.findall(r"\bcommit ([0-9a-f]{40})\b", out)[-1]
        index = root / "index.json"
        index.write_text("[]\n")
        register_args = ["--repo-id", args.repo_id, "--revision", commit, "--index", str(index)]
        cli(["export", "register", str(folder), "--name", args.name, *register_args])
        os.environ.pop("HF_TOKEN")
        os.environ.update(HF_ENDPOINT=olah.endpoint, HF_HUB_CACHE=str(root / "hf-cache"))
        (spec,) = read_index(index)
        unregister(spec.name)
        register(spec)  # in this process only; taken out again below
        try:
            return check_load_and_eval(args, card, folder, commit, root)
        finally:
            unregister(spec.name)


def check_load_and_eval(
    args: argparse.Namespace, card: dict[str, Any], folder: Path, commit: str, root: Path
) -> list[str]:
    """Steps 3 and 4 (the module docstring), with the entry registered; what failed."""
    import torch
    from safetensors.torch import load_file

    import arnas_zoo

    expected = load_file(str(folder / "model.safetensors"))
    problems = []
    for mode in ("through the loopback Hub", "offline, from the cache"):
        state = arnas_zoo.load(args.name).state_dict()
        same = expected.keys() <= state.keys() and all(torch.equal(state[k], v) for k, v in expected.items())
        print(f"load({args.name!r}) {mode}: weights {'equal to' if same else 'NOT'} the folder's", flush=True)
        problems += [] if same else [f"load {mode}: weights differ from {folder}/model.safetensors"]
        os.environ["HF_HUB_OFFLINE"] = "1"
    threat = card["threat_model"]
    for batch, attacks in eval_groups(card, args.attacks):
        report = root / f"eval-{'-'.join(attacks)}.json"
        run = ["eval", f"{args.repo_id}@{commit}", "--split", args.split, "--n", str(card["data"]["n"])]
        run += ["--dataset", card["data"]["dataset"], "--eps", repr(threat["eps"]), "--norm", threat["norm"]]
        run += ["--attacks", ",".join(attacks), "--seed", str(card["seed"]), "--batch-size", str(batch)]
        data_dir = ["--data-dir", str(args.data_dir)] if args.data_dir else []
        cli([*run, *data_dir, "--no-checks", "-q", "--json", str(report)])
        problems += compare(card, json.loads(report.read_text()), attacks)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a zoo folder with its Hub-ready copy in FOLDER/hub")
    parser.add_argument("--repo-id", required=True, help="the Hub repository it will be published to")
    parser.add_argument("--name", required=True, help="its registry name")
    parser.add_argument("--split", default="test", help="the split its reports ran on [test]")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--attacks", type=lambda s: [a for a in s.split(",") if a], default=None,
                        help="attacks to re-run [the card's, AutoAttack left out]")  # fmt: skip
    args = parser.parse_args(argv)
    saved = {k: os.environ.get(k) for k in HUB_ENV}
    os.environ.pop("HF_HUB_OFFLINE", None)  # the servers are local; offline mode comes back for step 3
    try:
        with tempfile.TemporaryDirectory(prefix="hub-rehearsal-") as tmp:
            problems = rehearse(args, Path(tmp))
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    for problem in problems:
        print(f"FAILED: {problem}")
    print("rehearsal: every check held" if not problems else f"rehearsal: {len(problems)} check(s) failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
