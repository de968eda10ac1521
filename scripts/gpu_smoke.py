"""Exercise every CUDA path of the project in a few minutes, and write one report.

    DEV=cuda OUT=/tmp/smoke bash scripts/gpu_smoke.sh     # on a GPU (about 5 minutes)
    DEV=cpu  OUT=/tmp/smoke bash scripts/gpu_smoke.sh     # the same steps on the CPU (CI runs this)

Each step runs the installed commands (``arnas-zoo``, ``python -m search``, the benchmarks) in a
fresh process, as a user would, on the embedded digits data (no download, no ``../shared``), with a
tiny ARNAS network (C=4, 5 cells, 16x16). Every step's output goes to ``$OUT/logs/<step>.log``; the
report (``$OUT/report.json``) holds per step the command, exit code, seconds and what it showed
(figures, the ONNX provider, the number of compiled graphs, ...), plus the machine and versions.
A failed step does not stop the others: the report is the inventory of what works on the machine.
The exit code is 0 only when every step passed. docs/gpu.md says what each line should show.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODEL = ["--model-set", "init_channels=4", "--model-set", "layers=5"]


@dataclass
class Step:
    name: str
    command: list[str]
    timeout: int = 300
    env: dict[str, str] = field(default_factory=dict)
    expect_rc: tuple[int, ...] = (0,)
    inspect: Callable[[Path, str], dict[str, Any]] | None = None  # (out dir, output) -> facts


@dataclass
class Smoke:
    device: str
    out: Path
    cpu: bool = False
    results: list[dict[str, Any]] = field(default_factory=list)

    def run(self, step: Step) -> dict[str, Any]:
        log = self.out / "logs" / f"{step.name}.log"
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **step.env}
        start = time.perf_counter()
        try:
            done = subprocess.run(
                step.command, cwd=REPO, env=env, capture_output=True, text=True, timeout=step.timeout, check=False
            )
            rc, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as exc:
            rc, output = 124, f"{exc.stdout or ''}{exc.stderr or ''}\ntimed out after {step.timeout} s"
            output = output if isinstance(output, str) else output.decode(errors="replace")
        seconds = time.perf_counter() - start
        log.write_text(f"$ {shlex.join(step.command)}\n{output}")
        record: dict[str, Any] = {
            "step": step.name,
            "command": shlex.join(step.command),
            "rc": rc,
            "seconds": round(seconds, 1),
            "passed": rc in step.expect_rc,
        }
        if record["passed"] and step.inspect is not None:
            try:
                record.update(step.inspect(self.out, output))
            except Exception as exc:  # a step whose output is not what it should be has failed
                record.update(passed=False, error=f"{type(exc).__name__}: {exc}")
        elif not record["passed"]:
            record["error"] = output.strip().splitlines()[-1][:300] if output.strip() else f"exit {rc}"
        self.results.append(record)
        mark = "ok  " if record["passed"] else "FAIL"
        facts = {k: v for k, v in record.items() if k not in ("step", "command", "rc", "seconds", "passed")}
        print(f"{mark} {step.name:<28} {seconds:7.1f} s  {json.dumps(facts)[:220]}", flush=True)
        return record


def _zoo(*args: str) -> list[str]:
    return [sys.executable, "-m", "arnas_zoo.cli", *args]


def _log_facts(folder: Path) -> dict[str, Any]:
    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]
    last = records[-1]
    facts = {"epochs": len(records), "train_loss": round(last["train_loss"], 4)}
    for key in ("val_clean_acc", "val_robust_acc", "compiled_graphs"):
        if key in last:
            facts[key] = last[key]
    facts["final_eval"] = _figures(json.loads((folder / "best" / "metrics.json").read_text()))
    return facts


def _figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """Clean, per-attack and worst-case accuracy of a metrics.json (fractions), and the failed checks."""
    figures: dict[str, Any] = {"clean": metrics.get("clean_accuracy")}
    for result in metrics.get("results", []):
        figures[result["attack"]] = result["robust_accuracy"]
    figures["worst_case"] = metrics.get("worst_case_accuracy")
    if metrics.get("failed_checks"):
        figures["failed_checks"] = metrics["failed_checks"]
    return figures


def training_steps(smoke: Smoke) -> list[Step]:
    dev, out = smoke.device, smoke.out
    short = ["--set", "epochs=2", "--set", "train_n=256", "--set", "batch_size=32", "--set", "val_n=64"]
    common = [
        "--dataset",
        "digits",
        *MODEL,
        "--set",
        "val_steps=3",
        "--val-rows",
        "200",
        "--eval-n",
        "64",
        "--eval-attacks",
        "fgsm,pgd20",
        "--device",
        dev,
        "--quiet",
    ]
    steps = []
    # the model the later steps evaluate and export: the quick start's PGD recipe, 4 epochs on all of digits
    for name, recipe, sets in (
        ("train_pgd", "cpu_digits", ["--set", "epochs=4", "--set", "eps_warmup_epochs=1"]),
        ("train_trades", "trades", short),
        ("train_fgsm", "fast", short),
    ):
        folder = out / name
        steps.append(
            Step(
                name,
                _zoo("train", "arnas", "--recipe", recipe, *sets, *common, "--out", str(folder)),
                timeout=900,
                inspect=lambda o, _, f=folder: _log_facts(f),
            )
        )
    killed = out / "train_killed"
    fgsm = ["train", "arnas", "--recipe", "fast", *short, *common]
    steps.append(
        Step(
            "train_killed_after_state",
            _zoo(*fgsm, "--out", str(killed)),
            env={"ARNAS_ZOO_KILL_AFTER": "state:1"},  # SIGKILL right after the first saved state (epoch 1)
            expect_rc=(-9, 137),
        )
    )
    steps.append(
        Step(
            "train_resumed",
            _zoo(*fgsm, "--out", str(killed), "--resume"),
            inspect=lambda o, _: _resume_facts(o / "train_fgsm", o / "train_killed"),
        )
    )
    steps.append(
        Step(
            "train_compiled",
            _zoo(
                "train",
                "arnas",
                "--recipe",
                "arnas",
                *short,
                *common,
                "--set",
                "compile=true",
                "--out",
                str(out / "compiled"),
            ),
            timeout=600,
            # on CPU, dynamo's capture with the eager backend: inductor's C++ build took ~9 min for this tiny net
            env={"ARNAS_ZOO_COMPILE_BACKEND": "eager"} if smoke.cpu else {},
            inspect=lambda o, _: _log_facts(o / "compiled"),
        )
    )
    ddp_env = {"ARNAS_ZOO_DIST_BACKEND": "gloo"}  # two processes may share one GPU only through gloo
    steps.append(
        Step(
            "train_ddp_2proc_one_device",
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
            + ["-m", "arnas_zoo.cli", *fgsm, "--out", str(out / "ddp")],
            env=ddp_env,
            inspect=lambda o, _: _log_facts(o / "ddp"),
        )
    )
    return steps


def _resume_facts(full: Path, resumed: Path) -> dict[str, Any]:
    a = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines() if line.strip()]
    b = [json.loads(line) for line in (resumed / "log.jsonl").read_text().splitlines() if line.strip()]
    if [r["epoch"] for r in b] != [r["epoch"] for r in a]:
        raise AssertionError(f"epochs {[r['epoch'] for r in b]} after resume, expected {[r['epoch'] for r in a]}")
    diff = max(abs(x["train_loss"] - y["train_loss"]) for x, y in zip(a, b))
    return {"epochs_once_each": True, "max_train_loss_diff_vs_uninterrupted": diff}


def evaluation_steps(smoke: Smoke) -> list[Step]:
    folder = smoke.out / "train_pgd" / "best"
    n = "64" if smoke.cpu else "128"
    attacks = "fgsm,pgd20,pgd20-cw,square,aa" if not smoke.cpu else "fgsm,pgd20,pgd20-cw,square"
    steps = []
    for dev in [smoke.device] + ([] if smoke.cpu else ["cpu"]):
        json_path = smoke.out / f"eval_{dev}.json"
        steps.append(
            Step(
                f"eval_{dev}",
                _zoo(
                    "eval", str(folder), "--n", n, "--attacks", attacks, "--device", dev, "--json", str(json_path), "-q"
                ),
                timeout=900,
                inspect=lambda o, _, p=json_path: _eval_facts(p),
            )
        )
    if not smoke.cpu:
        steps.append(
            Step(
                "eval_agrees_with_cpu",
                [sys.executable, "-c", "pass"],
                inspect=lambda o, _: _compare_evals(o, smoke.device),
            )
        )
    return steps


def _eval_facts(path: Path) -> dict[str, Any]:
    figures = _figures(json.loads(path.read_text()))
    if figures.get("failed_checks"):
        raise AssertionError(f"sanity checks failed: {figures['failed_checks']}")
    return figures


def _compare_evals(out: Path, device: str) -> dict[str, Any]:
    gpu = _figures(json.loads((out / f"eval_{device}.json").read_text()))
    cpu = _figures(json.loads((out / "eval_cpu.json").read_text()))
    gaps = {k: round(100 * abs(gpu[k] - cpu[k]), 2) for k in gpu if isinstance(gpu[k], float) and k in cpu}
    worst = max(gaps.values(), default=0.0)
    if worst > 2.0:
        raise AssertionError(f"GPU and CPU figures differ by up to {worst} points: {gaps}")
    return {"points_apart": gaps}


def search_steps(smoke: Smoke) -> list[Step]:
    steps = []
    amps = (False,) if smoke.cpu else (False, True)  # bf16 autocast exists on CUDA only
    for order in ("first", "second"):
        for amp in amps:
            name = f"search_{order}{'_bf16' if amp else ''}"
            folder = smoke.out / name
            sets = [
                "dataset=digits",
                "data_dir=null",
                "epochs=1",
                "steps_per_epoch=2",
                "eval_n=16",
                f"order={order}",
                f"amp={'true' if amp else 'false'}",
            ]
            command = [sys.executable, "-m", "search", "run", "tiny", "-o", str(folder), "--device", smoke.device]
            for s in sets:
                command += ["--set", s]
            steps.append(
                Step(name, [*command, "--quiet", "--no-plots"], inspect=lambda o, _, f=folder: _search_facts(f))
            )
    return steps


def _search_facts(folder: Path) -> dict[str, Any]:
    summary = json.loads((folder / "summary.json").read_text())
    return {
        "genotype_cells": sorted(summary["genotype"]["cells"]),
        "mgda": summary["mgda"],
        "device": summary["device"],
    }


def onnx_steps(smoke: Smoke) -> list[Step]:
    folder = smoke.out / "train_pgd" / "best"
    onnx_file = smoke.out / "model.onnx"
    providers = "cpu" if smoke.cpu else "cuda"  # on a GPU the CUDA provider must load, not fall back
    digit = smoke.out / "digits.npz"
    return [
        Step("onnx_export", _zoo("export", "onnx", str(folder), "-o", str(onnx_file)), inspect=_onnx_facts),
        Step(
            "onnx_digits_file",
            [
                sys.executable,
                "-c",
                "import numpy as np, sklearn.datasets as d; x = d.load_digits(); "
                "im = x.images[:4].repeat(2, axis=1).repeat(2, axis=2); "  # the 16x16 digits the model was trained on
                f"np.savez({str(digit)!r}, x=(im * 255 / 16).astype('uint8'), y=x.target[:4])",
            ],
        ),
        Step(
            "onnx_predict",
            _zoo("predict", str(onnx_file), str(digit), "--providers", providers, "--device", smoke.device),
            inspect=lambda o, text: {"provider": _provider(text)},
        ),
        Step(
            "onnx_check",
            _zoo(
                "check",
                str(onnx_file),
                "--source",
                str(folder),
                "--n",
                "32",
                "--providers",
                providers,
                "--json",
                str(smoke.out / "check.json"),
                "-q",
            ),
            timeout=900,
            inspect=lambda o, _: _check_facts(o / "check.json"),
        ),
    ]


def _provider(text: str) -> str:
    for line in text.splitlines():
        if "ONNX Runtime provider:" in line:
            return line.split(":", 1)[1].strip()
    raise AssertionError("predict did not say which ONNX Runtime provider ran")


def _onnx_facts(out: Path, _: str) -> dict[str, Any]:
    record = json.loads((out / "train_pgd" / "best" / "onnx.json").read_text())
    parity = next(iter(record.values()))["parity"]
    return {"parity_max_abs_diff": parity["max_abs_diff"], "parity_passed": parity["passed"]}


def _check_facts(path: Path) -> dict[str, Any]:
    check = json.loads(path.read_text())
    keep = ("provider", "device", "clean_onnx", "square_onnx", "verdict", "sanity")
    return {k: check[k] for k in keep if k in check}


def benchmark_steps(smoke: Smoke) -> list[Step]:
    dev, res = smoke.device, smoke.out / "bench"
    py = sys.executable
    return [
        Step(
            "bench_training",
            [py, "benchmarks/bench_training.py", "--device", dev, "--batches", "32", "--init-channels", "8"]
            + ["--layers", "5", "--steps", "1", "--warmup", "1", "--out", str(res / "training.json")],
            timeout=900,
        ),
        Step(
            "bench_search",
            [py, "benchmarks/bench_search.py", "--device", dev, "--batch-sizes", "16", "--orders", "first,second"]
            + ["--pgd-steps", "1", "--steps", "1", "--warmup", "0", "--init-channels", "8", "--layers", "5"]
            + ["--out", str(res / "search.json")],
            timeout=900,
        ),
        Step(
            "bench_attacks",
            [py, "benchmarks/bench_attacks.py", "--device", dev, "--init-channels", "8", "--layers", "5", "--n", "32"]
            + ["--steps", "5", "--repeats", "1", "--out", str(res / "attacks.json")],
            timeout=900,
        ),
        Step(
            "bench_onnx",
            [py, "benchmarks/bench_onnx.py", "--archs", "arnas", "--batches", "1", "8", "--reps", "1"]
            + ["--out", str(res / "onnx.json")],
            timeout=900,
        ),
    ]


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "host": platform.node(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
        info["ort_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        info["onnxruntime"] = None
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=os.environ.get("DEV", "cuda"), help="cuda or cpu (env DEV)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/gpu_smoke")))
    parser.add_argument("--only", default="", help="comma-separated groups: train,eval,search,onnx,bench")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "logs").mkdir(exist_ok=True)
    smoke = Smoke(args.device, args.out.resolve(), cpu=args.device == "cpu")
    info = machine()
    print(json.dumps(info), flush=True)
    if args.device != "cpu" and not info["cuda_available"]:
        print("DEV=cuda but torch sees no CUDA device; run with DEV=cpu for the CPU variant", file=sys.stderr)
        return 2
    groups = {
        "train": training_steps,
        "eval": evaluation_steps,
        "search": search_steps,
        "onnx": onnx_steps,
        "bench": benchmark_steps,
    }
    chosen = [g for g in (args.only.split(",") if args.only else groups) if g]
    start = time.perf_counter()
    for group in chosen:
        for step in groups[group](smoke):
            smoke.run(step)
    report = {
        "machine": info,
        "device": args.device,
        "seconds": round(time.perf_counter() - start, 1),
        "passed": all(r["passed"] for r in smoke.results),
        "steps": smoke.results,
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    failed = [r["step"] for r in smoke.results if not r["passed"]]
    print(
        f"{len(smoke.results) - len(failed)}/{len(smoke.results)} steps passed in {report['seconds']} s; "
        f"report: {args.out / 'report.json'}" + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
