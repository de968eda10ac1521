"""Square (AutoAttack's query phase) with the eager model against the frozen compiled graph.

    python benchmarks/bench_query_attacks.py --arch arnas --init-channels 16 --layers 20 --n 64 \\
        --queries 200 --threads 1 --out benchmarks/results/query_attacks_cpu_arnas_c16l20.json

Times the reference Square attack (pyautoattack, the AutoAttack settings, ``--queries`` queries) on
``--n`` images three times in one process: through the model itself as AutoAttack ran it before (eager,
BatchNorm not folded), the same with BatchNorm folded, and through
:class:`arnas_zoo.attacks.inference.CompiledInference`, whose compilation is timed apart (one graph with a
dynamic batch dimension, compiled by a warm-up call). Random weights and uniform random images; the labels
are the model's own predictions, so every image starts correctly classified and is attacked (this times
the attack, it measures no robustness). All runs use the same seed; their adversarial accuracies and
query counts are reported so that a change in what the attack found would show.
Then, on the first ``--apgd-n`` images, AutoAttack's APGD-CE (the reference code, 100 iterations, one
restart) on the model as AutoAttack ran it before (BatchNorm not folded) and with BatchNorm folded, as
``arnas-zoo eval`` now runs AutoAttack: its gradient steps cannot use the compiled graph, but folding
makes each of them cheaper. With ``--folder`` a trained checkpoint folder is timed instead of a random network.
Last, the forward pass alone at each of ``--sizes`` batch sizes (the fastest of 3 calls each, eager folded
against the graph), and how many graphs were compiled in all: one, if no batch size recompiled it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
from _report import machine, write

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arnas_zoo.attacks import attack_mode  # noqa: E402
from arnas_zoo.attacks.batchnorm import folded_batchnorm  # noqa: E402
from arnas_zoo.attacks.counting import CountingModel, PassCounter  # noqa: E402
from arnas_zoo.attacks.inference import MIN_BATCH, CompiledInference  # noqa: E402
from arnas_zoo.attacks.reference import square  # noqa: E402
from arnas_zoo.registry import create_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="arnas")
    parser.add_argument("--init-channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--folder", default=None, help="a trained checkpoint folder instead of random weights")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--apgd-n", type=int, default=16, help="images for the APGD-CE rows (0: skip them)")
    parser.add_argument("--sizes", default="128,64,37,32,16", help="batch sizes for the forward-pass rows")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.folder:
        from arnas_zoo.checkpoint import load_folder

        model = load_folder(args.folder)
        described = f"checkpoint {args.folder}"
    else:
        sizes = {"init_channels": args.init_channels}
        if not args.arch.startswith("resnet"):
            sizes["layers"] = args.layers
        model = create_model(args.arch, **sizes)
        described = f"{args.arch} {sizes}, random weights"
    model = model.eval().to(memory_format=torch.channels_last)
    cfg = model.config
    x = torch.rand(args.n, cfg.in_channels, cfg.input_size, cfg.input_size)
    with torch.no_grad():
        y = model(x).argmax(1)
    rows = {}

    def timed(name: str, queried: torch.nn.Module) -> None:
        counter = PassCounter()
        start = time.perf_counter()
        x_adv = square(CountingModel(queried, counter), x, y, eps=8 / 255, n_queries=args.queries, seed=0)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            adversarial_accuracy = float((model(x_adv).argmax(1) == y).float().mean())
        rows[name] = {
            "seconds": round(seconds, 2),
            "forward_passes_per_image": counter.forward / args.n,
            "images_per_second": round(counter.forward / seconds, 1),
            "adversarial_accuracy": adversarial_accuracy,
        }
        print(
            f"{name:>13}: {seconds:7.1f} s, {counter.forward / args.n:.0f} forwards/image, "
            f"{counter.forward / seconds:.0f} images/s, adversarial accuracy {adversarial_accuracy:.3f}"
        )

    with attack_mode(model):
        timed("eager", model)  # as AutoAttack's Square ran before: the model itself, BatchNorm not folded
    with attack_mode(model), folded_batchnorm(model):
        fast = CompiledInference(model)
        start = time.perf_counter()
        with torch.no_grad():  # the one graph (dynamic batch), compiled before the timed run
            fast(x)
            fast(x[:MIN_BATCH])
        compile_s = time.perf_counter() - start
        timed("eager folded", model)
        timed("compiled", fast)
    if args.apgd_n:
        from arnas_zoo.attacks.reference import autoattack

        xs, ys = x[: args.apgd_n], y[: args.apgd_n]
        for name, folded in (("apgd-ce eager", False), ("apgd-ce folded", True)):
            counter = PassCounter()
            with attack_mode(model), folded_batchnorm(model) if folded else contextlib.nullcontext():
                start = time.perf_counter()
                x_adv = autoattack(
                    CountingModel(model, counter), xs, ys, eps=8 / 255, version="custom", attacks=["apgd-ce"], seed=0
                )
                seconds = time.perf_counter() - start
            with torch.no_grad():
                adversarial_accuracy = float((model(x_adv).argmax(1) == ys).float().mean())
            rows[name] = {
                "seconds": round(seconds, 2),
                "backward_passes_per_image": counter.backward / args.apgd_n,
                "adversarial_accuracy": adversarial_accuracy,
            }
            print(
                f"{name:>13}: {seconds:7.1f} s, {counter.backward / args.apgd_n:.0f} backward passes/image, "
                f"adversarial accuracy {adversarial_accuracy:.3f}"
            )
    sizes = [int(v) for v in args.sizes.split(",") if v]
    by_size = {}
    big = torch.rand(max(sizes), cfg.in_channels, cfg.input_size, cfg.input_size)
    with attack_mode(model), folded_batchnorm(model), torch.no_grad():
        for size in sizes:
            xb = big[:size].contiguous(memory_format=torch.channels_last)
            seconds = {}
            for name, queried in (("eager folded", model), ("compiled", fast)):
                queried(xb)
                times = []
                for _ in range(3):
                    start = time.perf_counter()
                    queried(xb)
                    times.append(time.perf_counter() - start)
                seconds[name] = min(times)
            difference = float((fast(xb) - model(xb)).abs().max())
            by_size[size] = {**{k: round(v, 4) for k, v in seconds.items()}, "max_abs_logit_difference": difference}
            by_size[size]["speedup"] = round(seconds["eager folded"] / seconds["compiled"], 2)
            print(f"forward, {size:4d} images: {by_size[size]}")
    graphs = int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    print(f"graphs compiled in this process: {graphs}")
    speedup = rows["eager"]["seconds"] / rows["compiled"]["seconds"]
    with_compile = rows["eager"]["seconds"] / (rows["compiled"]["seconds"] + compile_s)
    print(f"compiling took {compile_s:.1f} s; speedup {speedup:.2f}x ({with_compile:.2f}x counting the compilation)")
    result = {
        "command": " ".join(sys.argv),
        "model": described,
        "n": args.n,
        "queries": args.queries,
        **machine(),
        "compile_seconds": round(compile_s, 1),
        "rows": rows,
        "forward_by_batch_size": by_size,
        "graphs_compiled": graphs,
        "speedup": round(speedup, 2),
        "speedup_with_compile": round(with_compile, 2),
        "apgd_n": args.apgd_n,
        "apgd_speedup_folded": (
            round(rows["apgd-ce eager"]["seconds"] / rows["apgd-ce folded"]["seconds"], 2) if args.apgd_n else None
        ),
    }
    write(result, args.out, echo=False)


if __name__ == "__main__":
    main()
