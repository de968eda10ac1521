"""``arnas-zoo-runtime predict|serve|triton|triton-check``: the deployment commands without torch (argparse:
no extra dependency)."""

from __future__ import annotations

import argparse
import sys

from arnas_zoo_runtime.session import RuntimeFault


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arnas-zoo-runtime", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="classify images, folders and globs with an .onnx file")
    predict.add_argument("model", help="the .onnx file (arnas-zoo export onnx writes it)")
    predict.add_argument("images", nargs="+", help="PNG/JPEG files, npz batches, folders or quoted globs")
    predict.add_argument("--top-k", type=int, default=3)
    out = predict.add_mutually_exclusive_group()
    out.add_argument("--csv", metavar="FILE", help="write CSV (image, class, name, probability, error); - for stdout")
    out.add_argument("--json", metavar="FILE", help="write JSON lines, one object per image; - for stdout")
    predict.add_argument("--providers", default="auto", help="auto, cpu or cuda")
    serve = commands.add_parser("serve", help="serve an .onnx file over HTTP (needs the serve extra)")
    add_serve_options(serve)
    triton = commands.add_parser("triton", help="write an .onnx file as a Triton Inference Server model repository")
    triton.add_argument("model", help="the .onnx file")
    triton.add_argument("repository", help="the model repository folder (created; other models in it are kept)")
    triton.add_argument("--name", help="the model's name in the repository [the file's stem]")
    triton.add_argument("--max-batch", type=int, default=32, help="max_batch_size: the largest batch Triton forms")
    triton.add_argument("--preferred", default="4,8", help="preferred batch sizes of the dynamic batcher ('' for none)")
    triton.add_argument("--max-queue-delay-us", type=int, default=2000, help="longest wait to fill a batch")
    triton.add_argument("--instances", type=int, default=1, help="model instances (sessions) per device")
    triton.add_argument("--gpu", action="store_true", help="instances on the GPUs (KIND_GPU) instead of the CPU")
    check = commands.add_parser("triton-check", help="check a Triton model repository as the server loads it")
    check.add_argument("repository")
    return parser


def _triton(args: argparse.Namespace) -> int:
    import json

    from arnas_zoo_runtime.triton import BatchingPolicy, check_repository, export_repository

    if args.command == "triton-check":
        for name, config in check_repository(args.repository).items():
            print(f"{name}: ok ({json.dumps(config, separators=(',', ':'))})")
        return 0
    try:
        preferred = tuple(int(p) for p in args.preferred.split(",") if p.strip())
    except ValueError:
        print(f"error: --preferred: expected comma-separated integers, got {args.preferred!r}", file=sys.stderr)
        return 2
    policy = BatchingPolicy(args.max_batch, preferred, args.max_queue_delay_us, args.instances, args.gpu)
    folder = export_repository(args.model, args.repository, name=args.name, policy=policy)
    print(f"{folder}: config.pbtxt and {len([p for p in folder.iterdir() if p.is_dir()])} version(s), checked; "
          f"run: tritonserver --model-repository {folder.parent}")  # fmt: skip
    return 0


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the .onnx file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch", type=int, default=4, help="images per ONNX Runtime run")
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=0.0,
        help="extra wait for more requests to batch (0: batch what piled up during the last run)",
    )
    parser.add_argument("--access-log", action="store_true", help="log one line per request")
    parser.add_argument("--max-body-mb", type=float, default=8.0, help="largest request body")
    parser.add_argument("--max-images", type=int, default=256, help="most images in one request")
    parser.add_argument("--providers", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime CPU threads")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "predict":
            from arnas_zoo_runtime.predict import run

            fmt, out = ("csv", args.csv) if args.csv else (("json", args.json) if args.json else ("table", None))
            return run(args.model, args.images, top_k=args.top_k, fmt=fmt, out=None if out == "-" else out,
                       providers=args.providers)  # fmt: skip
        if args.command in ("triton", "triton-check"):
            return _triton(args)
        from arnas_zoo_runtime.serve import Limits, serve

        limits = Limits(int(args.max_body_mb * 1024 * 1024), args.max_images, args.max_batch, args.max_wait_ms)
        serve(args.model, host=args.host, port=args.port, providers=args.providers, threads=args.threads,
              limits=limits, access_log=args.access_log)  # fmt: skip
        return 0
    except RuntimeFault as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
