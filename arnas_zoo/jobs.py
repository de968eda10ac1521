"""Many independent jobs, run in-process or on a Ray cluster, with nothing lost when anything dies.

A :class:`Job` is a pure description: a registered ``kind`` and JSON arguments. Its key is the hash of
that description, so the same job always has the same key and its result file
``<run_dir>/jobs/<key>.json`` tells whether it is done. Results are written atomically (by the worker,
and again by the driver if the worker's file is missing), so:

- a killed driver loses nothing: the next :func:`run_jobs` on the same folder skips every finished job;
- a killed worker loses its job only: Ray reschedules it (``retries`` times), the in-process backend
  has nothing else to kill;
- a job that raises is retried ``retries`` times, then recorded as failed
  (``<key>.failed.json`` with the error) and reported in :class:`JobsFailed` after the others finished;
  it is never dropped silently.

Backends: ``local`` (the default; no dependency) runs jobs one after another in this process;
``ray`` submits them to a Ray cluster (``address`` as ``ray.init`` takes it: ``None`` starts a local
one, ``"auto"`` joins a running cluster, ``"HOST:PORT"``), each with its CPU/GPU request, at most
``max_parallel`` in flight. Both produce byte-identical result files for deterministic jobs; timings,
host and attempts go to ``<key>.meta.json``. Ray needs the optional extra: ``pip install 'arnas-zoo[ray]'``.

Kinds are registered by dotted path (``register_kind("evaluate-shard", "arnas_zoo.evaluate.shards:run_shard")``)
so that a Ray worker imports the function itself; a kind's function takes ``(args, run_dir)`` and
returns a JSON-able dict.

Nothing on disk is trusted. A result file carries an HMAC-SHA256 over the job, the sha256 of every
input file the job read (a kind names them: ``register_kind(..., inputs="module:function")``, e.g. the
model folder's config.json and weights) and the result, keyed by a secret of this user
(``$ARNAS_ZOO_JOB_KEY`` or ``~/.cache/arnas-zoo/job-key``, made on first use, mode 0600). On read, a
file that is unreadable, edited, forged without the key, or whose inputs have changed since (a model
folder replaced under the same path) is recomputed with a one-line notice; it is never trusted and
never a crash. One process at a time runs a job set in a run folder
(:class:`arnas_zoo.runs.lock.RunFolderLock`); other processes may help it (:mod:`arnas_zoo.jobs_help`,
``arnas-zoo eval --join``): every job is claimed with its own lock first
(:func:`arnas_zoo.runs.lock.job_claim`), so none runs twice, and the run waits for the jobs its helpers
hold before it merges.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import importlib
import json
import logging
import os
import platform
import secrets
import socket
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arnas_zoo.atomic import atomic_write_json
from arnas_zoo.errors import ArnasZooError, ConfigError, UntrustedFileError
from arnas_zoo.progress import Progress
from arnas_zoo.runs.lock import RunFolderLock, job_claim
from arnas_zoo.safe_json import read_json

log = logging.getLogger(__name__)

BACKENDS = ("local", "ray")
JOBS_DIR = "jobs"
PLAN = "plan.json"
_KINDS: dict[str, str] = {
    "evaluate-shard": "arnas_zoo.evaluate.shards:run_shard",
    "train": "arnas_zoo.training.entry:run_training_job",
    "leaderboard-eval": "arnas_zoo.leaderboard:run_eval_job",
}
#: kind -> "module:function" of ``(args, run_dir) -> [paths]``: the files whose content a result depends on
_INPUTS: dict[str, str] = {
    "evaluate-shard": "arnas_zoo.evaluate.shards:shard_inputs",
    "leaderboard-eval": "arnas_zoo.leaderboard:eval_inputs",
}
RESULT_SCHEMA = "arnas-zoo/job-result@2"
KEY_ENV = "ARNAS_ZOO_JOB_KEY"


class JobsFailed(ArnasZooError, RuntimeError):
    """Some jobs failed after their retries; the others finished and their results are on disk."""

    def __init__(self, failed: dict[str, str]):
        self.failed = failed
        first = next(iter(failed.items()))
        super().__init__(
            f"{len(failed)} job(s) failed after retries (first: {first[0]}: {first[1][:200]}); "
            "their errors are in jobs/<key>.failed.json; rerun to retry them, finished jobs are kept"
        )


def register_kind(kind: str, target: str, *, replace: bool = False, inputs: str | None = None) -> None:
    """Make ``kind`` run ``target`` (``"package.module:function"``, importable on every worker).

    ``inputs`` (``"module:function"``, ``(args, run_dir) -> list of paths``) names the files whose content
    the result depends on; a result is recomputed when any of them changes.
    """
    for name in (target, inputs):
        if name is not None and ":" not in name:
            raise ConfigError(f"job kind {kind!r}: expected 'module:function', got {name!r}")
    if kind in _KINDS and not replace and _KINDS[kind] != target:
        raise ConfigError(f"job kind {kind!r} is already registered as {_KINDS[kind]!r}")
    _KINDS[kind] = target
    if inputs is not None:
        _INPUTS[kind] = inputs


def kinds() -> dict[str, str]:
    return dict(_KINDS)


def _target(kind: str) -> str:
    try:
        return _KINDS[kind]
    except KeyError:
        raise ConfigError(f"unknown job kind {kind!r}; registered: {sorted(_KINDS)}") from None


def _resolve(target: str) -> Callable[[dict[str, Any], Path], dict[str, Any]]:
    module, _, name = target.partition(":")
    function: Callable[[dict[str, Any], Path], dict[str, Any]] = getattr(importlib.import_module(module), name)
    return function


@dataclass(frozen=True)
class Job:
    """One unit of work: what to run (``kind``, JSON ``args``) and what it needs (``cpus``, ``gpus``)."""

    kind: str
    args: dict[str, Any]
    cpus: float = 1.0
    gpus: float = 0.0
    label: str = ""

    def __post_init__(self) -> None:
        # the arguments as they read back from a result file: tuples become lists, keys strings. Without
        # this a config holding a tuple never matched its own saved job, and resume redid finished work.
        try:
            normal = json.loads(json.dumps(self.args, sort_keys=True))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"job {self.kind!r}: arguments must be JSON-able ({exc})") from None
        object.__setattr__(self, "args", normal)

    @property
    def description(self) -> dict[str, Any]:
        return {"kind": self.kind, "args": self.args}

    @property
    def key(self) -> str:
        """Stable across runs and machines: sha256 of the canonical JSON of kind and arguments."""
        text = json.dumps(self.description, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def name(self) -> str:
        return self.label or f"{self.kind} {self.key[:8]}"


# ---- files of a run folder ------------------------------------------------------------------------
def _jobs_dir(run_dir: Path) -> Path:
    return Path(run_dir) / JOBS_DIR


def _write_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data, sort_keys=True)


def result_path(run_dir: Path, job: Job) -> Path:
    return _jobs_dir(run_dir) / f"{job.key}.json"


def signing_key() -> bytes:
    """This user's secret for result digests: ``$ARNAS_ZOO_JOB_KEY`` (hex), else ``~/.cache/arnas-zoo/job-key``
    (32 random bytes, created on first use, readable by this user only)."""
    env = os.environ.get(KEY_ENV, "").strip()
    if env:
        try:
            return bytes.fromhex(env)
        except ValueError:
            raise ConfigError(f"${KEY_ENV}: expected hex digits") from None
    path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "arnas-zoo" / "job-key"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".job-key.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # atomic and exclusive: of two first users, one key wins and both read it
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    try:
        return bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise ConfigError(f"{path}: not a job key (hex digits); delete it to make a new one") from None


def _sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256_of(str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """sha256 of a file, computed once per (path, size, mtime, inode): a rewritten file is hashed again."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_digests(job: Job, run_dir: Path) -> dict[str, str]:
    """``{path: sha256}`` of every input file of ``job`` now (``"missing"`` for an absent one)."""
    target = _INPUTS.get(job.kind)
    if target is None:
        return {}
    paths: Any = _resolve(target)(job.args, run_dir)
    return {str(p): (_sha256(Path(p)) if Path(p).is_file() else "missing") for p in paths}


