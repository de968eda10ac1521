"""A long fuzz of the job layer's files: corrupt results, plans and running markers; count what gets through.

    python scripts/fuzz_job_files.py --n 2000 --seed 0

Runs real jobs once (a deterministic test kind) and claims the run folder as a search would, then N
times: corrupts one file of the run folder (a job result, the plan, or the run's config.json) at
random (bit flips, truncation, appended bytes, random bytes, random JSON, a changed figure with the
digest recomputed without the key, an edited job description) and reads everything back the way
``run_jobs`` and ``status`` do. Counts untyped errors (anything but None or the genuine result from
``read_result``; any exception from ``plan``/``status``) and forged values (a result other than the
genuine one). Prints one JSON line with the counts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def corrupt(data: bytes, rng: random.Random) -> bytes:
    kind = rng.randrange(7)
    if kind == 0 and data:
        out = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == 1:
        return data[: rng.randrange(len(data) + 1)]
    if kind == 2:
        return data + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    if kind == 3:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 512)))
    if kind == 4:
        return json.dumps(rng.choice([None, 1, "x", [], {}, [[[]]], {"job": 1}, "[" * 50])).encode()
    record = json.loads(data) if data else {}
    if kind == 5 and isinstance(record, dict) and isinstance(record.get("result"), dict):  # forger without the key
        record["result"]["square"] = rng.randint(0, 10_000)
        body = json.dumps({k: record.get(k) for k in ("job", "inputs", "result")}, sort_keys=True)
        record["digest"] = hashlib.sha256(body.encode()).hexdigest()
        return json.dumps(record).encode()
    if isinstance(record, dict) and isinstance(record.get("job"), dict):  # an edited description
        record["job"]["args"] = {"x": rng.randint(0, 100)}
    return json.dumps(record).encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)  # one notice per recomputed file; the counts are what matters here
    from arnas_zoo.errors import ArnasZooError
    from arnas_zoo.job_status import status
    from arnas_zoo.jobs import Job, plan, read_result, register_kind, result_path, run_jobs
    from arnas_zoo.runs.folder import claim_run_folder

    register_kind("test-square", "job_kinds:square")
    rng = random.Random(args.seed)
    counts = {"corruptions": 0, "untyped_errors": 0, "forged_values": 0, "typed_refusals": 0, "recomputed": 0}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        jobs = [Job("test-square", {"x": x}) for x in range(4)]
        run_jobs(jobs, run, progress=False)
        settings = {"preset": "fuzz", "seed": 0, "sizes": [1, 2]}
        claim_run_folder(run, settings, "search", resume=False)
        genuine = {j.key: read_result(run, j) for j in jobs}
        files = [result_path(run, j) for j in jobs] + [run / "jobs" / "plan.json", run / "config.json"]
        originals = {p: p.read_bytes() for p in files}
        for _ in range(args.n):
            target = rng.choice(files)
            target.write_bytes(corrupt(originals[target], rng))
            counts["corruptions"] += 1
            try:
                for job in jobs:
                    got = read_result(run, job)
                    if got is None:
                        counts["recomputed"] += target != run / "jobs" / "plan.json"
                    elif got != genuine[job.key]:
                        counts["forged_values"] += 1
                plan(run)
                status(run)
                if target.name == "config.json":  # a --resume: the saved settings must still be the ones given
                    claim_run_folder(run, settings, "search", resume=True)
                    if target.read_bytes() != originals[target]:
                        counts["forged_values"] += json.loads(target.read_text()) != settings
            except ArnasZooError:
                counts["typed_refusals"] += 1
            except Exception as exc:  # noqa: BLE001 -- what the fuzz is counting
                counts["untyped_errors"] += 1
                print(f"untyped: {type(exc).__name__}: {exc}", file=sys.stderr)
            target.write_bytes(originals[target])
        final = run_jobs(jobs, run, progress=False)  # the genuine files still verify and nothing is rerun
        counts["genuine_rerun_after"] = final.ran
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
