"""``arnas-zoo-runtime predict|serve``: the deployment commands without torch (argparse: no extra dependency)."""

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
    return parser


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the .onnx file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch", type=int, default=4, help="images per ONNX Runtime run")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="longest wait for more requests to batch")
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
        from arnas_zoo_runtime.serve import Limits, serve

        limits = Limits(int(args.max_body_mb * 1024 * 1024), args.max_images, args.max_batch, args.max_wait_ms)
        serve(args.model, host=args.host, port=args.port, providers=args.providers, threads=args.threads, limits=limits)
        return 0
    except RuntimeFault as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