def _digest(key: bytes, description: Any, inputs: Any, result: Any) -> str:
    body = json.dumps({"job": description, "inputs": inputs, "result": result}, sort_keys=True)
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def signed_with(key: bytes, record: Any) -> bool:
    """Whether a result record's digest was made with ``key`` (its inputs and job are checked when it is read)."""
    digest = record.get("digest") if isinstance(record, dict) else None
    made = _digest(key, record.get("job"), record.get("inputs"), record.get("result")) if digest else ""
    return isinstance(digest, str) and hmac.compare_digest(digest, made)


def _record(job: Job, inputs: dict[str, str], result: Any, key: bytes) -> dict[str, Any]:
    return {
        "schema": RESULT_SCHEMA,
        "job": job.description,
        "inputs": inputs,
        "result": result,
        "digest": _digest(key, job.description, inputs, result),
    }


def read_result(run_dir: Path, job: Job, *, key: bytes | None = None) -> dict[str, Any] | None:
    """``job``'s verified result in ``run_dir``, or None (not run, or not to be trusted: recompute).

    Every way a result file can be wrong -- unreadable, not JSON, another job's, edited or written without
    this user's key, or computed from inputs that have changed since -- gives None and one logged notice.
    """
    path = result_path(run_dir, job)
    if not path.is_file():
        return None
    try:
        record = read_json(path, what="job result")  # read once: the record checked is the record returned
    except (UntrustedFileError, OSError) as exc:
        problem: str | None = f"unreadable ({str(exc).split(': ', 1)[-1][:120]})"
    else:
        problem = _problem(record, job, Path(run_dir), key or signing_key())
    if problem is None:
        result: dict[str, Any] = record["result"]
        return result
    log.warning("%s: %s; recomputing this job", path, problem)
    return None


