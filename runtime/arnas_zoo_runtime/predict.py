"""Batch prediction over files, folders and globs: rows streamed in order, a bad file is a row, not a stop."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from arnas_zoo_runtime.images import expand, read_file
from arnas_zoo_runtime.session import Predictor, RuntimeFault


def predict_paths(
    model: Predictor, specs: Sequence[str | os.PathLike[str]], top_k: int = 3, batch: int = 64
) -> Iterator[dict[str, Any]]:
    """One row per image, in the order of ``specs`` (folders sorted, globs expanded): ``{"image", "top"}``,
    or ``{"image", "error"}`` for a file that cannot be read or does not fit the model. Images are run
    ``batch`` at a time; the rows of a batch come out when it has run."""
    channels, size, _ = model.image_shape
    pending: list[tuple[str, np.ndarray]] = []

    def flush() -> Iterator[dict[str, Any]]:
        if not pending:
            return
        x = np.concatenate([a for _, a in pending])
        tops = model.top_k(model.run_host(np.ascontiguousarray(x, dtype=model.input_dtype)), top_k)  # checked per file
        for (name, _), top in zip(pending, tops):
            yield {"image": name, "top": top}
        pending.clear()

    for path in expand(specs):
        try:
            x, names = read_file(path, channels=channels, size=size)
            model.check(x.shape, float(x.min()) if x.size else 0.0, float(x.max()) if x.size else 0.0, True)
        except RuntimeFault as exc:
            yield from flush()  # keep the rows in file order
            yield {"image": str(path), "error": str(exc)}
            continue
        for i, name in enumerate(names):
            pending.append((name, x[i : i + 1]))
            if len(pending) >= batch:
                yield from flush()
    yield from flush()


CSV_FIELDS = ("image", "class", "name", "probability", "error")


def write_rows(rows: Iterable[dict[str, Any]], fmt: str, out: TextIO) -> tuple[int, int]:
    """Stream ``rows`` to ``out`` as ``table`` (tab-separated), ``csv`` (the top class per row) or ``json``
    (JSON lines: one object per row); returns (images predicted, files that failed)."""
    done = failed = 0
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    for row in rows:
        failed += "error" in row
        done += "top" in row
        if fmt == "json":
            out.write(json.dumps(row) + "\n")
        elif writer is not None:
            best = row["top"][0] if "top" in row else {}
            writer.writerow({"image": row["image"], "class": best.get("class", ""), "name": best.get("name", ""),
                             "probability": best.get("probability", ""), "error": row.get("error", "")})  # fmt: skip
        elif "top" in row:
            out.write(row["image"] + "\t" + ", ".join(f"{t['name']} {t['probability']:.3f}" for t in row["top"]) + "\n")
        else:
            out.write(f"{row['image']}\terror: {row['error']}\n")
        out.flush()
    return done, failed


def progress_rows(
    rows: Iterable[dict[str, Any]], enabled: bool, stream: TextIO = sys.stderr
) -> Iterator[dict[str, Any]]:
    """``rows`` unchanged, with a one-line count on ``stream`` every 100 rows and at the end."""
    n = 0
    for row in rows:
        n += 1
        if enabled and n % 100 == 0:
            stream.write(f"\r{n} images ...")
            stream.flush()
        yield row
    if enabled and n >= 100:
        stream.write(f"\r{n} images, done\n")


def run(model_path: str | os.PathLike[str], specs: Sequence[str], *, top_k: int = 3, fmt: str = "table",
        out: str | None = None, providers: str = "auto", progress: bool = True) -> int:  # fmt: skip
    """The ``predict`` command: exit status 0 when every file was read, 1 when some were reported as errors."""
    model = Predictor(Path(model_path), providers=providers)
    sys.stderr.write(f"# ONNX Runtime provider: {model.provider}\n")
    handle: TextIO = open(out, "w", newline="") if out else sys.stdout  # noqa: SIM115
    try:
        done, failed = write_rows(
            progress_rows(predict_paths(model, specs, top_k), progress and out is not None), fmt, handle
        )
    finally:
        if out:
            handle.close()
    if failed:
        sys.stderr.write(f"{failed} file(s) could not be predicted (see their rows); {done} image(s) predicted\n")
    return 1 if failed else 0
