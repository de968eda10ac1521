"""Helping a job set another process runs (``arnas-zoo eval --join``): a second core's share of its jobs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from arnas_zoo.jobs import Job, JobSetResult, JobsFailed, _jobs_dir, _resolve, _run_claimed, _target, read_result
from arnas_zoo.progress import Progress
from arnas_zoo.runs.lock import job_claim


def help_jobs(
    jobs: Sequence[Job], run_dir: str | Path, *, retries: int = 2, progress: bool | Progress = True
) -> JobSetResult:
    """Run, in this process, the jobs of ``jobs`` that are neither finished nor held by another process,
    and return: a second core's help to a :func:`run_jobs` (local backend) of the same jobs in
    ``run_dir``. That run takes the helper's results and merges; the helper merges nothing and does
    not take the run folder's lock. ``results`` holds only the jobs this call ran."""
    run_dir = Path(run_dir)
    out = JobSetResult()
    todo = [job for job in {j.key: j for j in jobs}.values() if read_result(run_dir, job) is None]
    with Progress.of(progress).task("jobs (helping)", total=len(todo), unit="jobs") as task:
        for job in todo:
            with job_claim(_jobs_dir(run_dir), job.key, wait=False) as mine:
                if mine:
                    _resolve(_target(job.kind))
                    _run_claimed(job, run_dir, retries, out, take_finished=False)  # finished by the run meanwhile
            task.update(1, job=job.name())
    if out.failed:
        raise JobsFailed(out.failed)
    return out