def _problem(record: Any, job: Job, run_dir: Path, key: bytes) -> str | None:
    """Why ``record`` (a parsed result file) cannot be trusted for ``job``, or None."""
    if not isinstance(record, dict) or not {"job", "inputs", "result", "digest"} <= set(record):
        return "not a job result of this version (no digest)"
    if record["job"] != job.description:
        return "it belongs to another job (key collision or edited description)"
    inputs = record["inputs"]
    if not isinstance(inputs, dict) or not isinstance(record["digest"], str):
        return "malformed"
    if not hmac.compare_digest(record["digest"], _digest(key, job.description, inputs, record["result"])):
        return "its digest does not match its content (edited, corrupted, or written without this user's key)"
    now = input_digests(job, run_dir)
    changed = sorted(p for p in set(now) | set(inputs) if now.get(p) != inputs.get(p))
    if changed:
        return f"its input changed since it ran ({changed[0]})"
    if not isinstance(record["result"], dict):
        return "malformed result"
    return None


def execute(
    job_desc: dict[str, Any], run_dir: str, attempt: int, target: str, key_hex: str | None = None
) -> dict[str, Any]:
    """Run one job here and write its signed result file (what a worker runs; importable by Ray).

    ``target`` is the kind's function as the driver registered it (a worker has its own registry);
    ``key_hex`` the driver's signing key (a worker on another machine has no key file of its own)."""
    job = Job(job_desc["kind"], job_desc["args"])
    jobs = _jobs_dir(Path(run_dir))
    jobs.mkdir(parents=True, exist_ok=True)
    marker = jobs / f"{job.key}.running"
    _write_json(marker, {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "attempt": attempt})
    start = time.perf_counter()
    key = bytes.fromhex(key_hex) if key_hex else signing_key()
    try:
        inputs = input_digests(job, Path(run_dir))  # the content the result is computed from
        result = _resolve(target)(job.args, Path(run_dir))
        _write_json(jobs / f"{job.key}.json", _record(job, inputs, result, key))
        meta = {
            "seconds": round(time.perf_counter() - start, 3),
            "host": platform.node(),
            "pid": os.getpid(),
            "attempt": attempt,
            "finished": time.time(),
        }
        _write_json(jobs / f"{job.key}.meta.json", meta)
        (jobs / f"{job.key}.failed.json").unlink(missing_ok=True)
        return result
    finally:
        marker.unlink(missing_ok=True)


def _record_plan(run_dir: Path, jobs: Iterable[Job]) -> None:
    """Add the job set to ``jobs/plan.json`` (what ``status`` lists as pending before a job starts)."""
    plan = _read_plan(run_dir)
    plan.update({job.key: {**job.description, "label": job.name()} for job in jobs})
    _write_json(_jobs_dir(run_dir) / PLAN, plan)


def _read_plan(run_dir: Path) -> dict[str, Any]:
    path = _jobs_dir(Path(run_dir)) / PLAN
    try:
        data = read_json(path, what="job plan") if path.is_file() else {}
    except (UntrustedFileError, OSError) as exc:
        log.warning("%s; starting a new plan", exc)
        return {}
    return dict(data) if isinstance(data, dict) else {}


def plan(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every job ever submitted to ``run_dir``: key -> kind, args, label (an unreadable plan: empty)."""
    return _read_plan(Path(run_dir))


def _record_failure(run_dir: Path, job: Job, error: str, attempts: int) -> None:
    _write_json(
        _jobs_dir(run_dir) / f"{job.key}.failed.json",
        {"job": job.description, "error": error, "attempts": attempts, "time": time.time()},
    )


# ---- running a job set ------------------------------------------------------------------------------
@dataclass
class JobSetResult:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> result
    skipped: int = 0  # finished before this call
    ran: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def run_jobs(
    jobs: Sequence[Job],
    run_dir: str | Path,
    *,
    backend: str = "local",
    address: str | None = None,
    max_parallel: int | None = None,
    retries: int = 2,
    progress: bool | Progress = True,
    raise_on_failure: bool = True,
) -> JobSetResult:
    """Run every job of ``jobs`` not yet finished in ``run_dir``; returns all results by key."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
    if retries < 0:
        raise ConfigError(f"retries: expected >= 0, got {retries}")
    run_dir = Path(run_dir)
    _jobs_dir(run_dir).mkdir(parents=True, exist_ok=True)
    with RunFolderLock(run_dir, "job run"):
        out = _run_set(jobs, run_dir, backend, address, max_parallel, retries, progress)
    if out.failed and raise_on_failure:
        raise JobsFailed(out.failed)
    return out


def _run_set(
    jobs: Sequence[Job],
    run_dir: Path,
    backend: str,
    address: str | None,
    max_parallel: int | None,
    retries: int,
    progress: bool | Progress,
) -> JobSetResult:
    unique = {job.key: job for job in jobs}
    _record_plan(run_dir, unique.values())
    out = JobSetResult()
    todo = []
    key = signing_key()
    for job_key, job in unique.items():
        _resolve(_target(job.kind))  # unknown kinds and unimportable functions fail before anything runs
        done = read_result(run_dir, job, key=key)
        if done is None:
            todo.append(job)
        else:
            out.results[job_key] = done
            out.skipped += 1
    tracker = Progress.of(progress)
    with tracker.task(f"jobs ({backend})", total=len(todo), unit="jobs") as task:
        if backend == "local":
            _run_local(todo, run_dir, retries, out, task)
        else:
            _run_ray(todo, run_dir, retries, out, task, address, max_parallel)
    return out


def _run_local(todo: Iterable[Job], run_dir: Path, retries: int, out: JobSetResult, task: Any) -> None:
    """Each job in turn; a job a helper process holds (``help_jobs``) is waited for once the rest are done."""
    later = []
    for job in todo:
        with job_claim(_jobs_dir(run_dir), job.key, wait=False) as mine:
            if mine:
                _run_claimed(job, run_dir, retries, out)
                task.update(1, job=job.name())
            else:
                later.append(job)
    for job in later:  # the helper's result when it finished it; run here when it died or failed
        with job_claim(_jobs_dir(run_dir), job.key, wait=True):
            _run_claimed(job, run_dir, retries, out)
            task.update(1, job=job.name())


def _run_claimed(job: Job, run_dir: Path, retries: int, out: JobSetResult, take_finished: bool = True) -> None:
    """Run a job this process has claimed, unless its result appeared meanwhile (another process's: taken
    into ``out`` as skipped when ``take_finished``)."""
    done = read_result(run_dir, job)
    if done is not None:
        if take_finished:
            out.results[job.key] = done
            out.skipped += 1
        return
    for attempt in range(1, retries + 2):
        try:
            out.results[job.key] = execute(job.description, str(run_dir), attempt, _target(job.kind))
            out.ran += 1
            return
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 -- any job error is retried, then reported
            error = f"{type(exc).__name__}: {exc}"
            if attempt == retries + 1:
                out.failed[job.key] = error
                _record_failure(run_dir, job, error + "\n" + traceback.format_exc(), attempt)


def _run_ray(
    todo: list[Job],
    run_dir: Path,
    retries: int,
    out: JobSetResult,
    task: Any,
    address: str | None,
    max_parallel: int | None,
) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("backend 'ray' needs Ray: pip install 'arnas-zoo[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    # worker deaths are retried by Ray (max_retries); exceptions raised by the job too (retry_exceptions)
    remote = ray.remote(max_retries=retries, retry_exceptions=True)(execute)
    key = signing_key()
    pending: dict[Any, Job] = {}
    queue = list(todo)
    limit = max_parallel or len(queue) or 1
    while queue or pending:
        while queue and len(pending) < limit:
            job = queue.pop(0)
            ref = remote.options(num_cpus=job.cpus, num_gpus=job.gpus).remote(
                job.description, str(run_dir), 1, _target(job.kind), key.hex()
            )
            pending[ref] = job
        ready, _ = ray.wait(list(pending), num_returns=1)
        ref = ready[0]
        job = pending.pop(ref)
        try:
            result = ray.get(ref)
            if not result_path(run_dir, job).is_file():  # a worker on another file system: keep it here
                inputs = input_digests(job, run_dir)
                _write_json(result_path(run_dir, job), _record(job, inputs, result, key))
            out.results[job.key] = result
            out.ran += 1
        except Exception as exc:  # noqa: BLE001 -- after Ray's retries
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            out.failed[job.key] = error
            _record_failure(run_dir, job, str(exc), retries + 1)
        task.update(1, job=job.name())
